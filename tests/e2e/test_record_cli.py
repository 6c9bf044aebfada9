"""``broadcaster record`` against a real anvil: in-process and as a process that gets signals."""

from __future__ import annotations

import asyncio
import gzip
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from broadcaster.cli.record import record
from heads.recording import iter_recording
from heads.subscriber import SubscriptionOptions
from tests.anvil import REPO, start_anvil
from tests.e2e.support import stop_anvil, zero_backoff


async def test_record_stops_after_the_requested_number_of_heads(tmp_path: Path) -> None:
    out = tmp_path / "five.jsonl.gz"
    node = start_anvil()
    try:
        options = SubscriptionOptions(watchdog=None, backoff=zero_backoff)
        async with asyncio.TaskGroup() as group:
            recording = group.create_task(
                record([("a", node.ws_url)], out, 30.0, 5, options=options)
            )
            for _ in range(500):  # keep mining until the recorder has had its 5 heads
                await asyncio.to_thread(node.rpc, "evm_mine")
                done, _ = await asyncio.wait({recording}, timeout=0.02)
                if done:
                    break
        assert recording.result() == 0
    finally:
        stop_anvil(node)
    lines = list(iter_recording(out))
    assert [line.kind for line in lines].count("head") == 5
    numbers = [int(line.header["number"], 16) for line in lines if line.kind == "head"]
    assert numbers == list(range(numbers[0], numbers[0] + 5))
    # The window below the first head is backfilled by hash and recorded as block lines.
    backfilled = [int(line.header["number"], 16) for line in lines if line.kind == "block"]
    assert backfilled == list(range(numbers[0] - 1, -1, -1))
    assert (lines[0].event, lines[-1].event) == ("connected", "disconnected")


def test_a_record_process_stopped_by_sigterm_closes_its_file(tmp_path: Path) -> None:
    out = tmp_path / "term.jsonl.gz"
    node = start_anvil(block_time=0.1)
    try:
        script = textwrap.dedent(
            """
            import argparse, sys
            from broadcaster.cli.record import add_record_arguments, run_record
            parser = argparse.ArgumentParser()
            add_record_arguments(parser)
            sys.exit(run_record(parser.parse_args(sys.argv[1:])))
            """
        )
        process = subprocess.Popen(
            [sys.executable, "-c", script, "--client", f"a={node.ws_url}", "--out", str(out)],
            cwd=REPO,
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        with process.stderr:
            for line in process.stderr:  # wait for a few heads to be on record
                if b"client a connected" in line:
                    break
            while sum(1 for x in iter_recording(out) if x.kind == "head") < 3:
                assert process.poll() is None
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
    finally:
        stop_anvil(node)
    with gzip.open(out) as f:  # a complete gzip stream: the trailer was written
        assert f.read().endswith(b'"event":"disconnected"}\n')

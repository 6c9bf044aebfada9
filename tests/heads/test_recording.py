"""Recorder and reader: the DESIGN.md §4 JSON-lines format, plain and gzip, and killed writers."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from heads.recording import RecordedLine, Recorder, RecordingError, iter_recording
from tests.anvil import REPO


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def header(n: int) -> dict[str, Any]:
    # Key order and odd-but-valid content kept as they came: lines are "exactly as received".
    return {
        "parentHash": "0x" + f"{n - 1:064x}",
        "hash": "0x" + f"{n:064x}",
        "number": hex(n),
        "extraData": "0xd883010d0e846765746888676f312e32312e36856c696e7578",
        "nested": {"unicode": "ü", "list": [1, None, True]},
    }


@pytest.mark.parametrize("name", ["session.jsonl", "session.jsonl.gz"])
def test_what_is_recorded_reads_back_line_for_line(tmp_path: Path, name: str) -> None:
    clock = FakeClock()
    path = tmp_path / name
    with Recorder(path, clock=clock) as recorder:
        recorder.event("a", "connected")
        clock.now += 0.0131
        recorder.head("a", header(1))
        clock.now += 0.0009
        recorder.block("a", header(0))
        clock.now += 3.2
        recorder.event("b", "disconnected")
    assert list(iter_recording(path)) == [
        RecordedLine(0.0, "a", "event", None, "connected"),
        RecordedLine(0.0131, "a", "head", header(1), None),
        RecordedLine(0.014, "a", "block", header(0), None),
        RecordedLine(3.214, "b", "event", None, "disconnected"),
    ]
    assert (recorder.heads, recorder.blocks, recorder.events) == (1, 1, 2)


def test_lines_have_exactly_the_design_format(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "format.jsonl"
    with Recorder(path, clock=clock) as recorder:
        clock.now += 0.5
        recorder.head("a", header(7))
        recorder.event("a", "disconnected")
    lines = path.read_bytes().splitlines()
    assert orjson.loads(lines[0]) == {"t": 0.5, "client": "a", "head": header(7)}
    assert list(orjson.loads(lines[0])["head"]) == list(header(7))  # key order kept
    assert orjson.loads(lines[1]) == {"t": 0.5, "client": "a", "event": "disconnected"}
    assert path.read_bytes().endswith(b"\n")


def test_a_gz_recording_is_a_real_gzip_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.gz"
    with Recorder(path) as recorder:
        recorder.head("a", header(1))
    with gzip.open(path, "rb") as f:
        assert orjson.loads(f.readline())["head"] == header(1)


def test_lines_reach_the_file_once_the_flush_interval_has_passed(tmp_path: Path) -> None:
    clock = FakeClock()
    for name in ("p.jsonl", "p.jsonl.gz"):
        path = tmp_path / name
        recorder = Recorder(path, clock=clock, flush_interval=1.0)
        recorder.head("a", header(1))
        recorder.head("a", header(2))  # within the interval: may stay buffered
        clock.now += 1.0
        recorder.head("a", header(3))  # interval passed: everything so far is on disk
        assert [line.header["number"] for line in iter_recording(path) if line.header] == [
            "0x1",
            "0x2",
            "0x3",
        ]
        recorder.close()


@pytest.mark.parametrize("name", ["killed.jsonl", "killed.jsonl.gz"])
def test_a_recorder_killed_mid_stream_leaves_a_readable_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    script = textwrap.dedent(
        f"""
        import os, signal
        from heads.recording import Recorder
        recorder = Recorder({str(path)!r}, flush_interval=0.0)
        for n in range(1, 501):
            recorder.head("a", {{"number": hex(n), "hash": "0x%064x" % n,
                                 "parentHash": "0x%064x" % (n - 1)}})
        recorder._out.write(b'{{"t": 9.9, "client": "a", "head": {{"numb')  # torn line
        recorder._out.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, check=False)
    assert result.returncode == -9
    numbers = [int(line.header["number"], 16) for line in iter_recording(path) if line.header]
    assert numbers == list(range(1, 501))


def test_a_truncated_gzip_tail_yields_everything_before_it(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    with Recorder(path, flush_interval=0.0) as recorder:
        for n in range(1, 2001):
            recorder.head("a", header(n))
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) - 9, len(data) // 2, len(data) // 3 + 5):
        (tmp_path / "part.gz").write_bytes(data[:cut])
        numbers = [int(x.header["number"], 16) for x in iter_recording(tmp_path / "part.gz")]
        assert numbers == list(range(1, len(numbers) + 1))  # a clean prefix, nothing garbled
    assert len(list(iter_recording(tmp_path / "part.gz"))) > 100


def test_a_bad_line_in_the_middle_is_an_error_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = orjson.dumps({"t": 0.1, "client": "a", "head": header(1)})
    path.write_bytes(good + b"\n{oops\n" + good + b"\n")
    with pytest.raises(RecordingError, match=r"bad.jsonl:2: not valid JSON"):
        list(iter_recording(path))
    path.write_bytes(good + b'\n{"t": 1, "client": "a"}\n')
    with pytest.raises(RecordingError, match=r":2: expected t, client"):
        list(iter_recording(path))


def test_blank_lines_and_a_missing_final_newline_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "loose.jsonl"
    good = orjson.dumps({"t": 0.1, "client": "a", "head": header(1)})
    path.write_bytes(b"\n" + good + b"\n\n" + good)
    assert len(list(iter_recording(path))) == 2


def test_the_reader_detects_gzip_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "named-plain.jsonl"
    path.write_bytes(gzip.compress(orjson.dumps({"t": 0, "client": "a", "event": "x"}) + b"\n"))
    assert list(iter_recording(path)) == [RecordedLine(0, "a", "event", None, "x")]


def test_lines_longer_than_the_read_chunk_are_reassembled(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl.gz"
    big = {**header(1), "extraData": "0x" + "ab" * (3 << 20)}
    with Recorder(path) as recorder:
        recorder.head("a", big)
        recorder.head("a", header(2))
    lines = list(iter_recording(path))
    assert lines[0].header == big
    assert lines[1].header == header(2)

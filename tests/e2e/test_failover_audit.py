"""The audit copy on a PostgreSQL journal with active/standby instances (DESIGN.md §6a and §9).

Two service processes, each with its own real enclave app (the same signing key, its own log:
its own log key and seq), one journal database, one anvil chain, ``[audit] enabled = true``:

- each leader streams its enclave's log into the copy, keyed by log: after a failover the copy
  holds two logs, each verified on its own rows;
- ``kill -9`` of the leader mid-stream of intents: the new leader keeps reconciling every block,
  and the transactions the old leader's enclave signed are accounted for (they are in the old
  leader's verified log), not flagged foreign;
- ``broadcaster audit`` on the PostgreSQL journal checks every log it holds and accounts for
  every transaction of the run.

Nothing sleeps to wait: conditions are polled with a deadline (``until``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

from broadcaster.api.client import BroadcasterClient
from broadcaster.cli.audit import verify_logs
from broadcaster.dev.anvil import start_anvil
from broadcaster.dev.stack import TOKEN
from nonce.audit_copy import open_audit_copy
from tests.e2e.support import mined_by_nonce
from tests.e2e.test_crash_recovery import Bot, check_chain, wait_all_included
from tests.e2e.test_failover import LEASE, REPO, Instance, _standby_of, pair
from tests.postgres import Postgres
from tests.reliability.common import report, until


async def series(instance: Instance, name: str) -> float:
    """The sum of every series of metric ``name`` (labelled or not) on ``instance``."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(instance.metrics_url + "/metrics") as response,
    ):
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    )


async def test_after_a_failover_the_old_leader_s_signatures_are_ours_and_every_log_verifies(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.new_database()
    bot = Bot()
    async with (
        start_anvil("chain", block_time=1) as node,
        pair(tmp_path, node, url, audit=True) as (a, b),
    ):
        await a.start()
        await until(a.leading, "a leads", limit=60)
        await b.start()
        await until(lambda: _standby_of(b, "a"), "b is a standby of a", limit=30)
        async with await BroadcasterClient.connect(a.api_url, token=TOKEN) as api:
            stop = asyncio.Event()
            streaming = asyncio.get_running_loop().create_task(bot.stream(api, stop))
            await until(lambda: len(bot.acked) >= 20, "intents flow")
            checked_by_a = await series(a, "broadcaster_audit_blocks_checked_total")
            killed = time.monotonic()
            killed_at = int(await node.rpc("eth_blockNumber"), 16)
            await a.kill9()  # mid-stream: some of a's signatures were never streamed by a
            stop.set()
            await streaming
        await until(b.leading, "b takes over", limit=8 * LEASE + 30)
        takeover = time.monotonic() - killed
        at_kill = await asyncio.to_thread(_log_size, url, "a")  # what a streamed while it led
        # a's supervisor restarts it: a standby now, which streams its enclave's log (the tail
        # a never streamed before it died) into the copy, where b's reconciler finds it.
        await a.start()
        await until(lambda: _standby_of(a, "b"), "a is a standby of b", limit=30)
        async with await BroadcasterClient.connect(b.api_url, token=TOKEN) as api:
            for key in [k for k in bot.asked if k not in bot.acked]:
                await bot.submit(api, key)
            await wait_all_included(api, list(bot.acked.values()), limit=120)
            tip = int(await node.rpc("eth_blockNumber"), 16)

            # b keeps reconciling: it checks every block to the tip with nothing left queued (a
            # block holding a hash no verified log holds waits in the queue, up to 120 s, for the
            # old leader's log; without a's standby streaming that tail, this never happens).
            await until(lambda: _checked_past(b, tip), f"b checked block {tip}", limit=60)
        assert checked_by_a > 0
        assert await series(b, "broadcaster_foreign_transactions_total") == 0
        assert await series(b, "broadcaster_audit_refusals_total") == 0
        await check_chain(node, bot)  # every intent once, no nonce reused or skipped

        # The copy: two logs (a's enclave and b's), each verified on its own rows, and every
        # mined transaction of ours in one of them.
        copy = await asyncio.to_thread(open_audit_copy, url)
        try:
            checks = await asyncio.to_thread(verify_logs, copy)
            by_nonce = await mined_by_nonce(node)
            mined = [bytes.fromhex(tx["hash"][2:]) for tx in by_nonce.values()]
            signed = await asyncio.to_thread(copy.signed, mined)
            log_a, log_b = copy.log_of("a"), copy.log_of("b")
        finally:
            copy.close()
        assert log_a is not None and log_b is not None and log_a != log_b
        assert {c.log_id for c in checks} == {log_a, log_b}
        assert all(c.refused is None and c.seq > 0 for c in checks), checks
        missing = {n: (tx["blockNumber"], tx["hash"]) for n, tx in by_nonce.items()
                   if bytes.fromhex(tx["hash"][2:]) not in signed}  # fmt: skip
        assert signed == set(mined), (missing, f"killed at block {killed_at}", await b.health())

        # broadcaster audit over the run, on the PostgreSQL journal: every log checked.
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "broadcaster", "audit", "--config", str(b.config_path),
             "--from-block", "0", "--json"],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        summary = orjson.loads(done.stdout.strip().splitlines()[-1])
        assert summary["foreign"] == 0 and summary["ours"] == len(mined), summary
        assert done.stderr.count(": verified") == 2, done.stderr
    report(
        "failover_audit",
        takeover_seconds=round(takeover, 2),
        intents=len(bot.asked),
        mined=len(mined),
        logs={c.log_id[:10]: c.seq for c in checks},
        a_entries_streamed_as_leader=at_kill,
        a_entries_streamed_as_standby=next(c.seq for c in checks if c.log_id == log_a) - at_kill,
    )


def _log_size(url: str, instance: str) -> int:
    copy = open_audit_copy(url)
    try:
        log_id = copy.log_of(instance)
        return copy.count(log_id) if log_id is not None else 0
    finally:
        copy.close()


async def _checked_past(instance: Instance, tip: int) -> bool:
    async with (
        aiohttp.ClientSession() as session,
        session.get(instance.metrics_url + "/healthz") as response,
    ):
        body = await response.json()
    audit = body.get("audit") or {}
    last = audit.get("last_block_checked")
    return isinstance(last, int) and last >= tip and audit.get("blocks_queued") == 0

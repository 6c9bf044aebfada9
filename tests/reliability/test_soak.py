"""Soak: the service as a real process under a steady stream of intents and reorgs.

anvil mines a block a second; a bot submits an intent every 100 ms; a reorg of depth 1-3 is
injected every few seconds. Every two seconds the test samples the service's resident memory
(``VmRSS`` from ``/proc``) and its settled asyncio task count. After a warm-up quarter, the median
of the second half of the samples must not sit above the first half's beyond a small allowance: a
leak per intent, per reorg or per connection would show as a steady climb. When the load stops,
the settled task count must come back to what it was at rest before it (a leak of one task per
reorg fails that). At the end every intent is mined exactly once.

Settled, not instantaneous: the service does its work in short-lived tasks, e.g. one
``ChainReactions._presign`` per transaction a block includes (each waits for its signer round
trip), so a single ``/healthz`` read that lands just after a block holding 40 of ours reads
16 + 40 tasks although nothing leaked. A sample is therefore the fewest tasks seen over a short
window of reads: work in flight comes and goes within it, a leaked task never leaves.

``RELIABILITY_SOAK_SECONDS`` sets the length (CI: 45 s; the long form: 600 s).
"""

from __future__ import annotations

import asyncio
import random
import statistics
from pathlib import Path

import aiohttp
import pytest

from broadcaster.api.client import BroadcasterClient
from broadcaster.dev.anvil import DEV_ADDRESS, start_anvil, start_enclave
from broadcaster.dev.stack import TOKEN, write_config
from tests.e2e.service_process import service_process
from tests.e2e.test_crash_recovery import wait_all_included
from tests.reliability.common import (
    assert_exactly_once,
    knob,
    report,
    seed,
    send_valued,
)

pytestmark = pytest.mark.e2e  # the service as a real process against a real anvil

SECONDS = knob("RELIABILITY_SOAK_SECONDS", 45)
RSS_ALLOWANCE = 16 << 20  # bytes: allocator noise, caches filling once
TASK_ALLOWANCE = 5  # API connections and in-flight sends come and go
SETTLE_WINDOW = 0.5  # seconds of /healthz reads a task sample takes the minimum of
SETTLE_READ_EVERY = 0.025


async def task_counts(http: aiohttp.ClientSession, url: str, window: float) -> list[int]:
    """``/healthz`` ``tasks`` read every SETTLE_READ_EVERY seconds for ``window`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + window
    counts = []
    while True:
        async with http.get(url + "/healthz") as response:
            counts.append(int((await response.json())["tasks"]))
        if loop.time() >= end:
            return counts
        await asyncio.sleep(SETTLE_READ_EVERY)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_memory_and_task_count_stay_flat_under_steady_intents_and_reorgs(
    tmp_path: Path,
) -> None:
    rng = random.Random(seed("soak"))
    values: list[int] = []
    ids: list[str] = []
    samples: list[tuple[float, int, int]] = []  # (t, rss, settled tasks)
    peaks: list[int] = []  # the most tasks one read saw in each sample's window (reported only)
    reorgs = 0
    async with (
        start_anvil("chain", block_time=1) as node,
        start_enclave(tmp_path / "enclave") as signer_url,
    ):
        config = write_config(tmp_path, node, signer_url)
        async with service_process(config) as service, aiohttp.ClientSession() as http:
            await service.start()
            assert service.process is not None
            pid = service.process.pid
            loop = asyncio.get_running_loop()
            async with await BroadcasterClient.connect(service.api_url, token=TOKEN) as api:

                async def intents() -> None:
                    while loop.time() - start < SECONDS:
                        await send_valued(api, values, ids, 10_000)
                        await asyncio.sleep(0.1)  # the offered load: 10 intents/s

                async def chain() -> None:
                    nonlocal reorgs
                    while loop.time() - start < SECONDS:
                        await asyncio.sleep(rng.uniform(2.0, 5.0))  # the reorg rate
                        height = int(await node.rpc("eth_blockNumber"), 16)
                        if height > 4:
                            await node.rpc("anvil_reorg", rng.randint(1, 3), [])
                            reorgs += 1

                async def sample() -> None:
                    while loop.time() - start < SECONDS:
                        t = loop.time() - start
                        counts = await task_counts(http, service.metrics_url, SETTLE_WINDOW)
                        samples.append((t, rss_bytes(pid), min(counts)))
                        peaks.append(max(counts))
                        await asyncio.sleep(2.0 - SETTLE_WINDOW)  # the sampling period: 2 s

                # The service at rest, connected as it will be once the load stops.
                rest_before = min(await task_counts(http, service.metrics_url, SETTLE_WINDOW))
                start = loop.time()
                async with asyncio.TaskGroup() as group:
                    group.create_task(intents())
                    group.create_task(chain())
                    group.create_task(sample())
                try:
                    await wait_all_included(api, ids, limit=120)
                except AssertionError as exc:
                    latest = await node.rpc("eth_getTransactionCount", DEV_ADDRESS, "latest")
                    pending = await node.rpc("eth_getTransactionCount", DEV_ADDRESS, "pending")
                    pool = await node.rpc("txpool_status")
                    raise AssertionError(
                        f"{exc}\nchain nonce latest {int(latest, 16)} pending {int(pending, 16)},"
                        f" anvil pool {pool}, intents {len(ids)}, reorgs {reorgs}, samples"
                        f" (t, rss, tasks) {samples[::10]}"
                    ) from None
                # The load is over: the service is at rest again, still connected. Work still
                # finishing is given time to drain; a leak never does.
                rest_after = min(await task_counts(http, service.metrics_url, SETTLE_WINDOW))
                for _ in range(20):
                    if rest_after <= rest_before + TASK_ALLOWANCE:
                        break
                    rest_after = min(await task_counts(http, service.metrics_url, SETTLE_WINDOW))
            assert service.process.returncode is None, "the service stopped"
            assert await service.stop() == 0
        await assert_exactly_once(node, values)

    steady = samples[len(samples) // 4 :]
    first, second = steady[: len(steady) // 2], steady[len(steady) // 2 :]
    rss_first = statistics.median(s[1] for s in first)
    rss_second = statistics.median(s[1] for s in second)
    tasks_first = statistics.median(s[2] for s in first)
    tasks_second = statistics.median(s[2] for s in second)
    report(
        "soak",
        seconds=SECONDS,
        intents=len(values),
        reorgs=reorgs,
        samples=len(samples),
        rss_mib_start=round(samples[0][1] / 2**20, 1),
        rss_mib_first_half=round(rss_first / 2**20, 1),
        rss_mib_second_half=round(rss_second / 2**20, 1),
        rss_mib_end=round(samples[-1][1] / 2**20, 1),
        tasks_first_half=tasks_first,
        tasks_second_half=tasks_second,
        tasks_at_rest_before=rest_before,
        tasks_at_rest_after=rest_after,
        tasks=[s[2] for s in samples],
        tasks_peak=peaks,
    )
    assert len(first) >= 2 and len(second) >= 2, "too few samples"
    assert rss_second <= rss_first + RSS_ALLOWANCE, "resident memory keeps growing"
    assert tasks_second <= tasks_first + TASK_ALLOWANCE, "asyncio tasks keep growing"
    assert rest_after <= rest_before + TASK_ALLOWANCE, "asyncio tasks left after the load"

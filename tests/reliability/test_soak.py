"""Soak: the service as a real process under a steady stream of intents and reorgs.

anvil mines a block a second; a bot submits an intent every 100 ms; a reorg of depth 1-3 is
injected every few seconds. Every two seconds the test samples the service's resident memory
(``VmRSS`` from ``/proc``) and its live asyncio task count (``/healthz`` ``tasks``). After a
warm-up quarter, the second half of the samples must not sit above the first half beyond a small
allowance: a leak per intent, per reorg or per connection would show as a steady climb. At the end
every intent is mined exactly once.

``RELIABILITY_SOAK_SECONDS`` sets the length (CI: 45 s; the long form: 20 minutes).
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
    samples: list[tuple[float, int, int]] = []  # (t, rss, tasks)
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
            start = loop.time()
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
                        async with http.get(service.metrics_url + "/healthz") as response:
                            health = await response.json()
                        samples.append((loop.time() - start, rss_bytes(pid), health["tasks"]))
                        await asyncio.sleep(2.0)  # the sampling period

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
            assert service.process.returncode is None, "the service stopped"
            assert await service.stop() == 0
        await assert_exactly_once(node, values)

    steady = samples[len(samples) // 4 :]
    first, second = steady[: len(steady) // 2], steady[len(steady) // 2 :]
    rss_first = statistics.median(s[1] for s in first)
    rss_second = statistics.median(s[1] for s in second)
    tasks_first = max(s[2] for s in first)
    tasks_second = max(s[2] for s in second)
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
        tasks_first_half_max=tasks_first,
        tasks_second_half_max=tasks_second,
        tasks=[s[2] for s in samples],
    )
    assert len(first) >= 2 and len(second) >= 2, "too few samples"
    assert rss_second <= rss_first + RSS_ALLOWANCE, "resident memory keeps growing"
    assert tasks_second <= tasks_first + TASK_ALLOWANCE, "asyncio tasks keep growing"

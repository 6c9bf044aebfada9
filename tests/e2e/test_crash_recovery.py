"""``kill -9`` of the service at random moments while intents stream in and reorgs happen.

A bot submits intents with idempotency keys, as a careful bot does; when the service dies under
it, it reconnects after the restart and resubmits every key it never got an answer for. At the
end, the chain must hold every intent exactly once: each nonce used once, no gap, every intent's
payload mined once (noop fillers, if the service needed any, are counted separately).

CI runs a few trials; the reliability suite's long form runs many (``RELIABILITY_TRIALS``). The
same trials run with the journal on a real PostgreSQL (``[journal] url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from pathlib import Path
from typing import Any

from broadcaster.api.client import GWEI, ApiError, BroadcasterClient
from broadcaster.dev.anvil import DEV_ADDRESS, AnvilNode, start_anvil, start_enclave
from broadcaster.dev.stack import TOKEN, write_config
from tests.e2e.service_process import ServiceProcess, service_process
from tests.e2e.support import mined_by_nonce
from tests.postgres import Postgres

RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TRIALS = int(os.environ.get("RELIABILITY_TRIALS", "3"))


class Bot:
    """Submits intents with keys; remembers what it asked for and what was acknowledged."""

    def __init__(self) -> None:
        self.asked: dict[str, int] = {}  # key -> value (unique per intent)
        self.acked: dict[str, str] = {}  # key -> intent id

    async def submit(self, api: BroadcasterClient, key: str) -> None:
        value = self.asked.setdefault(key, 100_000 + len(self.asked))
        answer = await api.send_intent(
            to=RECIPIENT,
            value=value,
            gas=21_000,
            max_fee_per_gas=3 * GWEI,
            max_priority_fee_per_gas=GWEI,
            key=key,
        )
        self.acked[key] = answer["id"]

    async def stream(self, api: BroadcasterClient, stop: asyncio.Event) -> None:
        """Submit new intents until told to stop or the service dies under us."""
        with contextlib.suppress(ConnectionError, ApiError, OSError):
            while not stop.is_set():
                await self.submit(api, f"k{len(self.asked)}")
                await asyncio.sleep(0.02)


async def wait_all_included(api: BroadcasterClient, ids: list[str], limit: float = 60) -> None:
    """Poll (gently: the API rate-limits each token) until every intent is mined."""
    deadline = asyncio.get_running_loop().time() + limit
    waiting = list(ids)
    while True:
        states = [await api.get_intent(i) for i in waiting]
        waiting = [s["id"] for s in states if s["status"] not in ("included", "finalized")]
        if not waiting:
            return
        if asyncio.get_running_loop().time() > deadline:
            stuck = [s for s in states if s["status"] not in ("included", "finalized")]
            raise AssertionError(f"{len(stuck)} intents not included: {stuck[:3]}")
        await asyncio.sleep(0.5)


async def run_trials(
    tmp_path: Path, trials: int, seed: int, journal_url: str | None = None
) -> None:
    rng = random.Random(seed)
    bot = Bot()
    async with (
        start_anvil("chain", block_time=1) as node,
        start_enclave(tmp_path / "enclave") as signer_url,
    ):
        config = write_config(tmp_path, node, signer_url, journal_url=journal_url)
        async with service_process(config) as service:
            await service.start()
            for _ in range(trials):
                await one_trial(service, node, bot, rng)
                await service.start()
            async with await BroadcasterClient.connect(service.api_url, token=TOKEN) as api:
                for key in [k for k in bot.asked if k not in bot.acked]:
                    await bot.submit(api, key)  # the resubmission a careful bot makes
                try:
                    await wait_all_included(api, list(bot.acked.values()))
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n{await diagnose(node)}") from None
                reported = {key: await api.get_intent(i) for key, i in bot.acked.items()}
            assert await service.stop() == 0
        await check_chain(node, bot)
        await check_reported_blocks(node, reported)
        print(f"kill -9 trials: {trials}, intents accepted: {len(bot.acked)}, all mined once")


async def check_reported_blocks(node: AnvilNode, reported: dict[str, dict[str, Any]]) -> None:
    """What the service reports for each intent is the final chain: its block is canonical and
    holds the intent's transaction (no stale status survived a crash or a reorg)."""
    for key, intent in reported.items():
        block = intent["block"]
        assert block is not None, f"{key}: included without a block"
        canonical = await node.rpc("eth_getBlockByNumber", block["number"], False)
        assert canonical["hash"] == block["hash"], f"{key}: reported block is not canonical"
        assert intent["hash"] in canonical["transactions"], f"{key}: tx not in its block"


async def one_trial(service: ServiceProcess, node: AnvilNode, bot: Bot, rng: random.Random) -> None:
    async with await BroadcasterClient.connect(service.api_url, token=TOKEN) as api:
        for key in [k for k in bot.asked if k not in bot.acked]:
            with contextlib.suppress(ConnectionError, ApiError, OSError):
                await bot.submit(api, key)
        stop = asyncio.Event()
        streaming = asyncio.get_running_loop().create_task(bot.stream(api, stop))
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        height = int(await node.rpc("eth_blockNumber"), 16)
        if rng.random() < 0.7 and height >= 1:
            await node.rpc("anvil_reorg", min(height, rng.randint(1, 2)), [])
        await asyncio.sleep(rng.uniform(0.0, 0.6))
        await service.kill9()
        stop.set()
        await streaming


async def diagnose(node: AnvilNode) -> str:
    """What the chain and the node's pool say, for a failure message."""
    latest = int(await node.rpc("eth_getTransactionCount", DEV_ADDRESS, "latest"), 16)
    pending = int(await node.rpc("eth_getTransactionCount", DEV_ADDRESS, "pending"), 16)
    pool = await node.rpc("txpool_content")
    ours = {**pool.get("pending", {}), **pool.get("queued", {})}
    mine = {k.lower(): v for k, v in ours.items()}.get(DEV_ADDRESS.lower(), {})
    summary = {n: (tx["hash"], tx.get("maxFeePerGas")) for n, tx in sorted(mine.items())[:8]}
    return f"chain nonce latest {latest}, pending {pending}; pool (first 8): {summary}"


async def check_chain(node: AnvilNode, bot: Bot) -> None:
    mined = await mined_by_nonce(node)
    count = int(await node.rpc("eth_getTransactionCount", DEV_ADDRESS, "latest"), 16)
    assert sorted(mined) == list(range(count)), "a nonce gap remains"
    payloads = [
        int(tx["value"], 16)
        for tx in mined.values()
        if not (tx["to"].lower() == DEV_ADDRESS.lower() and int(tx["value"], 16) == 0)
    ]
    assert sorted(payloads) == sorted(bot.asked.values()), "an intent is missing or doubled"
    assert len(bot.acked) == len(bot.asked)


async def test_kill_9_at_random_moments_loses_no_accepted_intent(tmp_path: Path) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (RELIABILITY_SEED={seed} reproduces the kill schedule)")
    await run_trials(tmp_path, TRIALS, seed)


async def test_kill_9_at_random_moments_loses_no_accepted_intent_on_postgresql(
    tmp_path: Path, postgres: Postgres
) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (RELIABILITY_SEED={seed} reproduces the kill schedule)")
    await run_trials(tmp_path, TRIALS, seed, journal_url=postgres.new_database())

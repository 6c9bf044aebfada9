"""Active/standby on a real PostgreSQL (DESIGN.md §9): two service processes, each with its own
enclave app (the same key), one journal database, one anvil chain.

- the standby refuses intents with an error naming the leader, and ``/healthz`` says so (503);
- ``kill -9`` of the leader mid-stream of keyed intents: the standby takes over, the bot resubmits
  every key it got no answer for to the new leader, and the chain holds every intent exactly
  once (no nonce reused or skipped); several rounds, each instance in turn;
- a leader frozen (SIGSTOP) past its lease, then resumed, sends nothing more and exits (75),
  while the chain is reorged under it (which would make it resend);
- the database restarted under load: whoever leads afterwards finishes every intent once.

Nothing sleeps to wait: conditions are polled with a deadline (``until``). Takeover times are
printed (``-s``) for docs/reliability.md, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from broadcaster.api.client import ApiError, BroadcasterClient
from broadcaster.dev.anvil import AnvilNode, start_anvil, start_enclave
from broadcaster.dev.stack import TOKEN, write_config
from broadcaster.ha.standby import NOT_LEADER
from broadcaster.service import EXIT_LEASE_LOST
from broadcaster.settings import load_config
from tests.e2e.support import mined_by_nonce
from tests.e2e.test_crash_recovery import RECIPIENT, Bot, check_chain, wait_all_included
from tests.postgres import Postgres
from tests.reliability.common import report, until
from tests.reliability.rpc_recorder import RecordingRpc

REPO = Path(__file__).resolve().parents[2]
LEASE = 1.0
ROUNDS = int(os.environ.get("RELIABILITY_FAILOVERS", "2"))


@dataclass
class Instance:
    name: str
    config_path: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def api_url(self) -> str:
        config = load_config(self.config_path)
        return f"ws://{config.api.listen.host}:{config.api.listen.port}"

    @property
    def metrics_url(self) -> str:
        config = load_config(self.config_path)
        return f"http://{config.metrics.listen.host}:{config.metrics.listen.port}"

    async def start(self) -> None:
        log = open(self.config_path.with_suffix(".log"), "ab")  # noqa: ASYNC230, SIM115
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "broadcaster", "run", "--config", str(self.config_path),
            stdout=log, stderr=asyncio.subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        log.close()
        await until(self.answers, f"{self.name} serving /healthz", limit=60)

    async def health(self) -> tuple[int, dict[str, Any]] | None:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(self.metrics_url + "/healthz") as response,
            ):
                return response.status, await response.json()
        except (aiohttp.ClientError, OSError):
            return None

    async def answers(self) -> bool:
        if self.process is not None and self.process.returncode is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}")
        return await self.health() is not None

    async def leading(self) -> bool:
        answer = await self.health()
        return answer is not None and answer[0] == 200

    async def metric(self, name: str) -> float:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.metrics_url + "/metrics") as response,
        ):
            text = await response.text()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in {self.name}'s metrics: {text[:300]!r}")

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def kill9(self) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@contextlib.asynccontextmanager
async def pair(
    tmp_path: Path,
    node: AnvilNode,
    url: str,
    rpc_urls: dict[str, list[str]] | None = None,
    audit: bool | None = None,
) -> AsyncIterator[tuple[Instance, Instance]]:
    """Instances ``a`` and ``b`` (configs only; the test starts them), each with its enclave;
    ``audit``: ``[audit] enabled``."""
    async with contextlib.AsyncExitStack() as stack:
        instances = []
        for name in ("a", "b"):
            workdir = tmp_path / name
            workdir.mkdir()
            signer_url = await stack.enter_async_context(start_enclave(workdir / "enclave"))
            config = write_config(
                workdir, node, signer_url, journal_url=url, ha_instance=name,
                lease_seconds=LEASE, rpc_urls=(rpc_urls or {}).get(name), audit_enabled=audit,
            )  # fmt: skip
            instances.append(Instance(name, config))
        try:
            yield instances[0], instances[1]
        finally:
            for instance in instances:
                await instance.stop()


async def refused_by(standby: Instance, leader: str) -> None:
    """The standby answers an intent with NOT_LEADER naming ``leader``; /healthz says 503."""
    async with await BroadcasterClient.connect(standby.api_url, token=TOKEN) as api:
        try:
            await api.send_intent(to=RECIPIENT, value=1, gas=21_000, key="refused")
        except ApiError as exc:
            assert exc.code == NOT_LEADER, exc
            assert exc.message == f"standby, leader is {leader}", exc
            assert exc.data == {"leader": leader}, exc
        else:
            raise AssertionError("the standby accepted an intent")
    health = await standby.health()
    assert health is not None
    status, body = health
    assert status == 503 and body["role"] == f"standby, leader is {leader}", health


async def test_the_standby_refuses_and_takes_over_after_kill_9_losing_nothing(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.new_database()
    bot = Bot()
    takeovers: list[float] = []
    resubmitted = 0
    async with start_anvil("chain", block_time=1) as node, pair(tmp_path, node, url) as (a, b):
        await a.start()
        await until(a.leading, "a leads", limit=60)
        await b.start()
        await until(lambda: _standby_of(b, "a"), "b is a standby of a", limit=30)
        await refused_by(b, "a")
        await until(lambda: _follows_heads(b), "the standby follows heads")
        assert await b.metric("broadcaster_is_leader") == 0
        assert await a.metric("broadcaster_is_leader") == 1

        leader, standby = a, b
        for _ in range(ROUNDS):
            async with await BroadcasterClient.connect(leader.api_url, token=TOKEN) as api:
                stop = asyncio.Event()
                streaming = asyncio.get_running_loop().create_task(bot.stream(api, stop))
                target = len(bot.acked) + 20
                await until(lambda t=target: len(bot.acked) >= t, "intents flow")
                killed = time.monotonic()
                await leader.kill9()  # mid-stream: some keys get no answer
                stop.set()
                await streaming
            await until(standby.leading, f"{standby.name} takes over", limit=8 * LEASE + 30)
            takeovers.append(time.monotonic() - killed)
            unanswered = [k for k in bot.asked if k not in bot.acked]
            resubmitted += len(unanswered)
            async with await BroadcasterClient.connect(standby.api_url, token=TOKEN) as api:
                for key in unanswered:
                    await bot.submit(api, key)  # the resubmission a careful bot makes
            await leader.start()  # restarted by its supervisor: now the standby
            await until(lambda s=leader, n=standby.name: _standby_of(s, n), "restarted standby")
            leader, standby = standby, leader

        async with await BroadcasterClient.connect(leader.api_url, token=TOKEN) as api:
            await wait_all_included(api, list(bot.acked.values()), limit=120)
        assert await leader.metric("broadcaster_failovers_total") == 1
        # every takeover raised the epoch (the first lease: 1), as both instances report it
        assert await leader.metric("broadcaster_lease_epoch") == 1 + ROUNDS
        assert await standby.metric("broadcaster_lease_epoch") == 1 + ROUNDS
        await check_chain(node, bot)  # every intent once, no nonce reused or skipped
        payloads = [int(tx["value"], 16) for tx in (await mined_by_nonce(node)).values()]
    report(
        "failover",
        rounds=ROUNDS,
        lease_seconds=LEASE,
        takeover_seconds=[round(t, 2) for t in takeovers],
        takeover_max=round(max(takeovers), 2),
        intents=len(bot.asked),
        resubmitted_unanswered=resubmitted,
        lost=len(set(bot.asked.values()) - set(payloads)),
        duplicated=len(payloads) - len(set(payloads)),
    )


async def _follows_heads(instance: Instance) -> bool:
    health = await instance.health()
    return health is not None and health[1].get("tip") is not None and health[1]["tip"] >= 1


async def _standby_of(instance: Instance, leader: str) -> bool:
    health = await instance.health()
    return health is not None and health[1].get("role") == f"standby, leader is {leader}"


async def test_a_leader_frozen_past_its_lease_sends_nothing_when_resumed(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.new_database()
    async with (
        start_anvil("chain", block_time=1) as node,
        RecordingRpc(node.http_url) as seen_a,
        pair(tmp_path, node, url, {"a": [seen_a.url]}) as (a, b),
    ):
        await a.start()
        await until(a.leading, "a leads", limit=60)
        await b.start()
        await until(lambda: _standby_of(b, "a"), "b is a standby of a", limit=30)
        bot = Bot()
        async with await BroadcasterClient.connect(a.api_url, token=TOKEN) as api:
            for i in range(4):
                await bot.submit(api, f"f{i}")
            await wait_all_included(api, list(bot.acked.values()))
        assert a.process is not None
        # A bot still connected to a, whose intent arrives while a is frozen: it waits in a's
        # socket and is the first thing a reads when it resumes, before it learns it lost.
        late = await BroadcasterClient.connect(a.api_url, token=TOKEN)
        a.process.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        await until(b.leading, "b takes over from the frozen a", limit=8 * LEASE + 30)
        takeover = time.monotonic() - frozen
        # Drop a's transactions: a resumed a would see the reorg and resend at once.
        height = int(await node.rpc("eth_blockNumber"), 16)
        await node.rpc("anvil_reorg", min(height, 3), [])
        sent_before = len(seen_a.raws)
        in_the_window = asyncio.get_running_loop().create_task(bot.submit(late, "late"))
        await asyncio.sleep(0.2)  # written into a's socket while a is stopped
        a.process.send_signal(signal.SIGCONT)
        code = await asyncio.wait_for(a.process.wait(), 60)
        assert code == EXIT_LEASE_LOST
        assert len(seen_a.raws) == sent_before, "the frozen leader sent after resuming"
        outcome = (await asyncio.gather(in_the_window, return_exceptions=True))[0]
        assert isinstance(outcome, Exception), "the resumed old leader acknowledged an intent"
        assert "late" not in bot.acked
        with contextlib.suppress(Exception):
            await late.close()
        async with await BroadcasterClient.connect(b.api_url, token=TOKEN) as api:
            await bot.submit(api, "late")  # unanswered: the bot resubmits it to the leader
            await wait_all_included(api, list(bot.acked.values()), limit=120)
        await check_chain(node, bot)  # "late" on chain once, from b
    report("frozen_leader", lease_seconds=LEASE, takeover_seconds=round(takeover, 2),
           sent_after_resume=0, exit_code=code,
           intent_in_the_window=f"{type(outcome).__name__}: {outcome}"[:120])  # fmt: skip


async def test_the_database_restarted_under_load_loses_nothing(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.new_database()
    bot = Bot()
    async with start_anvil("chain", block_time=1) as node, pair(tmp_path, node, url) as (a, b):
        await a.start()
        await until(a.leading, "a leads", limit=60)
        await b.start()
        await until(lambda: _standby_of(b, "a"), "b is a standby of a", limit=30)
        async with await BroadcasterClient.connect(a.api_url, token=TOKEN) as api:
            stop = asyncio.Event()
            streaming = asyncio.get_running_loop().create_task(bot.stream(api, stop))
            await until(lambda: len(bot.acked) >= 10, "intents flow")
            await asyncio.to_thread(postgres.restart)  # every connection cut, under load
            # The stream ends at the first error (an intent not acknowledged, resubmitted below).
            await until(
                lambda: len(bot.acked) >= 20 or streaming.done() or not a.alive(),
                "intents after the restart",
            )
            stop.set()
            await streaming

        async def someone_leads() -> bool:
            return any([await i.leading() for i in (a, b) if i.alive()])

        # The restart may hand the lease over more than once (a leader that could not renew in
        # time exits 75 while we talk to it): a bot then asks whoever leads next, as here.
        for handover in range(3):
            await until(someone_leads, "a leader after the restart", limit=8 * LEASE + 60)
            leader = a if a.alive() and await a.leading() else b
            try:
                async with await BroadcasterClient.connect(leader.api_url, token=TOKEN) as api:
                    for key in [k for k in bot.asked if k not in bot.acked]:
                        await bot.submit(api, key)
                    await wait_all_included(api, list(bot.acked.values()), limit=120)
                break
            except (ConnectionError, OSError, ApiError) as exc:
                if handover == 2 or (isinstance(exc, ApiError) and exc.code != NOT_LEADER):
                    raise
        await check_chain(node, bot)
    report("database_restart", intents=len(bot.asked), leader_after=leader.name,
           a_exit=a.process.returncode if a.process else None)  # fmt: skip

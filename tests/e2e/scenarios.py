"""Scripted anvil sessions with injected reorgs, shared by the live-recording test and
``tests/fixtures/make_recordings.py`` (which commits their recordings as fixtures).

Every step waits until the hub has seen the previous one, so the order of announcements, and
hence the events, are the same on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from heads.events import DeepReorg, Reorg
from heads.hub import HeadHub
from heads.recording import Recorder
from heads.subscriber import SubscriptionOptions
from heads.tracker import ChainTracker
from tests.anvil import Anvil, start_anvil
from tests.e2e.support import CutProxy, Probe, reorg_summary, running, stop_anvil, zero_backoff

GENESIS_TIME = 1_700_000_000
SLOT = 12


async def rpc(node: Anvil, method: str, *params: Any) -> Any:
    return await asyncio.to_thread(node.rpc, method, *params)


async def mine(node: Anvil, n: int, fork: int = 0) -> str:
    await rpc(node, "evm_mine", GENESIS_TIME + n * SLOT + fork)
    block = await rpc(node, "eth_getBlockByNumber", hex(n), False)
    return str(block["hash"])


async def latest(node: Anvil) -> str:
    return str((await rpc(node, "eth_getBlockByNumber", "latest", False))["hash"])


@contextlib.asynccontextmanager
async def recorded_hub(
    clients: list[tuple[str, str]], recorder: Recorder | None
) -> AsyncIterator[tuple[HeadHub, Probe]]:
    probe = Probe()
    hub = HeadHub(
        clients,
        tracker=ChainTracker(),
        on_events=probe.on_events,
        hooks=probe,
        recorder=recorder,
        options=SubscriptionOptions(watchdog=None, backoff=zero_backoff, close_timeout=0.5),
    )
    async with running(hub):
        await probe.until(
            lambda: all(s.state.connected for s in hub.subscriptions.values()), "connected"
        )
        yield hub, probe


async def tip_is(hub: HeadHub, probe: Probe, block_hash: str) -> None:
    await probe.until(
        lambda: hub.tracker.tip is not None and hub.tracker.tip.hash == block_hash,
        f"tip {block_hash}",
    )


def summaries(probe: Probe) -> list[dict[str, Any]]:
    return [
        reorg_summary(e) for e, _, _ in probe.events if type(e) is Reorg or type(e) is DeepReorg
    ]


async def reorg_session(depth: int, recorder: Recorder | None) -> tuple[HeadHub, Probe]:
    """One anvil: 12 blocks, ``anvil_reorg(depth)``, 2 more blocks."""
    node = start_anvil("--timestamp", str(GENESIS_TIME))
    try:
        async with recorded_hub([("a", node.ws_url)], recorder) as (hub, probe):
            for n in range(1, 13):
                last = await mine(node, n)
            await tip_is(hub, probe, last)
            await rpc(node, "anvil_reorg", depth, [])
            await tip_is(hub, probe, await latest(node))
            for n in (13, 14):
                last = await mine(node, n)
            await tip_is(hub, probe, last)
    finally:
        stop_anvil(node)
    return hub, probe


async def two_client_session(recorder: Recorder | None) -> tuple[HeadHub, Probe]:
    """Clients a and b agree, b's connection is cut while the two diverge, b comes back.

    b's first head after the reconnect has a parent the hub never saw: it is backfilled by hash
    from b (``block`` lines), b's branch is longer and wins (a reorg), then a's branch overtakes
    it again, and finally an ``anvil_reorg`` on a.
    """
    a = start_anvil("--timestamp", str(GENESIS_TIME))
    b = start_anvil("--timestamp", str(GENESIS_TIME))
    try:
        async with (
            CutProxy(b.port) as proxy,
            recorded_hub([("a", a.ws_url), ("b", proxy.ws_url)], recorder) as (hub, probe),
        ):
            for n in range(1, 6):
                tip = await mine(a, n)
                assert await mine(b, n) == tip
                await probe.until(lambda: probe.heads.get("b") == probe.heads.get("a"), "both")
            await tip_is(hub, probe, tip)
            proxy.cut()
            await probe.until(lambda: probe.disconnected_count("b") == 1, "b cut off")
            for n in (6, 7):
                a_tip = await mine(a, n)
                await mine(b, n, fork=1)  # b diverges unseen
            await tip_is(hub, probe, a_tip)
            proxy.restore()
            await probe.until(lambda: probe.connected_count("b") == 2, "b back")
            b_tip = await mine(b, 8, fork=1)  # parent unseen: backfilled by hash from b
            await tip_is(hub, probe, b_tip)
            for n in (8, 9):  # 8: same height as b's, announced later: a wins again
                a_tip = await mine(a, n)
                await tip_is(hub, probe, a_tip)
            await rpc(a, "anvil_reorg", 2, [])
            await tip_is(hub, probe, await latest(a))
    finally:
        stop_anvil(a)
        stop_anvil(b)
    return hub, probe

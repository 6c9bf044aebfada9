"""The head hub against real anvil nodes: subscription, reorgs, rollbacks, restarts, gaps.

Blocks are mined by the test with ``evm_mine`` and explicit timestamps, never ``--block-time``:
anvils started with the same ``--timestamp`` then produce byte-identical blocks (checked below),
which makes several clients that agree on one chain, and exactly where they part.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from heads.events import DeepReorg, Extension
from heads.hub import HeadHub
from heads.subscriber import SubscriptionOptions
from heads.tracker import ChainTracker
from tests.anvil import Anvil, free_port, start_anvil
from tests.e2e.support import CutProxy, Probe, running, stop_anvil, zero_backoff

GENESIS_TIME = 1_700_000_000
SLOT = 12


def ts(n: int, fork: int = 0) -> int:
    """Timestamp of block ``n`` on branch ``fork`` (a different timestamp, a different block)."""
    return GENESIS_TIME + n * SLOT + fork


@contextlib.contextmanager
def anvils(count: int, *extra: str) -> Iterator[list[Anvil]]:
    nodes: list[Anvil] = []
    try:
        for _ in range(count):
            nodes.append(start_anvil("--timestamp", str(GENESIS_TIME), *extra))  # noqa: PERF401
        yield nodes
    finally:
        for node in nodes:
            stop_anvil(node)


async def rpc(node: Anvil, method: str, *params: Any) -> Any:
    return await asyncio.to_thread(node.rpc, method, *params)


async def mine(node: Anvil, n: int, fork: int = 0) -> str:
    """Mine block ``n`` (the node must be at ``n - 1``) and return its hash."""
    await rpc(node, "evm_mine", ts(n, fork))
    block = await rpc(node, "eth_getBlockByNumber", hex(n), False)
    assert int(block["number"], 16) == n
    return str(block["hash"])


async def chain_hashes(node: Anvil, low: int, high: int) -> list[str]:
    blocks = [await rpc(node, "eth_getBlockByNumber", hex(n), False) for n in range(low, high + 1)]
    return [b["hash"] for b in blocks]


def hub_for(clients: list[tuple[str, str]], probe: Probe, **kwargs: Any) -> HeadHub:
    options = SubscriptionOptions(
        watchdog=kwargs.pop("watchdog", None), backoff=zero_backoff, close_timeout=0.5
    )
    return HeadHub(
        clients,
        tracker=kwargs.pop("tracker", None) or ChainTracker(finality_depth=64),
        on_events=probe.on_events,
        hooks=probe,
        options=options,
        **kwargs,
    )


async def all_connected(hub: HeadHub, probe: Probe) -> None:
    await probe.until(
        lambda: all(s.state.connected for s in hub.subscriptions.values()), "all connected"
    )


async def tip_is(hub: HeadHub, probe: Probe, block_hash: str) -> None:
    await probe.until(
        lambda: hub.tracker.tip is not None and hub.tracker.tip.hash == block_hash,
        f"tip {block_hash}",
    )


async def test_anvils_with_one_genesis_time_mine_identical_blocks() -> None:
    with anvils(2) as (a, b):
        for n in range(1, 4):
            assert await mine(a, n) == await mine(b, n)
        assert await mine(a, 4, fork=1) != await mine(b, 4, fork=2)


async def test_three_agreeing_clients_give_one_chain_of_extensions() -> None:
    probe = Probe()
    with anvils(3) as nodes:
        hub = hub_for([(name, n.ws_url) for name, n in zip("abc", nodes, strict=True)], probe)
        async with running(hub):
            await all_connected(hub, probe)
            for n in range(1, 7):
                hashes = {await mine(node, n) for node in nodes}
                assert len(hashes) == 1
            tip = hashes.pop()
            await probe.until(lambda: all(probe.heads.get(c) == 6 for c in "abc"), "18 heads")
            await tip_is(hub, probe, tip)
    changes = probe.tip_changes()
    assert all(type(e) is Extension for e in changes)
    assert [e.tip.number for e in changes if type(e) is Extension] == [1, 2, 3, 4, 5, 6]
    assert [(s.name, s.head_number, s.lag, s.heads) for s in hub.status()] == [
        ("a", 6, 0, 6),
        ("b", 6, 0, 6),
        ("c", 6, 0, 6),
    ]


@pytest.mark.parametrize("depth", [1, 3, 10])
async def test_anvil_reorg_is_reported_as_one_reorg_of_its_depth(depth: int) -> None:
    probe = Probe()
    with anvils(1) as (node,):
        hub = hub_for([("a", node.ws_url)], probe)
        async with running(hub):
            await all_connected(hub, probe)
            for n in range(1, 13):
                last = await mine(node, n)
            await tip_is(hub, probe, last)
            before = await chain_hashes(node, 1, 12)
            await rpc(node, "anvil_reorg", depth, [])
            after = await chain_hashes(node, 1, 12)
            await tip_is(hub, probe, after[-1])
    reorgs = probe.reorgs()
    assert len(reorgs) == 1
    reorg = reorgs[0]
    assert reorg.depth == depth
    assert reorg.ancestor.number == 12 - depth
    assert reorg.ancestor.hash == before[11 - depth] == after[11 - depth]
    assert [h.hash for h in reorg.old] == before[12 - depth :]
    # anvil announces the new branch from the fork height: the first new block moves the tip
    assert [h.hash for h in reorg.new] == [after[12 - depth]]
    # the window also holds genesis now (backfilled below the first head)
    assert [h.hash for h in hub.tracker.canonical_chain() if h.number >= 1] == after
    assert probe.deep_reorgs() == []


async def test_a_reorg_on_one_of_three_clients_is_held_while_two_stand_on_the_old_chain() -> None:
    """Changed (heads6, the one-voice rule, docs/chain-tracking.md): three independent anvils,
    c alone reorgs 3 deep. It used to win at once (8', latest) and flip back when a and b
    mined 9: two reorg events on one client's word. Now a reorg deeper than one block needs a
    second client on the new branch, and a and b both stand on the old one: the tip stays, and
    9 on the old chain is an extension. No reorg at all."""
    probe = Probe()
    with anvils(3) as (a, b, c):
        hub = hub_for([("a", a.ws_url), ("b", b.ws_url), ("c", c.ws_url)], probe)
        async with running(hub):
            await all_connected(hub, probe)
            for n in range(1, 9):
                for node in (a, b, c):
                    old_tip = await mine(node, n)
            await tip_is(hub, probe, old_tip)
            await probe.until(
                lambda: all(
                    (head := hub.tracker.client_head(name)) is not None and head.hash == old_tip
                    for name in ("a", "b", "c")
                ),
                "every client at 8",
            )
            await rpc(c, "anvil_reorg", 3, [])
            new = await chain_hashes(c, 6, 8)
            await probe.until(
                lambda: (head := hub.tracker.client_head("c")) is not None and head.hash == new[-1],
                "c at 8'",
            )
            assert hub.tracker.tip is not None and hub.tracker.tip.hash == old_tip
            nine = await mine(a, 9)
            assert await mine(b, 9) == nine
            await tip_is(hub, probe, nine)
            assert hub.lag("c") == 1
    assert probe.reorgs() == []


async def test_a_forked_anvil_gives_a_diverging_view_that_flip_flops_the_tip() -> None:
    probe = Probe()
    b_port = free_port()
    with anvils(1) as (a,):
        # b is down at first (the hub keeps retrying); it starts once the hub holds a's block 3
        hub = hub_for([("a", a.ws_url), ("b", f"ws://127.0.0.1:{b_port}")], probe)
        async with running(hub):
            await probe.until(lambda: hub.state("a").connected, "a connected")
            for n in range(1, 4):
                three = await mine(a, n)
            await tip_is(hub, probe, three)
            b = start_anvil("--fork-url", a.http_url, port=b_port)  # a's history up to 3
            try:
                await all_connected(hub, probe)
                a4 = await mine(a, 4)
                await tip_is(hub, probe, a4)
                b4 = await mine(b, 4, fork=5)
                await tip_is(hub, probe, b4)  # same height, announced later
                b5 = await mine(b, 5, fork=5)
                await tip_is(hub, probe, b5)
                a5 = await mine(a, 5)
                await tip_is(hub, probe, a5)  # same height again: the latest wins, back to a
                a6 = await mine(a, 6)
                await tip_is(hub, probe, a6)
            finally:
                stop_anvil(b)
    reorgs = probe.reorgs()
    assert [(r.client, r.depth, r.ancestor.number) for r in reorgs] == [("b", 1, 3), ("a", 2, 3)]
    assert [h.hash for h in reorgs[0].new] == [b4]
    assert [h.hash for h in reorgs[1].old] == [b4, b5]
    assert [h.hash for h in reorgs[1].new] == [a4, a5]
    assert hub.lag("b") == 1
    last = probe.tip_changes()[-1]
    assert type(last) is Extension and [h.hash for h in last.added] == [a6]


async def test_anvil_rollback_then_a_new_block_is_a_reorg_of_the_rolled_back_depth() -> None:
    probe = Probe()
    with anvils(1) as (node,):
        hub = hub_for([("a", node.ws_url)], probe)
        async with running(hub):
            await all_connected(hub, probe)
            for n in range(1, 7):
                await mine(node, n)
            old = await chain_hashes(node, 5, 6)
            await tip_is(hub, probe, old[-1])
            await rpc(node, "anvil_rollback", 2)  # silent: anvil announces nothing
            assert (await rpc(node, "eth_blockNumber")) == "0x4"
            replacement = await mine(node, 5, fork=1)
            await tip_is(hub, probe, replacement)
    (reorg,) = probe.reorgs()
    assert (reorg.depth, reorg.ancestor.number) == (2, 4)
    assert [h.hash for h in reorg.old] == old
    assert [h.hash for h in reorg.new] == [replacement]


async def test_after_a_lost_connection_the_next_head_backfills_the_gap_by_hash() -> None:
    probe = Probe()
    with anvils(1) as (node,):
        async with CutProxy(node.port) as proxy:
            hub = hub_for([("a", proxy.ws_url)], probe)
            async with running(hub):
                await all_connected(hub, probe)
                for n in range(1, 4):
                    await mine(node, n)
                await probe.until(lambda: probe.heads.get("a") == 3, "3 heads")
                proxy.cut()
                await probe.until(lambda: probe.disconnected_count("a") == 1, "disconnect")
                for n in range(4, 7):
                    await mine(node, n)  # announced to nobody
                proxy.restore()
                await probe.until(lambda: probe.connected_count("a") == 2, "reconnected")
                seven = await mine(node, 7)
                await tip_is(hub, probe, seven)
            missed = await chain_hashes(node, 4, 7)
    last = probe.tip_changes()[-1]
    assert type(last) is Extension
    assert [h.hash for h in last.added] == missed
    # one for the window below the first head (genesis), three for the gap
    assert hub.state("a").backfill_requests == 4
    assert probe.reorgs() == []


async def test_a_silent_socket_is_dropped_by_the_watchdog_and_the_stream_resumes() -> None:
    probe = Probe()
    with anvils(1) as (node,):
        async with CutProxy(node.port) as proxy:
            hub = hub_for([("a", proxy.ws_url)], probe, watchdog=0.3)
            async with running(hub):
                await all_connected(hub, probe)
                await mine(node, 1)
                await probe.until(lambda: probe.heads.get("a") == 1, "head 1")
                proxy.stall()  # the socket stays open; nothing comes through
                await mine(node, 2)
                await probe.until(lambda: hub.state("a").watchdog_expiries >= 1, "watchdog")
                proxy.restore()
                await probe.until(lambda: hub.state("a").connected, "reconnected")
                three = await mine(node, 3)
                await tip_is(hub, probe, three)  # 2 is backfilled by hash
    assert probe.reorgs() == []


async def test_a_restarted_anvil_with_the_same_genesis_is_a_rollback_to_its_first_block() -> None:
    """A single client whose node restarts on a fresh chain from the same genesis.

    Its first announcement is block 1 (identical to the old block 1, still in the window): with
    only one client that is a rollback, so one reorg with ``new`` empty; the blocks it mines
    next on its own branch extend from there.
    """
    probe = Probe()
    node = start_anvil("--timestamp", str(GENESIS_TIME))
    try:
        hub = hub_for([("a", node.ws_url)], probe)
        async with running(hub):
            await all_connected(hub, probe)
            for n in range(1, 6):
                await mine(node, n)
            old = await chain_hashes(node, 1, 5)
            await tip_is(hub, probe, old[-1])
            stop_anvil(node)
            await probe.until(lambda: probe.disconnected_count("a") == 1, "disconnect")
            node = start_anvil("--timestamp", str(GENESIS_TIME), port=node.port)
            await probe.until(lambda: probe.connected_count("a") == 2, "reconnected")
            assert await mine(node, 1) == old[0]
            await tip_is(hub, probe, old[0])
            two = await mine(node, 2, fork=1)
            await tip_is(hub, probe, two)
    finally:
        stop_anvil(node)
    (reorg,) = probe.reorgs()
    assert (reorg.depth, reorg.ancestor.hash, reorg.new) == (4, old[0], ())
    assert [h.hash for h in reorg.old] == old[1:]
    assert type(probe.tip_changes()[-1]) is Extension


async def test_a_restarted_anvil_on_a_new_genesis_is_a_deep_reorg_once_backfill_proves_it() -> None:
    """A restart on a different genesis shares no block with what we hold.

    Backfill walks the new chain by hash down to its genesis without meeting ours: the tracker
    must not guess, it reports a deep reorg and re-anchors on the new chain.
    """
    probe = Probe()
    node = start_anvil("--timestamp", str(GENESIS_TIME))
    try:
        hub = hub_for([("a", node.ws_url)], probe)
        async with running(hub):
            await all_connected(hub, probe)
            for n in range(1, 6):
                await mine(node, n)
            old_tip = (await chain_hashes(node, 5, 5))[0]
            await tip_is(hub, probe, old_tip)
            stop_anvil(node)
            await probe.until(lambda: probe.disconnected_count("a") == 1, "disconnect")
            node = start_anvil("--timestamp", str(GENESIS_TIME + 7), port=node.port)
            await probe.until(lambda: probe.connected_count("a") == 2, "reconnected")
            first = await mine(node, 1, fork=7)
            await tip_is(hub, probe, first)
            second = await mine(node, 2, fork=7)
            await tip_is(hub, probe, second)
    finally:
        stop_anvil(node)
    (deep,) = probe.deep_reorgs()
    assert isinstance(deep, DeepReorg)
    assert deep.old_tip is not None and deep.old_tip.hash == old_tip
    assert deep.new_tip.hash == first
    assert probe.reorgs() == []
    # the first chain's genesis (window below the first head), then the new genesis
    assert hub.state("a").backfill_requests == 2


async def test_a_second_client_restarted_on_the_same_chain_catches_up_without_reorgs() -> None:
    probe = Probe()
    with anvils(2) as (a, b):
        hub = hub_for([("a", a.ws_url), ("b", b.ws_url)], probe)
        async with running(hub):
            await all_connected(hub, probe)
            for n in range(1, 4):
                assert await mine(a, n) == await mine(b, n)
            stop_anvil(b)
            await probe.until(lambda: probe.disconnected_count("b") == 1, "b down")
            for n in range(4, 7):
                tip = await mine(a, n)
            await tip_is(hub, probe, tip)
            assert hub.lag("b") == 3  # its head stays a candidate while it is away
            restarted = start_anvil("--timestamp", str(GENESIS_TIME), port=b.port)
            try:
                await probe.until(lambda: probe.connected_count("b") == 2, "b back")
                await mine(restarted, 1)  # a fresh node: it re-announces the chain from block 1
                await probe.until(lambda: hub.lag("b") == 5, "b at block 1")
                for n in range(2, 7):
                    await mine(restarted, n)
                await probe.until(lambda: hub.lag("b") == 0, "b caught up")
            finally:
                stop_anvil(restarted)
    assert probe.reorgs() == []
    assert probe.deep_reorgs() == []
    assert hub.tracker.tip is not None and hub.tracker.tip.hash == tip

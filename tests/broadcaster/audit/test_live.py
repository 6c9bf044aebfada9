"""The live reconciler: queued from tracker events, reorg-aware, and never calls a tx foreign
before the audit copy has caught up with the enclave."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from broadcaster.audit.live import LiveReconciler
from broadcaster.audit.reconcile import BlockTx, Foreign, FullBlock
from heads.events import DeepReorg, Extension, Head, Reorg

OURS = "0x" + "aa" * 20


def head(number: int, tag: str, parent: str = "") -> Head:
    return Head(number, "0x" + tag * 32, parent or "0x" + "00" * 32)


class Chain:
    """Blocks by hash, the canonical set, the audit copy's hashes and the streamer's backlog."""

    def __init__(self) -> None:
        self.blocks: dict[str, FullBlock] = {}
        self.canonical: list[Head] = []
        self.signed: set[bytes] = set()
        self.backlog: set[bytes] = set()  # signed, but not streamed into the copy yet
        self.external: set[bytes] = set()
        self.catch_ups = 0
        self.foreign: list[Foreign] = []

    def add(self, h: Head, *txs: BlockTx) -> None:
        self.blocks[h.hash] = FullBlock(h.number, h.hash, txs, h.parent_hash)

    async def fetch(self, hashes: Sequence[str]) -> dict[str, FullBlock]:
        return {h: self.blocks[h] for h in hashes if h in self.blocks}

    async def known(self, hashes: Iterable[bytes]) -> set[bytes]:
        return {h for h in hashes if h in self.signed}

    async def ext(self, hashes: Iterable[bytes]) -> set[bytes]:
        return {h for h in hashes if h in self.external}

    async def catch_up(self) -> bool:
        self.catch_ups += 1
        self.signed |= self.backlog
        self.backlog = set()
        return True

    def reconciler(self) -> LiveReconciler:
        return LiveReconciler(
            accounts={OURS},
            fetch=self.fetch,
            signed=self.known,
            external=self.ext,
            catch_up=self.catch_up,
            on_foreign=self.foreign.append,
            canonical=lambda: self.canonical,
        )


def tx(n: int, nonce: int) -> BlockTx:
    return BlockTx(n.to_bytes(32, "big"), OURS, nonce)


def test_a_tx_signed_but_not_yet_streamed_is_ours_after_the_catch_up_not_foreign() -> None:
    async def main() -> None:
        chain = Chain()
        b1 = head(1, "01")
        chain.add(b1, tx(1, 0))
        chain.backlog = {tx(1, 0).hash}
        chain.canonical = [b1]
        rec = chain.reconciler()
        rec.on_events([Extension("a", None, (b1,))])
        assert await rec.step()
        assert chain.foreign == [] and chain.catch_ups == 1
        assert rec.checked[-1].ours == 1

    asyncio.run(main())


def test_a_reorg_rescans_the_new_branch_from_the_fork_point_and_skips_dropped_blocks() -> None:
    async def main() -> None:
        chain = Chain()
        b1, b2 = head(1, "01"), head(2, "02")
        chain.add(b1, tx(1, 0))
        chain.add(b2, tx(2, 1))
        chain.signed = {tx(1, 0).hash, tx(2, 1).hash}
        chain.canonical = [b1, b2]
        rec = chain.reconciler()
        rec.on_events([Extension("a", None, (b1, b2))])
        assert await rec.step()
        assert chain.foreign == []
        # The new branch replaces block 2 with one holding a tx at nonce 1 we never signed, and
        # adds block 3 on top; block 2 was queued again by a late client meanwhile.
        b2x, b3x = head(2, "2b"), head(3, "3b")
        chain.add(b2x, tx(99, 1))
        chain.add(b3x)
        rec.queue[b2.hash] = 0
        rec.on_events([Reorg("a", b1, (b2,), (b2x, b3x))])
        assert b2.hash not in rec.queue  # dropped blocks are not checked
        chain.canonical = [b1, b2x, b3x]
        assert await rec.step()
        assert [(f.hash, f.nonce, f.block_hash) for f in chain.foreign] == [
            (tx(99, 1).hash, 1, b2x.hash)
        ]
        assert [a.hash for a in rec.checked] == [b1.hash, b2.hash, b2x.hash, b3x.hash]

    asyncio.run(main())


def test_a_block_no_reader_has_yet_is_asked_again_and_one_off_the_chain_is_dropped() -> None:
    async def main() -> None:
        chain = Chain()
        b1, b2 = head(1, "01"), head(2, "02")
        chain.canonical = [b1, b2]
        rec = chain.reconciler()
        rec.on_events([Extension("a", None, (b1, b2))])
        assert not await rec.step()  # neither fetched yet
        assert set(rec.queue) == {b1.hash, b2.hash}
        chain.add(b1, tx(5, 0))
        chain.external = {tx(5, 0).hash}  # a journaled eth_sendRawTransaction
        chain.canonical = [b1]  # b2 left the chain before a reader had it
        assert await rec.step()
        assert rec.queue == {} and chain.foreign == []
        assert rec.checked[-1].external == 1

    asyncio.run(main())


def test_a_tx_of_ours_is_not_foreign_while_the_signer_cannot_be_caught_up_with() -> None:
    """Attack: the enclave restarts (or the socket drops) just as a block holding our newest tx
    arrives; its entry is in the enclave's log, not in the copy yet. The block stays queued
    (nothing reported, no sender stopped) until the copy catches up, then it is ours."""

    async def main() -> None:
        chain = Chain()
        b1 = head(1, "01")
        chain.add(b1, tx(1, 0))
        chain.backlog = {tx(1, 0).hash}
        chain.canonical = [b1]
        up = False

        async def catch_up() -> bool:
            chain.catch_ups += 1
            if up:
                chain.signed |= chain.backlog
            return up

        b2 = head(2, "02")
        chain.add(b2, tx(2, 1))
        chain.backlog.add(tx(2, 1).hash)
        chain.canonical = [b1, b2]
        fetched: list[str] = []

        async def fetch(hashes: Sequence[str]) -> dict[str, FullBlock]:
            fetched.extend(hashes)
            return await chain.fetch(hashes)

        rec = chain.reconciler()
        rec.catch_up, rec.fetch = catch_up, fetch
        rec.on_events([Extension("a", None, (b1, b2))])
        for _ in range(3):
            assert not await rec.step()
        assert chain.foreign == [] and set(rec.queue) == {b1.hash, b2.hash}
        assert rec.checked == []
        # A long outage costs one catch-up attempt per step and one fetch per block.
        assert chain.catch_ups == 3 and sorted(fetched) == [b1.hash, b2.hash]
        up = True
        assert await rec.step()
        assert chain.foreign == [] and [a.ours for a in rec.checked] == [1, 1]
        assert rec.fetched == {}

    asyncio.run(main())


def test_a_block_that_arrives_during_a_catch_up_is_checked_and_a_deep_reorg_rescans_it_all() -> (
    None
):
    """Block 2 (a foreign tx) arrives while block 1's catch-up is in flight; then a reorg of
    depth 2 brings a branch whose middle block holds the same foreign tx again (counted by the
    service once per sender and nonce) and whose other block holds a new one."""

    async def main() -> None:
        chain = Chain()
        b1, b2 = head(1, "01"), head(2, "02")
        chain.add(b1, tx(1, 0))
        chain.add(b2, tx(66, 1))
        chain.backlog = {tx(1, 0).hash}
        chain.canonical = [b1]
        rec = chain.reconciler()

        async def catch_up() -> bool:
            if chain.catch_ups == 0:
                chain.canonical = [b1, b2]
                rec.on_events([Extension("a", b1, (b2,))])  # arrives mid catch-up
            chain.catch_ups += 1
            chain.signed |= chain.backlog
            return True

        rec.catch_up = catch_up
        rec.on_events([Extension("a", None, (b1,))])
        while rec.queue:
            await rec.step()
        assert [(f.nonce, f.block_hash) for f in chain.foreign] == [(1, b2.hash)]
        b1x, b2x, b3x = head(1, "1b"), head(2, "2b"), head(3, "3b")
        chain.add(b1x)
        chain.add(b2x, tx(66, 1))
        chain.add(b3x, tx(67, 2))
        rec.on_events([Reorg("a", head(0, "00"), (b1, b2), (b1x, b2x, b3x))])
        chain.canonical = [b1x, b2x, b3x]
        while rec.queue:
            await rec.step()
        assert [(f.nonce, f.block_hash) for f in chain.foreign[1:]] == [
            (1, b2x.hash),
            (2, b3x.hash),
        ]

    asyncio.run(main())


def branch(chain: Chain, parent: Head, tag: str, count: int) -> list[Head]:
    """``count`` blocks on top of ``parent``, each child of the one before, added to ``chain``."""
    out: list[Head] = []
    for _ in range(count):
        below = out[-1] if out else parent
        h = head(below.number + 1, f"{tag}{below.number + 1:x}"[-2:].rjust(2, "0"), below.hash)
        chain.add(h)
        out.append(h)
    return out


def test_a_deep_reorg_walks_the_new_branch_back_to_the_fork_point_checking_every_block() -> None:
    """The tracker re-anchors on a new tip whose fork point it cannot see (a ``DeepReorg``
    names only the tip; the tracker's canonical chain is that tip alone). A foreign tx sits in
    a middle block of the new branch, not the tip: found. The walk stops at the fork point
    (block 2, checked before), never re-reading the old chain below it."""

    async def main() -> None:
        chain = Chain()
        genesis = head(0, "00")
        old = branch(chain, genesis, "a", 5)  # blocks 1-5
        chain.canonical = old
        rec = chain.reconciler()
        rec.on_events([Extension("a", genesis, tuple(old))])
        assert await rec.step()
        new = branch(chain, old[1], "c", 4)  # 3'-6' on block 2
        stolen = tx(77, 3)
        chain.add(new[1], stolen)  # block 4', a middle block of the new branch
        chain.canonical = [new[-1]]
        fetched: list[str] = []

        async def fetch(hashes: Sequence[str]) -> dict[str, FullBlock]:
            fetched.extend(hashes)
            return await chain.fetch(hashes)

        rec.fetch = fetch
        rec.on_events([DeepReorg("a", old[-1], new[-1], "ancestor_below_window")])
        while rec.queue:
            await rec.step()
        assert [(f.hash, f.block, f.block_hash) for f in chain.foreign] == [
            (stolen.hash, 4, new[1].hash)
        ]
        assert fetched == [h.hash for h in reversed(new)]  # 6', 5', 4', 3': not 2 nor 1
        assert rec.walk == {}

    asyncio.run(main())


def test_a_deep_reorg_walk_stops_below_what_was_ever_checked_and_when_its_tip_leaves() -> None:
    async def main() -> None:
        chain = Chain()
        genesis = head(0, "00")
        old = branch(chain, genesis, "a", 10)
        chain.canonical = old[6:]
        rec = chain.reconciler()
        rec.on_events([Extension("a", old[5], tuple(old[6:]))])  # checked from block 7 on
        assert await rec.step()
        new = branch(chain, old[2], "c", 9)  # 4'-12' on block 3, below anything checked
        chain.canonical = [new[-1]]
        rec.on_events([DeepReorg("a", old[-1], new[-1], "gap")])
        while rec.queue:
            await rec.step()
        # 12' down to 7': 7''s parent (6') is below the lowest height ever checked (7): no
        # block at height 6 was checked on either branch (the reconciler started at 7).
        assert [a.number for a in rec.checked[-6:]] == [12, 11, 10, 9, 8, 7]
        assert rec.checked[-7].number == 10  # the old chain's last check
        assert rec.walk == {}
        # Another deep reorg whose tip leaves the chain mid-walk: the walk is dropped.
        other = branch(chain, new[4], "e", 3)  # 9''-11''
        chain.canonical = [other[-1]]
        rec.on_events([DeepReorg("a", new[-1], other[-1], "ancestor_below_window")])
        assert not await rec.step()  # 11'' checked, its parent 10'' queued
        assert set(rec.queue) == {other[1].hash}
        chain.canonical = [new[-1]]  # back on the first branch before 10'' is read
        assert await rec.step()
        assert rec.queue == {} and rec.walk == {}
        assert rec.checked[-1].number == 11

    asyncio.run(main())


def test_a_deep_reorg_walk_over_an_endless_parent_chain_stops_at_the_walk_limit() -> None:
    """A reader feeding an endless chain of parents (each a new block one height lower, none
    the block checked there) cannot keep the reconciler walking: the walk checks
    ``WALK_LIMIT`` blocks, logs what ``broadcaster audit`` should cover, and ends."""
    from broadcaster.audit.live import WALK_LIMIT

    async def main() -> None:
        chain = Chain()
        low = head(1, "01")
        chain.add(low)
        chain.canonical = [low]
        rec = chain.reconciler()
        rec.on_events([Extension("a", head(0, "00"), (low,))])
        assert await rec.step()
        top = 10_000

        def fake(number: int) -> str:
            return "0x" + f"{number:064x}"

        async def endless(hashes: Sequence[str]) -> dict[str, FullBlock]:
            out = {}
            for h in hashes:
                n = int(h, 16)
                out[h] = FullBlock(n, h, (), fake(n - 1))
            return out

        rec.fetch = endless
        tip = Head(top, fake(top), fake(top - 1))
        chain.canonical = [tip]
        rec.on_events([DeepReorg("a", low, tip, "ancestor_below_window")])
        steps = 0
        while rec.queue:
            await rec.step()
            steps += 1
            assert steps <= WALK_LIMIT + 1
        assert rec.blocks_checked == 1 + WALK_LIMIT
        assert rec.walk == {}

    asyncio.run(main())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def waiting_reconciler(chain: Chain, journal: set[bytes], clock: Clock) -> LiveReconciler:
    async def unconfirmed(hashes: Iterable[bytes]) -> set[bytes]:
        return {h for h in hashes if h in journal}

    return LiveReconciler(
        accounts={OURS},
        fetch=chain.fetch,
        signed=chain.known,
        external=chain.ext,
        catch_up=chain.catch_up,
        on_foreign=chain.foreign.append,
        canonical=lambda: chain.canonical,
        unconfirmed=unconfirmed,
        wait_seconds=30.0,
        clock=clock,
    )


def test_after_a_failover_a_journaled_hash_waits_for_the_old_leader_s_log_then_is_ours() -> None:
    """Active/standby: the old leader's enclave signed it, its instance died before streaming
    the entry; the journal holds the attempt, so the block waits (not foreign) until that log
    reaches the copy (its instance is back, as a standby)."""

    async def main() -> None:
        chain, clock = Chain(), Clock()
        b1 = head(1, "01")
        chain.add(b1, tx(1, 0))
        chain.canonical = [b1]
        rec = waiting_reconciler(chain, {tx(1, 0).hash}, clock)
        rec.on_events([Extension("a", None, (b1,))])
        assert not await rec.step()  # waits on another log
        clock.now = 29.0
        assert not await rec.step()
        assert chain.foreign == [] and rec.blocks_checked == 0
        chain.signed.add(tx(1, 0).hash)  # the old leader's log arrives in the copy
        assert await rec.step()
        assert chain.foreign == [] and rec.checked[-1].ours == 1 and rec.waiting == {}

    asyncio.run(main())


def test_a_journaled_hash_no_log_ever_brings_is_foreign_after_the_wait() -> None:
    """The journal is the host's: a forged attempt row delays the finding, never hides it."""

    async def main() -> None:
        chain, clock = Chain(), Clock()
        b1 = head(1, "01")
        chain.add(b1, tx(1, 0))
        chain.canonical = [b1]
        rec = waiting_reconciler(chain, {tx(1, 0).hash}, clock)
        rec.on_events([Extension("a", None, (b1,))])
        assert not await rec.step()
        clock.now = 30.0
        assert await rec.step()
        assert [f.hash for f in chain.foreign] == [tx(1, 0).hash]

    asyncio.run(main())


def test_a_hash_the_journal_does_not_hold_is_foreign_at_once_also_with_a_standby() -> None:
    async def main() -> None:
        chain, clock = Chain(), Clock()
        b1 = head(1, "01")
        chain.add(b1, tx(1, 0))
        chain.canonical = [b1]
        rec = waiting_reconciler(chain, set(), clock)
        rec.on_events([Extension("a", None, (b1,))])
        assert await rec.step()
        assert [f.hash for f in chain.foreign] == [tx(1, 0).hash]

    asyncio.run(main())


def test_a_new_leader_checks_its_canonical_window_blocks_nobody_checked() -> None:
    async def main() -> None:
        chain = Chain()
        b1, b2 = head(1, "01"), head(2, "02", "0x" + "01" * 32)
        chain.add(b1, tx(1, 0))
        chain.add(b2, tx(2, 1))
        chain.signed = {tx(1, 0).hash}
        chain.canonical = [b1, b2]
        rec = chain.reconciler()
        rec.check_window(chain.canonical)
        assert await rec.step()
        assert rec.blocks_checked == 2 and [f.nonce for f in chain.foreign] == [1]

    asyncio.run(main())


def test_a_block_waiting_on_another_log_holds_no_later_block_back() -> None:
    """A liar host journals an attempt row for a foreign tx: its block waits. A later block with
    a plainly foreign tx (not journaled) is still found at its first check, not after the wait
    (stop_signing_on_foreign stays prompt); and blocks that each hold such a tx wait side by
    side, not one after another (N of them cannot delay the last finding N times the wait)."""

    async def main() -> None:
        chain, clock = Chain(), Clock()
        b1, b2 = head(1, "01"), head(2, "02", "0x" + "01" * 32)
        b3 = head(3, "03", "0x" + "02" * 32)
        chain.add(b1, tx(1, 0))  # journaled by the liar, in no log
        chain.add(b2, tx(2, 1))  # journaled by the liar, in no log
        chain.add(b3, tx(3, 2))  # not journaled: foreign at once
        chain.canonical = [b1, b2, b3]
        rec = waiting_reconciler(chain, {tx(1, 0).hash, tx(2, 1).hash}, clock)
        rec.on_events([Extension("a", None, (b1, b2, b3))])
        assert not await rec.step()
        assert [f.nonce for f in chain.foreign] == [2]
        clock.now = 30.0
        assert await rec.step()
        assert sorted(f.nonce for f in chain.foreign) == [0, 1, 2]

    asyncio.run(main())

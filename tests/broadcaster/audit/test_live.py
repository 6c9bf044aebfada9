"""The live reconciler: queued from tracker events, reorg-aware, and never calls a tx foreign
before the audit copy has caught up with the enclave."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from broadcaster.audit.live import LiveReconciler
from broadcaster.audit.reconcile import BlockTx, Foreign, FullBlock
from heads.events import Extension, Head, Reorg

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
        self.blocks[h.hash] = FullBlock(h.number, h.hash, txs)

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

"""The live reconciler: every canonical block checked against the verified audit log (DESIGN §6a).

The tracker's events feed :meth:`LiveReconciler.on_events` (synchronous, after the tx manager
has reacted: it only queues block hashes). Its own task fetches each queued block with its
transactions (``eth_getBlockByHash(h, true)``, batched, from the head clients and public RPCs,
never a private or builder endpoint) and classifies the transactions from our accounts with
:func:`broadcaster.audit.reconcile.plan_block`. A hash the audit copy does not hold yet is not
foreign at once: the streamer first fetches the enclave's newest entries (a transaction can be
mined before its entry is streamed), then the block is classified again.

Reorg-aware: a reorg queues every block of the new branch, from the fork point up; a block that
is no longer canonical when its turn comes is skipped; a foreign transaction found in a dropped
block and again in its replacement is reported once (``ForeignReport`` keys on sender and nonce).

A *deep* reorg (the tracker re-anchored on a new tip whose fork point it cannot see: below its
window, or ancestry it never received) names only the new tip. The reconciler then walks the
new branch back itself, parent by parent (a verified block's ``parentHash`` is bound by its
header hash), checking each block, until a parent is the block it checked at that height (the
fork point), it reaches below the lowest block it ever checked, or :data:`WALK_LIMIT` blocks
(then it logs what `broadcaster audit` should cover). A walked block is not canonical in the
tracker's window; it is checked while the tip it descends from is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence

from broadcaster.audit.reconcile import BlockAudit, Foreign, FullBlock, ours_in, plan_block
from broadcaster.rpc.chain_reader import ChainReadError
from heads.events import DeepReorg, Event, Extension, Head, Reorg

__all__ = ["LiveReconciler"]

log = logging.getLogger(__name__)

FETCH_RETRIES = 200
"""Times a queued block is asked for again (every ``retry_delay``) while no reader has it."""

WAIT_SECONDS = 120.0
"""Longest a block waits on another instance's log (active/standby, see ``check``)."""

WALK_LIMIT = 1024
"""Most blocks one deep reorg's walk back checks (and heights remembered to find a fork point)."""


class LiveReconciler:
    def __init__(
        self,
        *,
        accounts: Collection[str],
        fetch: Callable[[Sequence[str]], Awaitable[dict[str, FullBlock]]],
        signed: Callable[[Iterable[bytes]], Awaitable[set[bytes]]],
        external: Callable[[Iterable[bytes]], Awaitable[set[bytes]]],
        catch_up: Callable[[], Awaitable[bool]],
        on_foreign: Callable[[Foreign], object],
        canonical: Callable[[], Iterable[Head]],
        on_checked: Callable[[BlockAudit], None] | None = None,
        retry_delay: float = 0.1,
        unconfirmed: Callable[[Iterable[bytes]], Awaitable[set[bytes]]] | None = None,
        wait_seconds: float = WAIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_checked = on_checked or (lambda audit: None)
        self.accounts = {a.lower() for a in accounts}
        self.fetch = fetch
        self.signed = signed
        self.external = external
        self.catch_up = catch_up
        self.on_foreign = on_foreign
        self.canonical = canonical
        self.retry_delay = retry_delay
        self.queue: dict[str, int] = {}  # block hash -> fetch attempts so far
        # Fetched, not decided yet (the copy could not catch up): not fetched again.
        self.fetched: dict[str, FullBlock] = {}
        self.checked: list[BlockAudit] = []  # the newest few, for tests and /healthz
        self.blocks_checked = 0
        # Height -> hash of the block last checked there (the newest WALK_LIMIT heights): where
        # a deep reorg's walk back stops (its fork point).
        self.heights: dict[int, str] = {}
        # A deep reorg's walk: block hash -> (the tip it descends from, blocks walked so far).
        self.walk: dict[str, tuple[str, int]] = {}
        # Active/standby: hashes of ours another instance's log may still bring (see check()).
        self.unconfirmed = unconfirmed
        self.wait_seconds = wait_seconds
        self.clock = clock
        self.waiting: dict[str, float] = {}  # block hash -> when it first waited on another log
        self._wake = asyncio.Event()

    def check_window(self, heads: Iterable[Head]) -> None:
        """Queue ``heads`` (a new leader's canonical window at takeover: blocks mined while no
        instance led were reconciled by nobody)."""
        for head in heads:
            self.queue.setdefault(head.hash, 0)
        if self.queue:
            self._wake.set()

    def on_events(self, events: Sequence[Event]) -> None:
        """Queue the blocks that joined the canonical chain (cheap; called on the event path)."""
        queued = False
        for event in events:
            kind = type(event)
            if kind is Extension:
                for head in event.added:  # type: ignore[union-attr]
                    self.queue.setdefault(head.hash, 0)
                    queued = True
            elif kind is Reorg:
                assert isinstance(event, Reorg)
                for head in event.old:
                    self.queue.pop(head.hash, None)
                    self.fetched.pop(head.hash, None)
                for head in event.new:  # the rescan from the fork point
                    self.queue.setdefault(head.hash, 0)
                    queued = True
            elif kind is DeepReorg:
                assert isinstance(event, DeepReorg)
                tip = event.new_tip
                log.warning(
                    "deep reorg (%s) to #%d %s: the reconciler walks the new branch back to the"
                    " fork point",
                    event.reason,
                    tip.number,
                    tip.hash,
                )
                self.queue.setdefault(tip.hash, 0)
                self.walk[tip.hash] = (tip.hash, 0)
                queued = True
        if queued:
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                if not await self.step():
                    await asyncio.sleep(self.retry_delay)

    async def step(self) -> bool:
        """Check every queued block a reader has; ``False`` when some must be asked again."""
        wanted = list(self.queue)
        blocks = {h: self.fetched[h] for h in wanted if h in self.fetched}
        missing = [h for h in wanted if h not in blocks]
        try:
            if missing:
                blocks.update(await self.fetch(missing))
        except ChainReadError as exc:
            log.warning("reconciler: blocks not fetched: %s", exc)
        canonical = {h.hash for h in self.canonical()}
        behind = False  # a catch-up failed this step: the rest waits for the next one
        for block_hash in wanted:
            block = blocks.get(block_hash)
            walked = self.walk.get(block_hash)
            if (walked[0] if walked is not None else block_hash) not in canonical:
                self.queue.pop(block_hash, None)  # left the chain before its turn
                self.fetched.pop(block_hash, None)
                self.walk.pop(block_hash, None)
                self.waiting.pop(block_hash, None)
                continue
            if block is None:
                tries = self.queue[block_hash] = self.queue.get(block_hash, 0) + 1
                if tries >= FETCH_RETRIES:
                    log.error("reconciler: block %s never fetched; not checked", block_hash)
                    self.queue.pop(block_hash, None)
                    self.walk.pop(block_hash, None)
                continue
            if behind or await self.check(block) is None:
                # The copy could not catch up: asked again (not fetched again), never called
                # foreign; one catch-up attempt per step, however many blocks wait. A block
                # that waits on another instance's log holds no later block back (each waits
                # on its own clock: a foreign tx behind it is still found at once).
                behind = behind or block_hash not in self.waiting
                self.fetched[block_hash] = block
                continue
            self.queue.pop(block_hash, None)
            self.fetched.pop(block_hash, None)
            if walked is not None:
                self._walk_on(block, *walked)
        return not self.queue

    def _walk_on(self, block: FullBlock, tip: str, walked: int) -> None:
        """``block`` of a deep reorg's new branch was checked: queue its parent, unless that is
        the fork point (the block checked at its height) or the walk ends."""
        del self.walk[block.hash]
        parent, height = block.parent_hash, block.number - 1
        lowest = min(self.heights, default=height + 1)
        if not parent or height < 0 or self.heights.get(height) == parent:
            return  # the fork point (or genesis): the new branch is checked
        if height < lowest:
            log.warning(
                "deep reorg: walked down to #%d, below every block checked before; run"
                " `broadcaster audit` below it if blocks of ours may be there",
                block.number,
            )
            return
        if walked + 1 >= WALK_LIMIT:
            log.error(
                "deep reorg: %d blocks walked back from %s without the fork point; run"
                " `broadcaster audit --to-block %d`",
                WALK_LIMIT,
                tip,
                height,
            )
            return
        self.queue.setdefault(parent, 0)
        self.walk[parent] = (tip, walked + 1)

    async def _waits_on_another_log(
        self, block: FullBlock, unknown: list[bytes], signed: set[bytes], external: set[bytes]
    ) -> bool:
        """With active/standby instances a hash no verified log holds may be one the previous
        leader's enclave signed and its instance never streamed (it died first): its log comes
        into the copy once that instance is back (a standby streams its own enclave's log). A
        hash the journal holds as an attempt of ours (``unconfirmed``) therefore waits, at most
        ``wait_seconds`` per block, before it is called foreign. The journal is the host's: it
        can delay a finding by that long, never hide one."""
        if self.unconfirmed is None:
            return False
        rest = [h for h in unknown if h not in signed and h not in external]
        if not rest or not await self.unconfirmed(rest):
            return False
        first = self.waiting.setdefault(block.hash, self.clock())
        if self.clock() - first < self.wait_seconds:
            return True
        log.error(
            "reconciler: block %d holds transactions the journal says we signed that no verified"
            " log holds after %.0f s: foreign",
            block.number,
            self.wait_seconds,
        )
        return False

    async def check(self, block: FullBlock) -> BlockAudit | None:
        """Classify ``block``; ``None`` (nothing reported, the block stays queued) when it holds
        a hash the copy lacks and the copy could not catch up with the enclave (the signer did
        not answer: a reconnect, a restarted enclave): that hash may well be ours."""
        mine = [tx.hash for tx in ours_in(block, self.accounts)]
        signed: set[bytes] = set()
        external: set[bytes] = set()
        if mine:
            signed = await self.signed(mine)
            unknown = [h for h in mine if h not in signed]
            if unknown:
                external = await self.external(unknown)
                if any(h not in external for h in unknown):
                    # Entries not streamed yet? Fetch them, then decide; ``catch_up`` is
                    # ``False`` when the copy is not complete (a refused log is complete: it
                    # takes nothing more, and what it lacks is foreign).
                    if not await self.catch_up():
                        return None
                    signed |= await self.signed(unknown)
                    if await self._waits_on_another_log(block, unknown, signed, external):
                        return None
        self.waiting.pop(block.hash, None)
        audit = plan_block(block, self.accounts, signed, external)
        self.blocks_checked += 1
        heights = self.heights
        heights[block.number] = block.hash
        if len(heights) > WALK_LIMIT:
            del heights[min(heights)]
        self.checked = [*self.checked[-63:], audit]
        self.on_checked(audit)
        for found in audit.foreign:
            log.error(
                "foreign transaction 0x%s from %s (nonce %d) in block %d",
                found.hash.hex(),
                found.sender,
                found.nonce,
                found.block,
            )
            self.on_foreign(found)
        return audit

"""Chain events in, replacements out: the reorg reaction and what every new tip asks for.

The reorg reaction is the hot path (DESIGN.md §5, §8). ``ChainFollower.on_chain`` runs
synchronously in the task that read the head frame: ``NonceBook.on_reorg`` finds our records in
the dropped blocks (no block bodies needed), ``plans.plan_reorg`` decides what each needs, and
the replacements signed ahead go to the fan-out at once, which writes them to every RPC before
returning. Records without one are re-signed at once in a task; a sender's later nonces wait
behind its first unsigned one. ``broadcaster_reaction_seconds`` measures the head frame's
arrival to the last of those writes. Nothing on the way waits on disk.

A dropped transaction is re-sent even if the new branch happens to hold it too: learning that
needs the new blocks' bodies (a round trip), and a replacement at a used nonce can never be
mined, so acting first costs a signature and some "nonce too low" answers, while waiting would
cost every truly dropped transaction that round trip.

The base fee the re-signs are priced with comes only from the canonical tip (``Head.base_fee``,
from a verified header): never from a rejected, held, backfilled or side-branch header.

Every tip move also runs: finality (our blocks ``finality_depth`` deep), the recheck of what
stalls (``REBROADCAST_BLOCKS``), and ``validUntilBlock`` expiry, judged only once the tip block
was searched for our transactions (a tx mined in exactly its ``validUntilBlock`` is never told
``expired``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from broadcaster.tx.executor import Executor, Reaction, Send, retry_delays
from broadcaster.tx.inclusion import InclusionTracker, noop_reason
from broadcaster.tx.ledger import AttemptLedger
from broadcaster.tx.nonces import NonceSync, Retention
from broadcaster.tx.plans import (
    ExpireUnsigned,
    Rebroadcast,
    ReplaceExpired,
    Resign,
    SendPresigned,
    plan_expiry,
    plan_reorg,
)
from broadcaster.tx.reasons import ResendReason
from broadcaster.tx.seams import TxObserver
from broadcaster.tx.view import Background, ChainView
from heads.events import DeepReorg, Event, Extension, Head, Reorg
from nonce import AttemptReason, NonceBook, TxRecord, TxState
from nonce.state import GIVEN_UP_STATES

__all__ = ["REBROADCAST_BLOCKS", "ChainFollower"]

log = logging.getLogger(__name__)

_S = TxState

REBROADCAST_BLOCKS = 2
"""A signed transaction not mined this many blocks after it went out is sent again, byte for
byte: a node may have dropped it (pool eviction, a restart, a reorg it did not re-inject)."""


class ChainFollower:
    """Follows the tracker's events (see the module docstring)."""

    def __init__(
        self,
        *,
        book: NonceBook,
        ledger: AttemptLedger,
        view: ChainView,
        executor: Executor,
        inclusion: InclusionTracker,
        nonces: NonceSync,
        retention: Retention,
        observer: TxObserver,
        background: Background,
        reconcile: Callable[[Sequence[str], int], Awaitable[Any]],
        endpoints: int,
        clock: Callable[[], float] = time.time,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
        after_reaction: Callable[[], None] | None = None,
    ) -> None:
        self.book = book
        self.ledger = ledger
        self.view = view
        self.executor = executor
        self.inclusion = inclusion
        self.nonces = nonces
        self.retention = retention
        self.observer = observer
        self.background = background
        self.reconcile = reconcile
        self.endpoints = endpoints
        self.clock = clock
        self.clock_ns = clock_ns
        # Called right after a reorg reaction's last write (the service passes os.sched_yield
        # when [cpu] yield_after_reaction is on: see broadcaster.scheduling).
        self.after_reaction = after_reaction
        self.presigned_sent = 0  # reorg replacements that went out with no signer round trip
        self._stall_checked = -1

    # -- chain events ----------------------------------------------------------------------------

    def on_chain(self, events: list[Event], recv_ns: int) -> None:
        """Every tracker event of one frame, in order (synchronously, in the reading task);
        ``recv_ns``: when the frame was read (``perf_counter_ns``), where a reaction's clock
        starts."""
        for event in events:
            kind = type(event)
            if kind is Reorg:
                assert isinstance(event, Reorg)
                self._take_base_fee(event.tip)
                self._on_reorg(event, recv_ns)
            elif kind is Extension:
                assert isinstance(event, Extension)
                self._take_base_fee(event.tip)
                self._on_extension(event)
            elif kind is DeepReorg:
                assert isinstance(event, DeepReorg)
                self._take_base_fee(event.tip)
                self._on_deep_reorg(event)

    def _take_base_fee(self, tip: Head) -> None:
        if tip.base_fee is not None:
            self.view.base_fee = tip.base_fee

    def _on_reorg(self, event: Reorg, recv_ns: int) -> None:
        dropped = self._react([b.hash for b in event.old], event.tip.number, recv_ns)
        view = self.view
        view.window.reorg(event)
        view.tip = event.tip
        self.inclusion.enqueue(event.new)
        self.after_tip_move()
        for sender in {r.sender for r in dropped}:
            self.nonces.want(sender)

    def _react(self, old_blocks: list[str], tip_number: int, recv_ns: int) -> list[TxRecord]:
        """Re-send what ``old_blocks`` held of ours (the reaction); returns the dropped records.

        ``recv_ns`` 0: not a head frame's reaction (nothing to measure).
        """
        book = self.book
        book.defer_announcements()  # the writes first; observers hear of it right after
        ready: list[Send] = []
        dropped: list[TxRecord] = []
        try:
            dropped = book.on_reorg(old_blocks, now=self.clock())
            if dropped:
                actions = plan_reorg(
                    dropped,
                    next_block=tip_number + 1,
                    base_fee=self.view.base_fee,
                    presigned_for=self.ledger.presigned,
                    take_presigned=self.ledger.take_presigned,
                )
                reaction = Reaction(
                    recv_ns, len(dropped), len(actions) * self.endpoints, self._done
                )
                ready = [
                    Send(a.record, a.attempt, reaction, urgent=True)
                    for a in actions
                    if type(a) is SendPresigned
                ]
                if ready:
                    self._send_presigned(ready, tip_number)
                slow = [a for a in actions if not isinstance(a, SendPresigned)]
                if slow:
                    self.background.spawn(self._resend_all(slow, reaction))
        finally:
            book.announce()
        for send in ready:
            self.observer.resend(ResendReason.REORG.value)
            self.observer.status(send.record, "resent")
        return dropped

    def _send_presigned(self, ready: list[Send], tip_number: int) -> None:
        """Write the replacements signed ahead: one request per RPC for all of them.

        The bytes go to the fan-out first and the book learns of them right after: the writes
        are the reaction, the bookkeeping (journal entries included) is not.
        """
        ledger = self.ledger
        for send in ready:
            ledger.sent(send.attempt.hash, tip_number)
        done = self.executor.fanout.submit_many([(s.attempt.raw, s.attempt.hash, s) for s in ready])
        ready[0].reaction.took(done)  # type: ignore[union-attr]  # every one carries it
        now = self.clock()
        for index, send in enumerate(ready):
            record = send.record
            self.book.add_attempt(record, send.attempt)
            self.presigned_sent += 1
            if index < done.written_items:
                send.written = True
            if record.state is _S.REORGED:
                new_state = _S.BROADCAST if send.written else _S.SIGNED
                self.book.transition(record, new_state, reason="re-signed ahead", now=now)

    async def _resend_all(self, actions: list[Resign | Rebroadcast], reaction: Reaction) -> None:
        """The slow part of a reaction, in (sender, nonce) order: a sender's nonces keep theirs."""
        for action in actions:
            if type(action) is Rebroadcast:
                assert isinstance(action, Rebroadcast)
                self.executor.send(
                    action.record,
                    action.attempt,
                    reason=ResendReason(action.reason),
                    reaction=reaction,
                )
                continue
            assert isinstance(action, Resign)
            if not await self._resign(action, reaction):
                self.writes_missed(reaction, self.endpoints)
                self.background.spawn(self._resign_later(action))

    async def _resign_later(self, action: Resign) -> None:
        """A re-sign the signer could not make during the reaction (down, rate limited): try
        again with backoff until it is made, or something newer was signed at the nonce, or the
        chain holds one of ours there (the earlier bytes meanwhile go out again unchanged at each
        stall recheck: valid while the nonce is unused)."""
        record = action.record
        dropped = record.latest
        for delay in retry_delays():
            await asyncio.sleep(delay)
            if record.block is not None or record.settled or record.released:
                return
            if record.latest is not dropped:
                return
            if await self._resign(action, None):
                return

    async def _resign(self, action: Resign, reaction: Reaction | None) -> bool:
        record = action.record
        if record.state not in (_S.REORGED, *GIVEN_UP_STATES) or record.block is not None:
            return False  # meanwhile found in a new canonical block: nothing to send
        if not action.noop:
            sent = await self.executor.sign_and_send(record, AttemptReason.REORG, reaction)
            return sent is not None
        # A noop (never the payload again); retried at the next head (plan_expiry) or by the
        # stall recheck when it cannot be signed now.
        reason = action.reason
        if reason is AttemptReason.REORG:
            reason = noop_reason(record)
        return await self.executor.noop(
            record, reason, final=_noop_state(record, reason), reaction=reaction
        )

    # -- the reaction's clock --------------------------------------------------------------------

    def writes_missed(self, reaction: Reaction, count: int) -> None:
        """``count`` expected writes will not happen (nothing to send for an action)."""
        reaction.settle(count, self.clock_ns())

    def _done(self, reaction: Reaction, end_ns: int) -> None:
        if reaction.recv_ns:
            if self.after_reaction is not None:
                self.after_reaction()
            self.observer.reaction((end_ns - reaction.recv_ns) / 1e9, reaction.dropped)
            reaction.recv_ns = 0  # reported once

    # -- extensions and re-anchors ---------------------------------------------------------------

    def _on_extension(self, event: Extension) -> None:
        self.view.window.extend(event)
        self.view.tip = event.tip
        self.inclusion.enqueue(event.added)
        self.after_tip_move()

    def _on_deep_reorg(self, event: DeepReorg) -> None:
        log.error(
            "deep reorg (%s): tip %s -> %d %s; reconciling every open transaction with the chain",
            event.reason,
            event.old_tip.number if event.old_tip else None,
            event.new_tip.number,
            event.new_tip.hash,
        )
        self.observer.alert("deep_reorg", event.reason)
        self.view.window.reset(event.new_tip)
        self.view.tip = event.new_tip
        self.background.spawn(self._reconcile_after_deep_reorg(event.new_tip.number))

    async def _reconcile_after_deep_reorg(self, head: int) -> None:
        # Inclusions we hold may be in blocks that no longer exist: ask the chain for each.
        now = self.clock()
        for record in list(self.book.all_records()):
            if record.state is _S.INCLUDED and not record.settled:
                self.book.transition(record, _S.REORGED, reason="deep reorg: recheck", now=now)
        await self.reconcile(self.book.senders(), head)

    # -- every tip move --------------------------------------------------------------------------

    def after_tip_move(self) -> None:
        tip = self.view.tip
        if tip is None:
            return
        orphans = self.view.orphaned_holds()
        if orphans:
            log.warning(
                "our inclusions in %d block(s) off the canonical chain: re-sending", len(orphans)
            )
            for record in self._react(orphans, tip.number, 0):
                self.nonces.want(record.sender)
        now = self.clock()
        for block_hash in self.view.window.final_blocks():
            for record in self.book.finalize(block_hash, now=now):
                self.retention.settle(record)
        open_records = self.inclusion.open_records()  # once per tip move: it sorts every slot
        if tip.number > self._stall_checked:
            self._stall_checked = tip.number
            self._rebroadcast_stalled(tip.number, open_records)
        scanned = self.view.window.scanned
        for action in plan_expiry(open_records, next_block=tip.number + 1, scanned=scanned):
            record = action.record
            if type(action) is ExpireUnsigned:
                self.executor.give_up(
                    record, _S.EXPIRED, "validUntilBlock passed before it was signed"
                )
            else:
                assert isinstance(action, ReplaceExpired)
                self.background.spawn(self._expire(record))
        self.observer.pending(self.book.pending_counts())

    async def _expire(self, record: TxRecord) -> None:
        await self.executor.noop(record, AttemptReason.EXPIRED_REPLACEMENT, final=_S.EXPIRED)

    def _rebroadcast_stalled(self, tip_number: int, open_records: list[TxRecord]) -> None:
        """Recheck what went out ``REBROADCAST_BLOCKS`` ago and is not known to be mined."""
        stalled = []
        for record in open_records:
            latest = record.latest
            if latest is None or record.block is not None or record.state is _S.PENDING:
                continue
            if record.settled or record.released:
                continue
            if not latest.is_noop and (
                record.state in GIVEN_UP_STATES or record.intent.expired_at(tip_number + 1)
            ):
                continue  # a given-up or expired payload is never pushed again
            sent = self.ledger.sent_at(latest.hash)
            if sent is None or tip_number - sent >= REBROADCAST_BLOCKS:
                self.ledger.sent(latest.hash, tip_number)  # one recheck per stall period
                stalled.append(record)
        if stalled:
            self.background.spawn(self.inclusion.recheck(stalled, resend=True))

    async def inclusion_worker(self) -> None:
        """Scan queued canonical blocks for our transactions; every pass is a tip move."""
        inclusion = self.inclusion
        while True:
            await inclusion.wakeup.wait()
            inclusion.wakeup.clear()
            if not inclusion.queue:
                continue
            await inclusion.scan_queued()
            if inclusion.queue:
                await asyncio.sleep(0.05)
                inclusion.wakeup.set()
            self.after_tip_move()


def _noop_state(record: TxRecord, reason: AttemptReason) -> TxState:
    """The status a record has once a noop at its nonce is signed: the given-up state it is in,
    or, for one whose payload the chain had mined and a reorg dropped again, the state its noop
    stands for (an expiry's: expired; a cancel's: cancelled; a gap's: failed)."""
    if record.state in GIVEN_UP_STATES:
        return record.state
    if reason is AttemptReason.EXPIRED_REPLACEMENT:
        return _S.EXPIRED
    if reason is AttemptReason.CANCEL:
        return _S.CANCELLED
    return _S.FAILED

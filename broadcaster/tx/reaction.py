"""The tx manager's reaction to chain events: reorgs, extensions, deep reorgs (DESIGN.md §5).

The reorg reaction is the hot path. ``on_chain`` runs synchronously in the task that read the
head frame: ``NonceBook.on_reorg`` finds our records in the dropped blocks (no block bodies
needed), ``plans.plan_reorg`` decides what each needs, and the replacements signed ahead of need
(fees bumped past geth's replace rule and over the new base fee) go to the fan-out at once, which
writes them to every RPC before returning. Records without one are re-signed at once in a task; a
sender's later nonces wait behind its first unsigned one. ``broadcaster_reaction_seconds``
measures the head frame's arrival to the last of those writes. Nothing on the way waits on disk.

A dropped transaction is re-sent even if the new branch happens to hold it too: learning that
needs the new blocks' bodies (a round trip), and a replacement at a used nonce can never be
mined, so acting first costs a signature and some "nonce too low" answers, while waiting would
cost every truly dropped transaction that round trip. Inclusion tracking then marks it
``included`` in its new block.

The base fee the re-signs are priced with comes only from the canonical tip (``Head.base_fee``,
from a verified header): never from a rejected, held, backfilled or side-branch header.

Also here: inclusion tracking (canonical blocks' transaction lists, fetched in batches),
finality, ``validUntilBlock`` expiry (judged only once the tip block was searched for our
transactions), replacements signed ahead, the recheck of transactions that stall (receipts in
canonical blocks, then the same bytes again), and foreign transactions at our nonces.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from broadcaster.rpc.chain_reader import ChainReadError
from broadcaster.tx.core import (
    REBROADCAST_BLOCKS,
    SignRefused,
    TxCore,
    _allowed,
    _Reaction,
    _Send,
)
from broadcaster.tx.ledger import Presigned
from broadcaster.tx.plans import (
    ExpireUnsigned,
    Rebroadcast,
    ReplaceExpired,
    Resign,
    SendPresigned,
    plan_expiry,
    plan_reorg,
)
from heads.events import DeepReorg, Event, Extension, Head, Reorg
from nonce import Attempt, AttemptReason, BlockRef, TxRecord, TxState
from nonce.fees import BASE_FEE_HEADROOM
from nonce.state import GIVEN_UP_STATES

__all__ = ["ChainReactions"]

log = logging.getLogger(__name__)

_S = TxState


class ChainReactions(TxCore):
    """Chain events in, replacements and inclusion facts out (see the module docstring)."""

    # -- chain events --------------------------------------------------------------------------

    def on_chain(
        self,
        events: list[Event],
        client: str,
        recv_ns: int,
        header: Mapping[str, Any] | None = None,
    ) -> None:
        """Called by the head hub for every frame that changed something (synchronously).

        ``header`` is not read: the base fee comes from the new canonical tip only.
        """
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
            self.base_fee = tip.base_fee

    def _on_reorg(self, event: Reorg, recv_ns: int) -> None:
        now = self._clock()
        dropped = self.book.on_reorg([b.hash for b in event.old], now=now)
        self.window.reorg(event)
        self.tip = event.tip
        self._scanned_tip = None
        if dropped:
            tip_number = event.tip.number
            actions = plan_reorg(
                dropped,
                next_block=tip_number + 1,
                base_fee=self.base_fee,
                take_presigned=self.ledger.take_presigned,
            )
            reaction = _Reaction(recv_ns, len(dropped), len(actions) * self._endpoints)
            ready = [
                _Send(a.record, a.attempt, reaction) for a in actions if type(a) is SendPresigned
            ]
            if ready:
                self._send_presigned(ready, tip_number)
            slow = [a for a in actions if not isinstance(a, SendPresigned)]
            if slow:
                self._spawn(self._resend_all(slow, reaction))
            for send in ready:
                self.observer.resend(AttemptReason.REORG.value)
                self.observer.status(send.record, "resent")
        self._queue_scan(event.new)
        self._after_tip_move()
        for sender in {r.sender for r in dropped}:
            self._want_resync(sender)

    def presigned_for(self, record: TxRecord) -> bool:
        """A replacement for ``record``'s latest attempt is signed and waiting."""
        return self._presigned_of(record) is not None

    def _send_presigned(self, ready: list[_Send], tip_number: int) -> None:
        """Write the replacements signed ahead: one request per RPC for all of them.

        The bytes go to the fan-out first and the book learns of them right after: the writes
        are the reaction, the bookkeeping (journal entries included) is not.
        """
        ledger = self.ledger
        for send in ready:
            ledger.sent(send.attempt.hash, tip_number)
        self.fanout.submit_many([(s.attempt.raw, s.attempt.hash, s) for s in ready])
        now = self._clock()
        for send in ready:
            record = send.record
            self.book.add_attempt(record, send.attempt)
            self.presigned_sent += 1
            if record.state is _S.REORGED:
                new_state = _S.BROADCAST if send.written else _S.SIGNED
                self.book.transition(record, new_state, reason="re-signed ahead", now=now)

    def _presign_replacement(self, record: TxRecord) -> None:
        """Sign, in the background, what a reorg dropping ``record``'s attempt would send."""
        latest = record.latest
        if (
            self.presign
            and latest is not None
            and self.ledger.presigned(latest.hash) is None
            and not record.intent.external
        ):
            self._spawn(self._presign(record, latest))

    async def _presign(self, record: TxRecord, latest: Attempt) -> None:
        noop = (record.has_noop or record.state in GIVEN_UP_STATES) and not record.intent.noop
        async with self._lock(record):
            if record.latest is not latest or self.ledger.presigned(latest.hash) is not None:
                return
            fees = self._fees_for(record, noop=noop)
            if fees is None:
                return
            try:
                signed = await self._sign(record, fees, noop=noop)
            except SignRefused:
                return
        if signed is None or record.latest is not latest or record.block is None:
            return
        reason = _noop_reason(record) if noop else AttemptReason.REORG
        attempt = self._signed_attempt(record, signed, fees, reason)
        # Good while maxFeePerGas >= 2 * baseFee + tip still holds (nonce.fees' floor).
        max_base_fee = (fees.max_fee_per_gas - fees.max_priority_fee_per_gas) // BASE_FEE_HEADROOM
        if record.intent.tx_type in (0, 1) and not noop:
            max_base_fee = fees.max_fee_per_gas  # a gasPrice is good while it covers the base fee
        self.ledger.presign(latest.hash, Presigned(attempt, fees, max_base_fee))

    async def _resend_all(self, actions: list[Resign | Rebroadcast], reaction: _Reaction) -> None:
        """Carry out the slow part of a reaction; sends keep each sender's nonce order."""
        for action in actions:  # sorted by (sender, nonce): a sender's nonces go out in order
            if type(action) is Rebroadcast:
                assert isinstance(action, Rebroadcast)
                self._send(action.record, action.attempt, reason=action.reason, reaction=reaction)
                continue
            assert isinstance(action, Resign)
            sent = await self._resign(action, reaction)
            if not sent:
                reaction.writes_left -= self._endpoints
                self._maybe_reaction_done(reaction)

    async def _resign(self, action: Resign, reaction: _Reaction) -> bool:
        record = action.record
        if record.state not in (_S.REORGED, *GIVEN_UP_STATES) or record.block is not None:
            return False  # meanwhile found in a new canonical block: nothing to send
        if not action.noop:
            return await self._sign_and_send(record, AttemptReason.REORG, reaction) is not None
        final = _noop_state(record, action.reason)
        async with self._lock(record):
            fees = self._fees_for(record, noop=True)
            if fees is None:
                return False
            try:
                signed = await self._sign(record, fees, noop=True)
            except SignRefused:
                signed = None
            if signed is None:
                # Retried at the next head (plan_expiry) or by the stall recheck; the payload is
                # never sent again.
                return False
            attempt = self._record_attempt(record, signed, fees, action.reason)
            if final is not record.state and final in _allowed(record):
                self.book.transition(record, final, reason=action.reason.value, now=self._clock())
            self._send(record, attempt, reason=action.reason.value, reaction=reaction)
            return True

    def _maybe_reaction_done(self, reaction: _Reaction, written_ns: int | None = None) -> None:
        if reaction.writes_left <= 0 and reaction.recv_ns:
            end = written_ns if written_ns is not None else self._clock_ns()
            if self._after_reaction is not None:
                self._after_reaction()
            self.observer.reaction((end - reaction.recv_ns) / 1e9, reaction.dropped)
            reaction.recv_ns = 0  # reported once

    def _on_extension(self, event: Extension) -> None:
        self.window.extend(event)
        self.tip = event.tip
        self._queue_scan(event.added)
        self._after_tip_move()

    def _on_deep_reorg(self, event: DeepReorg) -> None:
        log.error(
            "deep reorg (%s): tip %s -> %d %s; reconciling every open transaction with the chain",
            event.reason,
            event.old_tip.number if event.old_tip else None,
            event.new_tip.number,
            event.new_tip.hash,
        )
        self.observer.alert("deep_reorg", event.reason)
        self.window.reset(event.new_tip)
        self.tip = event.new_tip
        self._scanned_tip = None
        senders = self.book.senders()
        self._spawn(self._reconcile_after_deep_reorg(senders, event.new_tip.number))

    async def _reconcile_after_deep_reorg(self, senders: list[str], head: int) -> None:
        # Inclusions we hold may be in blocks that no longer exist: ask the chain for each.
        now = self._clock()
        for record in list(self.book.all_records()):
            if record.state is _S.INCLUDED and not record.settled:
                self.book.transition(record, _S.REORGED, reason="deep reorg: recheck", now=now)
        await self._reconcile(senders, head)

    def _after_tip_move(self) -> None:
        tip = self.tip
        if tip is None:
            return
        now = self._clock()
        # Finality: our blocks at or below tip - finality_depth.
        for block_hash in self.window.final_blocks():
            for record in self.book.finalize(block_hash, now=now):
                self._settle(record)
        if tip.number > self._stall_checked:
            self._stall_checked = tip.number
            self._rebroadcast_stalled(tip.number)
        # Expiry: judged once the tip block has been searched for our transactions (a tx mined
        # in exactly validUntilBlock is never told "expired").
        scanned = self._scanned_tip == tip.hash or (
            not self._scan_queue and self._nothing_to_scan()
        )
        for action in plan_expiry(self._open_records(), next_block=tip.number + 1, scanned=scanned):
            record = action.record
            if type(action) is ExpireUnsigned:
                self._give_up(record, _S.EXPIRED, "validUntilBlock passed before it was signed")
            else:
                assert isinstance(action, ReplaceExpired)
                self._spawn(self._expire(record))
        self.observer.pending(self.book.pending_counts())

    async def _expire(self, record: TxRecord) -> None:
        await self._replace_with_noop(record, _S.EXPIRED, AttemptReason.EXPIRED_REPLACEMENT)

    def _nothing_to_scan(self) -> bool:
        return not any(r.attempts for r in self._open_records())

    def _live_attempt(self, record: TxRecord) -> Attempt | None:
        """The attempt worth resending: the newest not refused for good by every endpoint."""
        for attempt in reversed(record.attempts):
            notes = self.ledger.peek(attempt.hash)
            if notes is None or notes.refusals is None or len(notes.refusals) < self._endpoints:
                return attempt
        return None

    def _rebroadcast_stalled(self, tip_number: int) -> None:
        """Recheck what went out ``REBROADCAST_BLOCKS`` ago and is not known to be mined."""
        stalled = []
        for record in list(self._open_records()):
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
            self._spawn(self._recheck(stalled, resend=True))

    def _canonical(self, number: int, block_hash: str) -> bool:
        """A receipt's block is a fact only if it is canonical in our window (or older than it,
        when we have nothing to compare with: finality covers those)."""
        verdict = self.window.judge(number, block_hash)
        return verdict if verdict is not None else self.tip is None

    async def _recheck(self, records: list[TxRecord], *, resend: bool) -> None:
        """Ask the chain whether any attempt of ``records`` is mined; resend the rest unchanged.

        Inclusion tracking can miss a block (mined while we were down or starting, or an RPC
        that lagged past our retries); receipts settle it, but only receipts in blocks that are
        canonical in our window (a lagging RPC answers from an abandoned branch). What is not
        mined may have been dropped by a node, so the same bytes go out again; a nonce the chain
        used with none of our hashes for ``foreign_blocks`` blocks is a foreign transaction.
        """
        hashes = [a.hash for r in records for a in r.attempts]
        try:
            receipts = await self.chain.receipts(hashes)
        except ChainReadError as exc:
            log.warning("receipt check failed: %s", exc)
            receipts = {}
        now = self._clock()
        unmined: list[TxRecord] = []
        for record in records:
            found = None
            for attempt in record.attempts:
                receipt = receipts.get(attempt.hash)
                if receipt is not None and self._canonical(
                    receipt.block_number, receipt.block_hash
                ):
                    found = receipt
                    break
            if found is not None:
                if record.block is None:
                    self._mark_included(
                        found.tx_hash, BlockRef(found.block_number, found.block_hash), now
                    )
            elif record.block is None:
                unmined.append(record)
        if unmined:
            await self._check_taken(unmined)
        if resend:
            for record in unmined:
                if record.block is not None or record.state is _S.FAILED:
                    continue
                live = self._live_attempt(record)
                if live is None:
                    continue
                if not live.is_noop and (
                    record.state in GIVEN_UP_STATES
                    or record.intent.expired_at((self.chain_head() or 0) + 1)
                ):
                    continue
                self._send(record, live, reason="rebroadcast")

    async def _check_taken(self, records: list[TxRecord]) -> None:
        """Records whose nonce the chain has used although none of their attempts is mined."""
        tip = self.chain_head()
        if tip is None:
            return
        counts: dict[str, int] = {}
        for sender in {r.sender for r in records}:
            try:
                counts[sender] = (await self._counts(sender))[0]
            except ChainReadError:
                continue
        for record in records:
            mined = counts.get(record.sender)
            key = (record.sender, record.nonce)
            if mined is None or record.nonce >= mined:
                self._taken_since.pop(key, None)
                continue
            first = self._taken_since.setdefault(key, tip)
            if tip - first >= self._foreign_blocks:
                await self._nonce_taken(record, self._clock())

    def _mark_included(self, tx_hash: bytes, block: BlockRef, now: float) -> None:
        """Our ``tx_hash`` is in canonical ``block``: the book, finality and the presign."""
        record = self.book.mark_included(tx_hash, block, now=now)
        if record is None:
            return
        self.window.hold(block.hash, block.number)
        self._taken_since.pop((record.sender, record.nonce), None)
        if record.state is _S.INCLUDED or record.state in GIVEN_UP_STATES:
            self._presign_replacement(record)

    def _open_records(self) -> Iterable[TxRecord]:
        counts = self.book.pending_counts()
        return (r for s, n in counts.items() if n for r in self.book.records(s))

    # -- inclusion tracking ------------------------------------------------------------------

    def _queue_scan(self, blocks: Iterable[Head]) -> None:
        if not any(r.attempts for r in self._open_records()):
            return
        for block in blocks:
            self._scan_queue[block.hash] = block.number
        if self._scan_queue:
            self._scan_wakeup.set()

    async def _inclusion_worker(self) -> None:
        """Fetch queued canonical blocks' tx hashes (batched) and mark ours included."""
        retries: dict[str, int] = {}
        while True:
            await self._scan_wakeup.wait()
            self._scan_wakeup.clear()
            batch = dict(self._scan_queue)
            self._scan_queue.clear()
            if not batch:
                continue
            try:
                found = await self.chain.blocks(list(batch))
            except ChainReadError as exc:
                log.warning("inclusion scan failed: %s", exc)
                found = {}
            now = self._clock()
            for block_hash, number in batch.items():
                block = found.get(block_hash)
                if block is None:
                    # The RPC does not have it yet (it lags the head client): try again shortly.
                    if retries.get(block_hash, 0) < 20 and self.window.is_canonical(block_hash):
                        retries[block_hash] = retries.get(block_hash, 0) + 1
                        self._scan_queue[block_hash] = number
                    continue
                retries.pop(block_hash, None)
                if not self.window.is_canonical(block_hash):
                    continue  # reorged out while we fetched it
                ref = BlockRef(number, block_hash)
                for tx_hash in block.tx_hashes:
                    if self.book.by_hash(tx_hash) is not None:
                        self._mark_included(tx_hash, ref, now)
                if self.tip is not None and block_hash == self.tip.hash:
                    self._scanned_tip = block_hash
            if self._scan_queue:
                await asyncio.sleep(0.05)
                self._scan_wakeup.set()
            self._after_tip_move()


def _noop_reason(record: TxRecord) -> AttemptReason:
    """The reason a record's earlier noop was signed (what a new noop there repeats)."""
    for attempt in reversed(record.attempts):
        if attempt.is_noop:
            return attempt.reason
    return AttemptReason.CANCEL


def _noop_state(record: TxRecord, reason: AttemptReason) -> TxState:
    """The status a record has once a noop at its nonce is signed: the given-up state it is in,
    or, for one the chain had mined the payload of and a reorg dropped again, the state its
    noop stands for (a cancel's noop: cancelled; an expiry's: expired; a gap's: failed)."""
    if record.state in GIVEN_UP_STATES:
        return record.state
    reason = reason if reason is AttemptReason.EXPIRED_REPLACEMENT else _noop_reason(record)
    if reason is AttemptReason.EXPIRED_REPLACEMENT:
        return _S.EXPIRED
    if reason is AttemptReason.CANCEL:
        return _S.CANCELLED
    return _S.FAILED

"""The tx manager's reaction to chain events: reorgs, extensions, deep reorgs (DESIGN.md §5).

The reorg reaction is the hot path. ``on_chain`` runs synchronously in the task that read the
head frame: ``NonceBook.on_reorg`` finds our records in the dropped blocks (no block bodies
needed), and a replacement signed ahead of need (fees bumped past geth's replace rule and over
the new base fee) is handed to the fan-out at once, which writes it to every RPC before
returning. Records without one are re-signed at once in a task; a sender's later nonces wait
behind its first unsigned one. ``broadcaster_reaction_seconds`` measures the head frame's arrival
to the last of those writes. Nothing on the way waits on disk.

A dropped transaction is re-sent even if the new branch happens to hold it too: learning that
needs the new blocks' bodies (a round trip), and a replacement at a used nonce can never be
mined, so acting first costs a signature and some "nonce too low" answers, while waiting would
cost every truly dropped transaction that round trip. Inclusion tracking then marks it
``included`` in its new block.

Also here: inclusion tracking (canonical blocks' transaction lists, fetched in batches),
finality, ``validUntilBlock`` expiry, replacements signed ahead, and the recheck of transactions
that stall (receipts, then the same bytes again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from broadcaster.rpc.chain_reader import ChainReadError
from broadcaster.tx.core import (
    REBROADCAST_BLOCKS,
    Presigned,
    TxCore,
    _allowed,
    _Reaction,
    _Send,
)
from heads.events import DeepReorg, Event, Extension, Head, Reorg
from nonce import (
    Attempt,
    AttemptReason,
    BlockRef,
    Fees,
    TxRecord,
    TxState,
)
from nonce.fees import BASE_FEE_HEADROOM
from nonce.state import GIVEN_UP_STATES
from signer_client import SignedTx

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
        """Called by the head hub for every frame that changed something (synchronously)."""
        if header is not None:
            fee = header.get("baseFeePerGas")
            if type(fee) is str:
                try:
                    self.base_fee = int(fee, 16)
                except ValueError:
                    pass
        for event in events:
            kind = type(event)
            if kind is Reorg:
                assert isinstance(event, Reorg)
                self._on_reorg(event, recv_ns)
            elif kind is Extension:
                assert isinstance(event, Extension)
                self._on_extension(event)
            elif kind is DeepReorg:
                assert isinstance(event, DeepReorg)
                self._on_deep_reorg(event)

    def _on_reorg(self, event: Reorg, recv_ns: int) -> None:
        now = self._clock()
        dropped = self.book.on_reorg([b.hash for b in event.old], now=now)
        if dropped:
            reaction = _Reaction(recv_ns, len(dropped), len(dropped) * self._endpoints)
            # Replacements signed ahead go out right here, in the task that read the frame.
            # The rest are signed now; a sender's later nonces wait behind its first unsigned one.
            slow: list[TxRecord] = []
            waiting: set[str] = set()
            ready: list[_Send] = []
            tip_number = event.tip.number
            for record in dropped:
                attempt = None if record.sender in waiting else self._usable_presigned(record)
                if attempt is not None and not record.intent.expired_at(tip_number + 1):
                    ready.append(_Send(record, attempt, reaction))
                else:  # unsigned (or a noop must take the nonce): its later nonces wait behind it
                    waiting.add(record.sender)
                    slow.append(record)
            if ready:
                self._send_presigned(ready, tip_number)
            if slow:
                self._react(slow, reaction, tip_number)
            for record in dropped:
                self.observer.status(record, "reorged")
            for send in ready:
                self.observer.resend(AttemptReason.REORG.value)
                self.observer.status(send.record, "resent")
        self.window.reorg(event)
        self.tip = event.tip
        self._queue_scan(event.new)
        self._after_tip_move()
        for sender in {r.sender for r in dropped}:
            self._want_resync(sender)

    def presigned_for(self, record: TxRecord) -> bool:
        """A replacement for ``record``'s latest attempt is signed and waiting."""
        latest = record.latest
        return latest is not None and latest.hash in self._presigned

    def _usable_presigned(self, record: TxRecord) -> Attempt | None:
        """The replacement signed ahead for ``record``'s dropped attempt, if still good."""
        latest = record.latest
        if latest is None or not self._presigned:
            return None
        ahead = self._presigned.pop(latest.hash, None)
        if ahead is None:
            return None
        if self.base_fee is not None and self.base_fee > ahead.max_base_fee:
            return None  # the base fee rose past what it was signed for: sign afresh
        return ahead.attempt

    def _send_presigned(self, ready: list[_Send], tip_number: int) -> None:
        """Write the replacements signed ahead: one request per RPC for all of them.

        The bytes go to the fan-out first and the book learns of them right after: the writes
        are the reaction, the bookkeeping (journal entries included) is not.
        """
        for send in ready:
            self._sent_at[send.attempt.hash] = tip_number
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
            and latest.hash not in self._presigned
            and not record.intent.external
        ):
            self._spawn(self._presign(record, latest))

    async def _presign(self, record: TxRecord, latest: Attempt) -> None:
        fees = self._bumped(record)
        if fees is None:
            return
        noop = (record.has_noop or latest.is_noop) and not record.intent.noop
        signed = await self._sign(record, fees, noop=noop)
        if signed is not None and record.latest is latest and record.state is _S.INCLUDED:
            attempt = self._signed_attempt(record, signed, fees, AttemptReason.REORG)
            # Good while maxFeePerGas >= 2 * baseFee + tip still holds (nonce.fees' floor).
            max_base_fee = (
                fees.max_fee_per_gas - fees.max_priority_fee_per_gas
            ) // BASE_FEE_HEADROOM
            self._presigned[latest.hash] = Presigned(attempt, fees, max_base_fee)

    def _react(self, dropped: list[TxRecord], reaction: _Reaction, tip_number: int) -> None:
        """Start re-signing every dropped transaction; sends keep each sender's nonce order."""
        if len(dropped) == 1:
            self._spawn(self._resend_dropped(dropped[0], reaction, tip_number))
        else:
            self._spawn(self._resend_all(dropped, reaction, tip_number))

    async def _resend_all(self, dropped: list[TxRecord], reaction: _Reaction, tip: int) -> None:
        signed = await asyncio.gather(*(self._resign(r, tip) for r in dropped))
        for record, result in zip(dropped, signed, strict=True):  # sorted by (sender, nonce)
            self._finish_resend(record, result, reaction)

    async def _resend_dropped(self, record: TxRecord, reaction: _Reaction, tip: int) -> None:
        self._finish_resend(record, await self._resign(record, tip), reaction)

    async def _resign(
        self, record: TxRecord, tip_number: int
    ) -> tuple[SignedTx, Fees, AttemptReason] | None:
        intent = record.intent
        if intent.external:
            return None  # cannot re-sign: the identical bytes go out again
        expired = intent.expired_at(tip_number + 1) and not record.has_noop
        fees = self._bumped(record)
        if fees is None:
            return None
        noop = expired or record.has_noop or intent.noop
        signed = await self._sign(record, fees, noop=noop and not intent.noop)
        if signed is None:
            return None
        reason = AttemptReason.EXPIRED_REPLACEMENT if expired else AttemptReason.REORG
        return signed, fees, reason

    def _finish_resend(
        self,
        record: TxRecord,
        result: tuple[SignedTx, Fees, AttemptReason] | None,
        reaction: _Reaction,
    ) -> None:
        if record.state not in (_S.REORGED, _S.CANCELLED, _S.EXPIRED, _S.FAILED):
            # Meanwhile found in a new canonical block: nothing to send.
            reaction.writes_left -= self._endpoints
            self._maybe_reaction_done(reaction)
            return
        if result is None:
            # Could not re-sign (signer down, fee cap, bytes signed elsewhere): the last bytes are
            # valid while the nonce is unused, so they go out again unchanged.
            latest = record.latest
            if latest is None:
                reaction.writes_left -= self._endpoints
                self._maybe_reaction_done(reaction)
                return
            self._send(record, latest, reason="reorg_rebroadcast", reaction=reaction)
            return
        signed, fees, reason = result
        attempt = self._record_attempt(record, signed, fees, reason)
        now = attempt.signed_at
        if reason is AttemptReason.EXPIRED_REPLACEMENT and _S.EXPIRED in _allowed(record):
            self.book.transition(record, _S.EXPIRED, reason="validUntilBlock passed", now=now)
            self.observer.status(record, "expired")
        elif record.state is _S.REORGED:
            self.book.transition(record, _S.SIGNED, reason="re-signed after reorg", now=now)
        self._send(record, attempt, reason=reason.value, reaction=reaction)

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
                self.observer.status(record, "finalized")
                self._settled.append(record)
                for attempt in record.attempts:  # per-attempt bookkeeping ends with finality
                    self._presigned.pop(attempt.hash, None)
                    self._sent_at.pop(attempt.hash, None)
                    self._bumped_for.discard(attempt.hash)
                    self._checked.discard(attempt.hash)
                    self._results.pop(attempt.hash, None)
        while len(self._settled) > self._retain_settled:
            self.book.evict(self._settled.popleft())
            self._evicted_any = True
        if tip.number > self._stall_checked:
            self._stall_checked = tip.number
            self._rebroadcast_stalled(tip.number)
        # Expiry: intents whose validUntilBlock is behind us and that are not mined.
        for record in self._expiring(tip.number + 1):
            self._spawn(
                self._replace_with_noop(record, _S.EXPIRED, AttemptReason.EXPIRED_REPLACEMENT)
            )
        self.observer.pending(self.book.pending_counts())

    def _rebroadcast_stalled(self, tip_number: int) -> None:
        """Recheck what went out ``REBROADCAST_BLOCKS`` ago and is not known to be mined."""
        stalled = []
        for record in list(self._open_records()):
            latest = record.latest
            if latest is None or record.block is not None or record.state is _S.PENDING:
                continue
            if record.settled or record.released:
                continue
            if record.state in GIVEN_UP_STATES and not latest.is_noop:
                continue  # a failed or cancelled payload is not pushed again
            sent = self._sent_at.get(latest.hash)
            if sent is None or tip_number - sent >= REBROADCAST_BLOCKS:
                self._sent_at[latest.hash] = tip_number  # one recheck per stall period
                stalled.append(record)
        if stalled:
            self._spawn(self._recheck(stalled, resend=True))

    async def _recheck(self, records: list[TxRecord], *, resend: bool) -> None:
        """Ask the chain whether any attempt of ``records`` is mined; resend the rest unchanged.

        Inclusion tracking can miss a block (mined while we were down or starting, or an RPC
        that lagged past our retries); receipts settle it. What is not mined may have been
        dropped by a node, so the same bytes go out again.
        """
        hashes = [a.hash for r in records for a in r.attempts]
        try:
            receipts = await self.chain.receipts(hashes)
        except ChainReadError as exc:
            log.warning("receipt check failed: %s", exc)
            receipts = {}
        now = self._clock()
        for record in records:
            found = next((receipts[a.hash] for a in record.attempts if a.hash in receipts), None)
            if found is not None:
                if record.block is None:
                    before = record.state
                    ref = BlockRef(found.block_number, found.block_hash)
                    self.book.mark_included(found.tx_hash, ref, now=now)
                    self.window.hold(found.block_hash, found.block_number)
                    if record.state is _S.INCLUDED and before is not _S.INCLUDED:
                        self.observer.status(record, "included")
                        self._presign_replacement(record)
            elif resend and record.block is None and record.latest is not None:
                self._send(record, record.latest, reason="rebroadcast")

    def _expiring(self, next_block: int) -> list[TxRecord]:
        return [
            record
            for sender in self.book.senders()
            for record in self.book.records(sender)
            if record.state in (_S.SIGNED, _S.BROADCAST, _S.PENDING)
            and record.intent.expired_at(next_block)
            and not record.has_noop
            and not record.intent.external
        ]

    # -- inclusion tracking ------------------------------------------------------------------

    def _queue_scan(self, blocks: Iterable[Head]) -> None:
        if not any(True for _ in self._open_records()):
            return
        for block in blocks:
            self._scan_queue[block.hash] = block.number
        if self._scan_queue:
            self._scan_wakeup.set()

    def _open_records(self) -> Iterable[TxRecord]:
        counts = self.book.pending_counts()
        return (r for s, n in counts.items() if n for r in self.book.records(s))

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
                    record = self.book.by_hash(tx_hash)
                    if record is None:
                        continue
                    before = record.state
                    self.book.mark_included(tx_hash, ref, now=now)
                    self.window.hold(block_hash, number)
                    if record.state is _S.INCLUDED and before is not _S.INCLUDED:
                        self.observer.status(record, "included")
                        self._presign_replacement(record)
            if self._scan_queue:
                await asyncio.sleep(0.05)
                self._scan_wakeup.set()
            self._after_tip_move()

"""The transaction manager: intents in, signed attempts out (DESIGN.md §5).

Data flow: ``subscriber -> tracker -> on_chain() -> NonceBook -> signer -> FanOut -> RPCs``.
``TxManager`` is assembled from ``TxCore`` (state, signing, sending, resync;
``broadcaster/tx/core.py``), ``ChainReactions`` (the reorg reaction and the rest of the chain
events; ``broadcaster/tx/reaction.py``) and ``Recovery`` (start-up and crash recovery;
``broadcaster/tx/recovery.py``). This module adds what the API and the fan-out call: intents
(submit, raw bytes, cancel) and the fan-out's answers (underpriced -> bump, nonce too low ->
check receipts, insufficient funds -> fail and alert).

Background work (inclusion scans, finality, expiry, resync, retries of unsigned intents) runs in
the manager's own ``TaskGroup`` (``run``); each task guards its exceptions, so no single failure
stops the service.
"""

from __future__ import annotations

from broadcaster.rpc.error_table import ErrorKind
from broadcaster.rpc.fanout import BroadcastResult, Written
from broadcaster.tx.core import (
    REBROADCAST_BLOCKS,
    FeePolicy,
    TxObserver,
    _allowed,
    _Send,
)
from broadcaster.tx.reaction import ChainReactions
from broadcaster.tx.recovery import Recovery
from nonce import (
    Attempt,
    AttemptReason,
    Intent,
    NonceError,
    TxRecord,
    TxState,
)
from nonce.errors import DuplicateIdempotencyKey
from nonce.state import ACTIVE_STATES
from signer_client import SignedTx

__all__ = ["REBROADCAST_BLOCKS", "FeePolicy", "TxManager", "TxObserver"]

_S = TxState


class TxManager(ChainReactions, Recovery):
    """Owns the book, signs through the enclave client, sends through the fan-out."""

    # -- intents -------------------------------------------------------------------------------

    async def submit(self, intent: Intent) -> TxRecord:
        """Book ``intent``, make it durable, sign it and send it. Returns its record.

        Raises ``DuplicateIdempotencyKey`` (with the earlier record) for a repeated key.
        Signer trouble does not raise: the record stays ``pending`` and is retried, or goes
        ``failed`` on a policy denial (check ``record.state``).
        """
        record = await self.admit(intent)
        await self.complete(record)
        return record

    async def admit(self, intent: Intent) -> TxRecord:
        """The first half of :meth:`submit`: check the idempotency key and give ``intent`` its
        nonce (in memory; :meth:`complete` makes it durable). Admissions in a given order get
        nonces in that order, which is how the API keeps one connection's intents in order
        while the rest of their work overlaps."""
        if self._stopping:
            raise RuntimeError("the service is shutting down and accepts no new intents")
        if intent.key is not None and self.book.by_key(intent.key) is None:
            earlier = await self.find(key=intent.key)  # evicted: only the journal knows it
            if earlier is not None:
                raise DuplicateIdempotencyKey(intent.key, earlier)
        return self.book.accept(intent, now=self._clock())

    async def complete(self, record: TxRecord) -> None:
        """The second half of :meth:`submit`: journal flush, then sign and send."""
        await self.journal.flush()  # an accepted intent is never lost (DESIGN.md §5)
        self.observer.pending(self.book.pending_counts())
        await self._sign_and_send(record, self._initial_fees(record.intent))

    async def submit_raw(self, intent: Intent, nonce: int, signed: SignedTx) -> TxRecord:
        """Track bytes signed elsewhere (``eth_sendRawTransaction``): rebroadcast, never re-sign."""
        now = self._clock()
        record = self.book.accept(intent, now=now, nonce=nonce)
        attempt = Attempt(
            raw=signed.raw,
            hash=signed.hash,
            nonce=nonce,
            max_fee_per_gas=intent.max_fee_per_gas,
            max_priority_fee_per_gas=intent.max_priority_fee_per_gas,
            signed_at=now,
            reason=AttemptReason.EXTERNAL,
        )
        self.book.add_attempt(record, attempt)
        self.book.transition(record, _S.SIGNED, reason="external", now=now)
        await self.journal.flush()
        self._send(record, attempt, reason=None)
        return record

    async def cancel(self, record: TxRecord) -> TxRecord:
        """Cancel: unsigned -> ``cancelled``; signed -> a noop replacement at its nonce."""
        now = self._clock()
        if record.state is _S.PENDING:
            self.book.transition(record, _S.CANCELLED, reason="cancelled before signing", now=now)
            self.observer.status(record, "cancelled")
            self._want_resync(record.sender)
        elif record.state in (_S.SIGNED, _S.BROADCAST, _S.REORGED):
            await self._replace_with_noop(record, _S.CANCELLED, AttemptReason.CANCEL)
        else:
            raise NonceError(f"intent {record.intent.id} is {record.state.value}: cannot cancel")
        await self.journal.flush()
        return record

    # -- fan-out callbacks ---------------------------------------------------------------------

    def on_written(self, written: Written) -> None:
        send = written.context
        if type(send) is not _Send:
            return
        record = send.record
        send.written = True
        if written.attempt == 1 and send.reaction is not None:
            reaction = send.reaction
            reaction.writes_left -= 1
            if reaction.writes_left <= 0:
                self._maybe_reaction_done(reaction, written.written_ns)
        if record.state is _S.SIGNED and record.latest is send.attempt:
            self.book.transition(record, _S.BROADCAST, reason="written", now=self._clock())
            self.observer.status(record, "broadcast")

    def on_result(self, result: BroadcastResult) -> None:
        self.observer.broadcast(result)
        send = result.context
        if type(send) is not _Send:
            return
        kind = result.kind
        if kind is ErrorKind.ACCEPTED:
            return
        record, attempt = send.record, send.attempt
        if record.latest is not attempt or record.settled:
            return  # an older attempt: superseded, its errors do not matter
        if kind in (ErrorKind.UNDERPRICED, ErrorKind.FEE_CAP_TOO_LOW):
            if attempt.hash not in self._bumped_for and record.state in ACTIVE_STATES:
                self._bumped_for.add(attempt.hash)
                bumps = sum(1 for a in record.attempts if a.reason is AttemptReason.UNDERPRICED)
                if bumps < self.fees.max_bumps:
                    self._spawn(self._bump(record, attempt))
        elif kind is ErrorKind.NONCE_TOO_LOW:
            # Not proof of inclusion (one lagging or forked node can say it): ask for receipts.
            if attempt.hash not in self._checked:
                self._checked.add(attempt.hash)
                self._spawn(self._recheck([record], resend=False))
            self._want_resync(record.sender)
        elif kind is ErrorKind.NONCE_TOO_HIGH:
            self._want_resync(record.sender)
        elif kind in (ErrorKind.INSUFFICIENT_FUNDS, ErrorKind.INVALID) and result.final:
            answers = self._results.setdefault(attempt.hash, {})
            answers[result.endpoint] = kind
            if len(answers) >= self._endpoints:
                self._results.pop(attempt.hash, None)
                self._fail(record, kind, result.message or kind.value)

    def _fail(self, record: TxRecord, kind: ErrorKind, message: str) -> None:
        if _S.FAILED not in _allowed(record) or record.block is not None:
            return
        if kind is ErrorKind.INSUFFICIENT_FUNDS:
            self.observer.alert("insufficient_funds", f"{record.sender}: {message}")
        self.book.transition(
            record, _S.FAILED, reason=f"{kind.value}: {message}", now=self._clock()
        )
        self.observer.status(record, "failed")
        self._want_resync(record.sender)

    async def _bump(self, record: TxRecord, attempt: Attempt) -> None:
        if record.latest is not attempt or record.state not in ACTIVE_STATES:
            return
        fees = self._bumped(record)
        if fees is None:
            return
        await self._sign_and_send(record, fees, AttemptReason.UNDERPRICED)

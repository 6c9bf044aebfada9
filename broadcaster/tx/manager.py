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
from broadcaster.tx.plans import Alert, Bump, CheckInclusion, Fail, Resync, plan_nonce_error
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
from nonce.errors import DuplicateIdempotencyKey, InvalidIntent
from nonce.state import ACTIVE_STATES
from signer_client import SignedTx

__all__ = ["REBROADCAST_BLOCKS", "CancelFailed", "FeePolicy", "TxManager", "TxObserver"]

_S = TxState


class CancelFailed(NonceError):
    """The noop that would take the intent's nonce could not be signed now: not cancelled."""


class TxManager(ChainReactions, Recovery):
    """Owns the book, signs through the enclave client, sends through the fan-out."""

    # -- intents -------------------------------------------------------------------------------

    async def submit(self, intent: Intent) -> TxRecord:
        """Book ``intent``, make it durable, sign it and send it. Returns its record.

        Raises ``DuplicateIdempotencyKey`` (with the earlier record) for a repeated key and
        ``InvalidIntent`` for one already past its ``validUntilBlock``. Signer trouble does not
        raise: the record stays ``pending`` and is retried, or goes ``failed`` on a policy
        denial (check ``record.state``).
        """
        record = await self.admit(intent)
        await self.complete(record)
        return record

    def _check_not_expired(self, intent: Intent) -> None:
        head = self.chain_head()
        if head is not None and intent.expired_at(head + 1):
            raise InvalidIntent(
                "validUntilBlock",
                f"{intent.valid_until_block} has passed (the next block is {head + 1})",
            )

    async def admit(self, intent: Intent) -> TxRecord:
        """The first half of :meth:`submit`: check the idempotency key and give ``intent`` its
        nonce (in memory; :meth:`complete` makes it durable). Admissions in a given order get
        nonces in that order, which is how the API keeps one connection's intents in order
        while the rest of their work overlaps."""
        if self._stopping:
            raise RuntimeError("the service is shutting down and accepts no new intents")
        self._check_not_expired(intent)
        if intent.key is not None and self.book.by_key(intent.key) is None:
            earlier = await self.find(key=intent.key)  # evicted: only the journal knows it
            if earlier is not None:
                raise DuplicateIdempotencyKey(intent.key, earlier)
        return self.book.accept(intent, now=self._clock())

    async def complete(self, record: TxRecord) -> None:
        """The second half of :meth:`submit`: journal flush, then sign and send."""
        await self.journal.flush()  # an accepted intent is never lost (DESIGN.md §5)
        self.observer.pending(self.book.pending_counts())
        await self._sign_and_send(record)

    async def submit_raw(self, intent: Intent, nonce: int, signed: SignedTx) -> TxRecord:
        """Track bytes signed elsewhere (``eth_sendRawTransaction``): rebroadcast, never re-sign.

        A nonce more than ``[fees] max_gap_fill`` beyond the sender's next one is refused: the
        nonces between would be holes that only noops could fill.
        """
        self._check_not_expired(intent)
        upcoming = self.book.peek_next(intent.sender)
        limit = self.fees.max_gap_fill
        if upcoming is not None and nonce > upcoming + limit:
            raise InvalidIntent(
                "nonce",
                f"{nonce} is more than max_gap_fill = {limit} beyond the next nonce {upcoming}",
            )
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
        """Cancel: unsigned -> ``cancelled``; signed -> a noop replacement at its nonce, and
        ``cancelled`` once that noop is signed (raises :class:`CancelFailed` if it cannot be)."""
        if record.state is _S.PENDING and not record.attempts:
            async with self._lock(record):  # a first signature in flight finishes first
                pass
        if record.state is _S.PENDING and not record.attempts:
            self._give_up(record, _S.CANCELLED, "cancelled before signing")
        elif record.state in (_S.PENDING, _S.SIGNED, _S.BROADCAST, _S.REORGED):
            if record.intent.external:
                raise NonceError(f"intent {record.intent.id} was signed elsewhere: cancel it there")
            done = await self._replace_with_noop(record, _S.CANCELLED, AttemptReason.CANCEL)
            if not done:
                raise CancelFailed(
                    f"intent {record.intent.id}: the noop that would take nonce {record.nonce} "
                    "could not be signed now (signer unavailable or fee cap); not cancelled"
                )
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

    def on_result(self, result: BroadcastResult) -> None:
        self.observer.broadcast(result)
        send = result.context
        if type(send) is not _Send:
            return
        kind = result.kind
        if kind is ErrorKind.ACCEPTED:
            return
        record, attempt = send.record, send.attempt
        final = result.final and kind in (ErrorKind.INSUFFICIENT_FUNDS, ErrorKind.INVALID)
        refusals = self.ledger.refused(attempt.hash, result.endpoint, kind.value) if final else 0
        notes = self.ledger.peek(attempt.hash)
        actions = plan_nonce_error(
            record,
            attempt,
            kind,
            final=result.final,
            refusals=refusals,
            endpoints=self._endpoints,
            bumps=sum(1 for a in record.attempts if a.reason is AttemptReason.UNDERPRICED),
            max_bumps=self.fees.max_bumps,
            first_bump=notes is None or not notes.bumped,
            first_recheck=notes is None or not notes.rechecked,
            previous_alive=self._previous_alive(record, attempt),
            message=result.message or kind.value,
        )
        for action in actions:
            if type(action) is Bump:
                self.ledger.first_bump(attempt.hash)
                self._spawn(self._bump(record, attempt))
            elif type(action) is CheckInclusion:
                self.ledger.first_recheck(attempt.hash)
                self._spawn(self._recheck([record], resend=False))
            elif type(action) is Resync:
                self._want_resync(action.sender)
            elif type(action) is Alert:
                self._alert(action)
            elif type(action) is Fail:
                self._fail(action.record, action.kind, action.message)

    def _previous_alive(self, record: TxRecord, attempt: Attempt) -> bool:
        """An earlier attempt at the nonce is not refused for good by every endpoint."""
        for earlier in record.attempts:
            if earlier is attempt:
                return False
            notes = self.ledger.peek(earlier.hash)
            if notes is None or notes.refusals is None or len(notes.refusals) < self._endpoints:
                return True
        return False

    def _fail(self, record: TxRecord, kind: ErrorKind, message: str) -> None:
        if _S.FAILED not in _allowed(record) or record.block is not None:
            return
        self._give_up(record, _S.FAILED, f"{kind.value}: {message}")

    async def _bump(self, record: TxRecord, attempt: Attempt) -> None:
        if record.latest is not attempt or record.state not in ACTIVE_STATES:
            return
        await self._sign_and_send(record, AttemptReason.UNDERPRICED)

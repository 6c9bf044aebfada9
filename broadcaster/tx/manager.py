"""The transaction manager: intents in, signed attempts out (DESIGN.md §5).

Data flow: ``subscriber -> tracker -> on_chain() -> NonceBook -> signer -> FanOut -> RPCs``.
``TxManager`` is assembled from parts that each own one job and are handed what they need:

- ``Executor`` (``executor.py``): every signature and send, serialized per nonce;
- ``ChainFollower`` (``reaction.py``): the reorg reaction and what every tip move asks for;
- ``InclusionTracker`` (``inclusion.py``): what the chain holds of ours, presigns, foreign txs;
- ``NonceSync`` and ``Retention`` (``nonces.py``): nonce resync, gap fill, bounded memory;
- ``Recovery`` (``recovery.py``): start-up and crash recovery;
- the decisions are pure functions in ``plans.py`` and ``pricing.py``; per-attempt notes and the
  fee floor live in the ``AttemptLedger`` (``ledger.py``).

This module adds what the API and the fan-out call: intents (submit, raw bytes, cancel) and the
fan-out's answers (underpriced -> bump, nonce too low -> check receipts, insufficient funds ->
fail and alert, unless an earlier attempt is still valid). Every state change is announced by the
book's transition listener (``observer.status``), never by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from broadcaster.errors import BroadcasterError
from broadcaster.rpc.chain_reader import ChainReadError
from broadcaster.rpc.error_table import ErrorKind
from broadcaster.rpc.fanout import BroadcastResult, Written
from broadcaster.tx.executor import Executor, Send, allowed
from broadcaster.tx.inclusion import InclusionTracker
from broadcaster.tx.ledger import AttemptLedger
from broadcaster.tx.nonces import NonceSync, Retention
from broadcaster.tx.plans import Alert, Bump, CheckInclusion, Fail, Resync, plan_nonce_error
from broadcaster.tx.pricing import FeePolicy
from broadcaster.tx.reaction import REBROADCAST_BLOCKS, ChainFollower
from broadcaster.tx.recovery import Recovery
from broadcaster.tx.seams import (
    FRAME_READ_NS,
    ChainState,
    Durable,
    Signer,
    Submitter,
    TxObserver,
)
from broadcaster.tx.typed import blob_cancel_refusal
from broadcaster.tx.unjournaled import SignedNonces
from broadcaster.tx.view import Background, ChainView
from heads.events import Event, Head
from nonce import (
    Attempt,
    AttemptReason,
    Intent,
    NonceBook,
    NonceError,
    TxRecord,
    TxState,
)
from nonce.errors import DuplicateIdempotencyKey, InvalidIntent
from nonce.state import ACTIVE_STATES
from signer_client import SignedTx

__all__ = ["REBROADCAST_BLOCKS", "CancelFailed", "FeePolicy", "TxManager", "TxObserver"]

_S = TxState


class CancelFailed(BroadcasterError, NonceError):
    """The noop that would take the intent's nonce could not be signed now: not cancelled."""


class TxManager:
    """Owns the book, signs through the enclave client, sends through the fan-out."""

    def __init__(
        self,
        *,
        chain_id: int,
        book: NonceBook,
        journal: Durable,
        signer: Signer,
        fanout: Submitter,
        endpoints: int,
        chain: ChainState,
        finality_depth: int = 64,
        fees: FeePolicy | None = None,
        observer: TxObserver | None = None,
        clock: Callable[[], float] = time.time,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
        presign: bool = True,
        after_reaction: Callable[[], None] | None = None,
        lookup: Callable[[str | None, str | None], TxRecord | None] | None = None,
        retain_settled: int = 10_000,
        evicted_on_disk: bool = False,
        resync_delay: float = 0.2,
        foreign_blocks: int = 3,
        canonical_chain: Callable[[], Iterable[Head]] | None = None,
        refuse_sender: Callable[[str], str | None] | None = None,
        signed_nonces: SignedNonces | None = None,
    ) -> None:
        self.chain_id = chain_id
        # With the enclave's audit log to recover from, an intent's fsync and its signature
        # overlap (``complete``); without it the signer is asked only once the flush is done.
        self.overlap = signed_nonces is not None
        # Why ``sender`` may not sign any more (``[audit] stop_signing_on_foreign``), or None.
        self._refuse_sender = refuse_sender
        self.book = book
        self.journal = journal
        self.chain = chain
        self.fees = fees = fees or FeePolicy()
        self.observer = observer = observer or TxObserver()
        self.presign = presign
        self._endpoints = endpoints
        self._clock = clock
        self._clock_ns = clock_ns
        self._lookup = lookup
        self._stopping = False
        book.listen(self._announce)  # first: observers hear a change before its consequences
        self.view = view = ChainView(finality_depth, canonical_chain)
        self.ledger = ledger = AttemptLedger()
        self.background = background = Background()
        self.executor = executor = Executor(
            chain_id=chain_id,
            book=book,
            ledger=ledger,
            signer=signer,
            fanout=fanout,
            view=view,
            fees=fees,
            observer=observer,
            background=background,
            clock=clock,
            clock_ns=clock_ns,
        )
        self.retention = retention = Retention(
            book,
            ledger,
            executor,
            retain_settled=retain_settled,
            evicted_on_disk=evicted_on_disk,
        )
        self.nonces = nonces = NonceSync(
            book=book,
            chain=chain,
            executor=executor,
            retention=retention,
            fees=fees,
            observer=observer,
            background=background,
            clock=clock,
            delay=resync_delay,
        )
        self.inclusion = inclusion = InclusionTracker(
            book=book,
            chain=chain,
            view=view,
            ledger=ledger,
            executor=executor,
            nonces=nonces,
            retention=retention,
            observer=observer,
            endpoints=endpoints,
            presign=presign,
            foreign_blocks=foreign_blocks,
            clock=clock,
        )
        self.recovery = recovery = Recovery(
            book=book,
            chain=chain,
            view=view,
            executor=executor,
            inclusion=inclusion,
            nonces=nonces,
            observer=observer,
            clock=clock,
            signed_nonces=signed_nonces,
            background=background,
        )
        self.follower = ChainFollower(
            book=book,
            ledger=ledger,
            view=view,
            executor=executor,
            inclusion=inclusion,
            nonces=nonces,
            retention=retention,
            observer=observer,
            background=background,
            reconcile=recovery.reconcile,
            endpoints=endpoints,
            clock=clock,
            clock_ns=clock_ns,
            after_reaction=after_reaction,
        )
        fanout.listen(self.on_result, self.on_written)

    def _announce(self, record: TxRecord, old: TxState, new: TxState) -> None:
        self.observer.status(record, new.value)

    # -- what the service and the API read -------------------------------------------------------

    @property
    def base_fee(self) -> int | None:
        return self.view.base_fee

    @property
    def tip(self) -> Head | None:
        return self.view.tip

    @property
    def presigned_sent(self) -> int:
        return self.follower.presigned_sent

    def presigned_for(self, record: TxRecord) -> bool:
        """A replacement for ``record``'s latest attempt is signed and waiting."""
        latest = record.latest
        return latest is not None and self.ledger.presigned(latest.hash) is not None

    async def find(
        self, intent_id: str | None = None, *, key: str | None = None
    ) -> TxRecord | None:
        """A record by intent id or idempotency key: in memory, else (once anything was
        evicted) from the journal on disk, read off the event loop."""
        if intent_id is not None:
            record = self.book.find_intent(intent_id)
        else:
            record = self.book.by_key(key) if key is not None else None
        if record is not None or not self.retention.evicted_any or self._lookup is None:
            return record
        return await asyncio.to_thread(self._lookup, intent_id, key)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, accounts: Iterable[str]) -> list[Any]:
        """Resync nonces and recover the reloaded book (``Recovery.start``)."""
        return await self.recovery.start(accounts)

    async def run(self) -> None:
        """Own the background tasks until cancelled (put it in the service's TaskGroup)."""
        await self.background.run(self.follower.inclusion_worker())

    def stop_accepting(self) -> None:
        self._stopping = True

    def on_chain(
        self,
        events: list[Event],
        client: str,
        recv_ns: int,
        header: Mapping[str, Any] | None = None,
    ) -> None:
        """Called by the head hub for every frame that changed something (synchronously).

        ``client`` and ``header`` are not read: the base fee comes from the canonical tip only.
        """
        self.follower.on_chain(events, recv_ns)

    # -- intents -------------------------------------------------------------------------------

    async def submit(self, intent: Intent) -> TxRecord:
        """Book ``intent``, make it durable, sign it and send it. Returns its record.

        Raises ``DuplicateIdempotencyKey`` (with the earlier record) for a repeated key and
        ``InvalidIntent`` for one already past its ``validUntilBlock``. Signer trouble does not
        raise: the record stays ``pending`` and is retried, or goes ``failed`` on a policy
        denial (check ``record.state``).
        """
        recv_ns = FRAME_READ_NS.get() or self._clock_ns()
        record = await self.admit(intent)
        await self.complete(record, recv_ns)
        return record

    def _check_not_expired(self, intent: Intent) -> None:
        head = self.view.head()
        if head is not None and intent.expired_at(head + 1):
            raise InvalidIntent(
                "validUntilBlock",
                f"{intent.valid_until_block} has passed (the next block is {head + 1})",
            )

    async def admit(self, intent: Intent) -> TxRecord:
        """The first half of :meth:`submit`: check the idempotency key and give ``intent`` its
        nonce (in memory; :meth:`complete` makes it durable; a repeated key's
        ``DuplicateIdempotencyKey`` is raised once the earlier record is). Admissions in a given
        order get nonces in that order, which is how the API keeps one connection's intents in
        order while the rest of their work overlaps."""
        if self._stopping:
            raise RuntimeError("the service is shutting down and accepts no new intents")
        self._check_not_expired(intent)
        if self._refuse_sender is not None:
            why = self._refuse_sender(intent.sender)
            if why is not None:
                raise InvalidIntent("from", why)
        if intent.key is not None and self.book.by_key(intent.key) is None:
            earlier = await self.find(key=intent.key)  # evicted: only the journal knows it
            if earlier is not None:
                raise DuplicateIdempotencyKey(intent.key, earlier)
        checked = self.recovery.checked
        if not checked.is_set():
            # After a restart: a nonce the enclave signed for an intent the journal lost is not
            # handed out before recovery booked its noop (``Recovery.unjournaled``).
            await checked.wait()
        try:
            return self.book.accept(intent, now=self._clock())
        except DuplicateIdempotencyKey:
            # The API answers with the earlier record: an acknowledgement too, so only once it
            # is durable (its own flush may still be under way: a retried request).
            await self.journal.flush()
            raise

    def open_bundle(self, bundle_id: str, spec: bytes) -> None:
        """Journal a ``broadcaster_sendBundle`` bundle (before its members' :meth:`admit`: the
        first member's :meth:`complete` flushes it with that member)."""
        self.book.open_bundle(bundle_id, spec, now=self._clock())

    async def complete(self, record: TxRecord, recv_ns: int | None = None) -> None:
        """The second half of :meth:`submit`: make the intent durable, sign it and send it.

        The promise (DESIGN.md §5): an accepted intent is never lost, and never on the wire
        before the journal knows it. With :attr:`overlap` (the manager was given the enclave's
        audit log, ``signed_nonces``) the journal's flush is started first and the signer asked
        while its fsync runs; the signed attempt is sent only once the flush is done, and this
        returns (the API acknowledges) only then. A ``kill -9`` between the signature and the
        fsync leaves a signature at a nonce the restarted journal does not know, never sent:
        recovery reads it from the audit log and takes that nonce with a noop before reusing it
        (``broadcaster.tx.unjournaled``; ``tests/broadcaster/tx/test_sim_intent_durability.py``).
        Without ``overlap`` the flush comes first and the signer is asked only once it is done.
        ``recv_ns``: when the intent's frame was read (``perf_counter_ns``; default
        :data:`FRAME_READ_NS`, set by the API's transport), the start of
        ``broadcaster_intent_seconds``; 0: not timed.
        """
        if recv_ns is None:
            recv_ns = FRAME_READ_NS.get()
        if not self.overlap:
            await self.journal.flush()  # an accepted intent is never lost (DESIGN.md §5)
            try:
                await self.executor.sign_and_send(record, recv_ns=recv_ns)
            finally:
                self.observer.pending(self.book.pending_counts())  # after the writes
            return
        durable = _begin_flush(self.journal)  # the writer is woken before the signer is asked
        try:
            await self.executor.sign_and_send(record, recv_ns=recv_ns, durable=durable)
        finally:
            try:
                await durable  # no acknowledgement before the intent is durable
            finally:
                self.observer.pending(self.book.pending_counts())

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
        below = self.book.get(intent.sender, nonce - 1)
        if (
            below is not None
            and below.span > 1
            and below.covers_nonce
            and self.book.get(intent.sender, nonce) is None
        ):
            # The node's pending count says nonce - 1 + 1 while our delegation is pooled; once
            # mined, its authorization takes this nonce and these bytes could never be.
            raise InvalidIntent(
                "nonce",
                f"{nonce} is the authorization nonce of intent {below.intent.id} (an EIP-7702 "
                f"self-sponsored delegation consumes {nonce - 1} and {nonce}); the next free "
                f"nonce is {upcoming}",
            )
        if (
            upcoming is not None
            and nonce < upcoming
            and self.book.get(intent.sender, nonce) is None
        ):
            # Below our next nonce with nothing of ours booked there: a hole we would fill, or a
            # nonce an intent we no longer hold in memory used. The chain tells which.
            try:
                mined, _ = await self.nonces.counts(intent.sender)
            except ChainReadError as exc:
                raise NonceError(f"cannot check nonce {nonce} against the chain: {exc}") from exc
            if nonce < mined:
                raise InvalidIntent("nonce", f"{nonce} is already used on chain (next {mined})")
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
        self.executor.send(record, attempt, reason=None)
        return record

    async def cancel(self, record: TxRecord) -> TxRecord:
        """Cancel: unsigned -> ``cancelled``; signed -> a noop replacement at its nonce, and
        ``cancelled`` once that noop is signed (raises :class:`CancelFailed` if it cannot be)."""
        executor = self.executor
        if record.state is _S.PENDING and not record.attempts:
            async with executor.lock(record):  # a first signature in flight finishes first
                pass
        if record.state is _S.PENDING and not record.attempts:
            executor.give_up(record, _S.CANCELLED, "cancelled before signing")
        elif record.state in (_S.PENDING, _S.SIGNED, _S.BROADCAST, _S.REORGED):
            if record.intent.external:
                raise NonceError(f"intent {record.intent.id} was signed elsewhere: cancel it there")
            refusal = blob_cancel_refusal(record)
            if refusal is not None:
                raise NonceError(refusal)
            done = await executor.noop(record, AttemptReason.CANCEL, final=_S.CANCELLED)
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
        """A queued (or retried) job's bytes reached an endpoint's socket, after ``submit``."""
        send = written.context
        if type(send) is not Send:
            return
        if not send.written:
            self.executor.wrote(send)
        if written.first and send.reaction is not None:
            send.reaction.settle(1, written.written_ns)

    def on_result(self, result: BroadcastResult) -> None:
        self.observer.broadcast(result)
        send = result.context
        if type(send) is not Send:
            return
        if (
            result.final
            and not result.written
            and result.attempt > 0  # a refused job (attempt 0) was settled from submit's return
            and send.reaction is not None
        ):
            send.reaction.settle(1, 0)  # a queued job that will never be written
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
                self.background.spawn(self._bump(record, attempt))
            elif type(action) is CheckInclusion:
                self.ledger.first_recheck(attempt.hash)
                self.background.spawn(self.inclusion.recheck([record], resend=False))
            elif type(action) is Resync:
                self.nonces.want(action.sender)
            elif type(action) is Alert:
                self.nonces.alert(action)
            elif type(action) is Fail:
                self._fail(action.record, action.kind, action.message)

    def _previous_alive(self, record: TxRecord, attempt: Attempt) -> bool:
        """An earlier attempt at the nonce is not refused for good by every endpoint."""
        for earlier in record.attempts:
            if earlier is attempt:
                return False
            if not self.ledger.refused_by_all(earlier.hash, self._endpoints):
                return True
        return False

    def _fail(self, record: TxRecord, kind: ErrorKind, message: str) -> None:
        if _S.FAILED not in allowed(record) or record.block is not None:
            return
        self.executor.give_up(record, _S.FAILED, f"{kind.value}: {message}")

    async def _bump(self, record: TxRecord, attempt: Attempt) -> None:
        if record.latest is not attempt or record.state not in ACTIVE_STATES:
            return
        await self.executor.sign_and_send(record, AttemptReason.UNDERPRICED)


def _begin_flush(journal: Durable) -> asyncio.Future[None]:
    """The journal's flush, started now (``ThreadedJournal.begin_flush``; a ``Durable`` without
    it: its ``flush`` as a task)."""
    begin = getattr(journal, "begin_flush", None)
    if begin is not None:
        future: asyncio.Future[None] = begin()
        return future
    return asyncio.ensure_future(journal.flush())

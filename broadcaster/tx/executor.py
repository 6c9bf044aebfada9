"""The thin executor: signs what the plans decided, through the enclave, and sends it.

Everything that obtains a signature at a ``(sender, nonce)`` goes through here, serialized per
nonce (a cancel's noop and a reorg's re-sign never race each other to the enclave; whichever
comes second sees the first's result), priced by ``pricing.replacement`` over the ledger's floor.
A payload is never signed or sent once its intent was given up, found mined, or is past its
``validUntilBlock``; ``cancelled``/``expired`` are entered only once the noop is signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from broadcaster.backoff import backoff
from broadcaster.errors import BroadcasterError
from broadcaster.rpc.fanout import Submitted
from broadcaster.tx import blobs
from broadcaster.tx.ledger import AttemptLedger
from broadcaster.tx.pricing import FeePolicy, replacement, tx_dict
from broadcaster.tx.reasons import ResendReason
from broadcaster.tx.seams import Signer, Submitter, TxObserver
from broadcaster.tx.typed import (
    EXPIRY_WAITS,
    AuthKey,
    BlobFloors,
    Delegated,
    NoAuthorizationSigner,
    blob_pooled,
    typed_fields,
    wire_form,
)
from broadcaster.tx.view import Background, ChainView
from nonce import (
    TRANSITIONS,
    Attempt,
    AttemptReason,
    Fees,
    NonceBook,
    TxRecord,
    TxState,
    noop_intent,
)
from nonce.errors import FeeCapExceeded
from signer_client import PolicyDenied, SignedTx, SignerError, Ticket, reacting, urgent
from signer_client.priority import LOCKED, REACTION

__all__ = ["RETRY_MAX", "Executor", "Reaction", "Send", "SignRefused", "retry_delays"]

log = logging.getLogger(__name__)

_S = TxState
_ACTIVE = (_S.PENDING, _S.SIGNED, _S.BROADCAST, _S.REORGED)

NONCE_CONFLICT_RETRIES = 3
"""Signatures tried at one nonce when the enclave says something higher was signed there."""

RETRY_MAX = 5.0
"""Seconds at most between attempts at something that failed for a reason that passes (signer
down, an enclave rate limit)."""


class NonceLock(asyncio.Lock):
    """A nonce's lock, and the signer ticket of what its holder signs (priority inheritance,
    ``signer_client.priority``): a reaction that finds it held promotes the holder's ticket to
    its own level, so the request it waits for is not passed by the queued presignatures."""

    def __init__(self) -> None:
        super().__init__()
        self.ticket: Ticket | None = None  # the holder's, while it signs at an urgent level
        self.wanted = False  # a reaction waits for it: the holder's next ticket starts promoted

    async def for_reaction(self) -> None:
        """Acquire on behalf of a reaction: the holder's signer requests are promoted first."""
        if self.locked():
            self.wanted = True
            if self.ticket is not None:
                self.ticket.promote()
        try:
            await self.acquire()
        finally:
            self.wanted = False


class _ForReaction:
    """``async with``: a :class:`NonceLock` acquired on behalf of a reaction."""

    __slots__ = ("lock",)

    def __init__(self, lock: NonceLock) -> None:
        self.lock = lock

    async def __aenter__(self) -> None:
        await self.lock.for_reaction()

    async def __aexit__(self, *exc_info: object) -> None:
        self.lock.release()


def _priority(
    lock: NonceLock, reaction: Reaction | None, record: TxRecord
) -> contextlib.AbstractContextManager[object]:
    """The level of the signatures made under ``lock`` (``signer_client.priority``): a reorg
    reaction's are its own, ahead of everything; every other re-sign of a transaction already
    signed (a fee bump, a cancel's noop) is urgent, ahead of the new intents': it holds the
    nonce's lock while it waits (a bump asked for just before its transaction is mined and
    reorged out). Its ticket is the lock's while it signs, so a reaction that then needs the
    nonce promotes it instead of waiting behind every presignature queued after it."""
    if reaction is not None:
        return reacting()
    if record.attempts:
        return holding(lock)
    return contextlib.nullcontext()  # a first signature: ordinary, and nothing to pay


@contextlib.contextmanager
def holding(lock: NonceLock) -> Iterator[Ticket]:
    """Sign urgently (level 2) while holding ``lock``; promoted if a reaction wants it."""
    ticket = Ticket(REACTION if lock.wanted else LOCKED)
    lock.ticket = ticket
    try:
        with urgent(ticket):
            yield ticket
    finally:
        lock.ticket = None


def retry_delays() -> Iterator[float]:
    """Delays between those attempts: 0.1 s doubling to ``RETRY_MAX`` (``broadcaster.backoff``)."""
    return backoff(initial=0.1, maximum=RETRY_MAX)


class Reaction:
    """Measures one reorg reaction: head frame read -> the last RPC write it expects.

    ``writes_left`` counts jobs (one transaction to one endpoint). A job written inside the
    fan-out's call, or refused there (endpoint down, queue full: it will never be written), is
    settled at once from the call's ``Submitted``; a queued one when its first write happens or
    it fails unwritten. When none is left, ``on_done(end_ns)`` reports the reaction, so every
    reaction is observed, also when an endpoint is down, queued or retried.
    """

    __slots__ = ("dropped", "last_ns", "on_done", "recv_ns", "writes_left")

    def __init__(
        self, recv_ns: int, dropped: int, writes: int, on_done: Callable[[Reaction, int], None]
    ) -> None:
        self.recv_ns = recv_ns
        self.dropped = dropped
        self.writes_left = writes
        self.last_ns = 0
        self.on_done = on_done

    def took(self, done: Submitted) -> None:
        """A fan-out call for this reaction returned ``done``."""
        if done.last_ns > self.last_ns:
            self.last_ns = done.last_ns
        self.settle(done.written + done.refused, 0)

    def settle(self, jobs: int, at_ns: int) -> None:
        """``jobs`` expected writes are done or will never happen (latest stamp ``at_ns``)."""
        if at_ns > self.last_ns:
            self.last_ns = at_ns
        self.writes_left -= jobs
        if self.writes_left <= 0 and self.recv_ns:
            self.on_done(self, self.last_ns)


@dataclass(slots=True)
class Send:
    """Fan-out context of one attempt; ``written`` once any RPC's socket took its bytes."""

    record: TxRecord
    attempt: Attempt
    reaction: Reaction | None
    written: bool = False
    # A reorg reaction's write: each RPC lane writes it ahead of its queued intents
    # (broadcaster.rpc.lane, read by duck typing: the fan-out knows no tx types).
    urgent: bool = False


class SignRefused(BroadcasterError):
    """The signer will not sign this, for a reason that does not pass (a policy denial)."""


class AuthorizationTaken(SignRefused):
    """The enclave signed another delegate at the authorization's nonce ``n + 1`` before (an
    earlier intent at nonce ``n`` that failed or was cancelled after its authorization was
    signed): it never signs another one there (``nonce_conflict``), so this intent can never be
    signed at ``n``. It fails, and a noop burns ``n`` so the next intent does not land there."""


def allowed(record: TxRecord) -> frozenset[TxState]:
    return TRANSITIONS[record.state]


class Executor:
    """Signs and sends for every part of the tx manager (see the module docstring)."""

    def __init__(
        self,
        *,
        chain_id: int,
        book: NonceBook,
        ledger: AttemptLedger,
        signer: Signer,
        fanout: Submitter,
        view: ChainView,
        fees: FeePolicy,
        observer: TxObserver,
        background: Background,
        clock: Callable[[], float] = time.time,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.chain_id = chain_id
        self.book = book
        self.ledger = ledger
        self.signer = signer
        self.fanout = fanout
        self.view = view
        self.fees = fees
        self.observer = observer
        self.background = background
        self.clock = clock
        self.clock_ns = clock_ns
        self._locks: dict[tuple[str, int], NonceLock] = {}
        self._blob_floors = BlobFloors()
        self._auths: dict[AuthKey, dict[str, Any]] = {}  # signed EIP-7702 items, per nonce
        self.delegated = Delegated()  # geth's one-in-flight rule (tx.typed); recovery fills it
        self._ids = itertools.count(1)

    # -- per-nonce serialization -----------------------------------------------------------------

    def lock(self, record: TxRecord) -> NonceLock:
        key = (record.sender, record.nonce)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = NonceLock()
        return lock

    def locked(self, record: TxRecord, reaction: Reaction | None) -> NonceLock | _ForReaction:
        """``record``'s nonce lock to ``async with``; a reaction's first promotes the holder's
        signer requests (:meth:`NonceLock.for_reaction`). The plain lock otherwise: the intent
        path pays nothing for it."""
        lock = self.lock(record)
        return lock if reaction is None else _ForReaction(lock)

    def forget(self, record: TxRecord) -> None:
        self._locks.pop((record.sender, record.nonce), None)
        if record.intent.tx_type == 3:
            self._blob_floors.forget(record)
            blobs.forget(record.intent.blobs)  # settled: no re-sign needs its sidecar again
        elif record.intent.tx_type == 4:
            for auth in record.intent.authorizations:
                key = (record.sender, auth.chain_id, auth.address, record.nonce + 1)
                self._auths.pop(key, None)

    # -- signatures ------------------------------------------------------------------------------

    async def sign_priced(
        self, record: TxRecord, *, noop: bool = False
    ) -> tuple[SignedTx, Fees] | None:
        """Price the next signature at ``record``'s nonce and sign it; ``None`` when it cannot be
        had now. A ``nonce_conflict`` (something above our floor was signed there before) raises
        the floor and is priced again over it, a few times at most."""
        for _ in range(NONCE_CONFLICT_RETRIES):
            fees = self.fees_for(record, noop=noop)
            if fees is None:
                return None
            floor = self.ledger.floor(record)
            signed = await self.sign(record, fees, noop=noop)
            if signed is not None:
                return signed, fees
            if self.ledger.floor(record) == floor:
                return None  # not a conflict: the signer is down or rate limited
        return None

    async def sign(self, record: TxRecord, fees: Fees, *, noop: bool = False) -> SignedTx | None:
        """One signature at ``record``'s nonce; ``None`` when it cannot be had now (retry).

        Raises :class:`SignRefused` for a denial that does not pass. An enclave ``rate_limit``
        passes (retry); a ``nonce_conflict`` means something at or above ``fees`` was signed at
        the nonce before (a replacement signed ahead and lost in a restart): the floor rises, and
        the caller's next computation bumps over it. A ``nonce_window`` (the account moved on
        outside the enclave) raises the enclave's floor once (:meth:`_move_window`) and retries.
        """
        typed = not noop and record.intent.tx_type > 2  # blobs, authorizations (tx.typed)
        tx = {} if typed else tx_dict(record.intent, record.nonce, fees, noop=noop)
        started = self.clock_ns()
        moved = False
        while True:
            try:
                if typed:
                    floor = self._blob_floors.floor(record)
                    try:
                        extra = await typed_fields(
                            record, self.signer, self.fees, floor, self._auths
                        )
                    except PolicyDenied as exc:
                        if exc.rule != "nonce_conflict":
                            raise
                        self.observer.signer_error("policy_denied")
                        raise AuthorizationTaken(f"authorization at nonce + 1: {exc}") from exc
                    tx = tx_dict(record.intent, record.nonce, fees, **extra)
                signed = await self.signer.sign_transaction(tx, record.sender)
                if typed:
                    self._blob_floors.raise_to(record, tx)
                    self.delegated.note(record)
                    signed = wire_form(record, signed)
                break
            except NoAuthorizationSigner as exc:
                raise SignRefused(str(exc)) from exc
            except PolicyDenied as exc:
                if exc.rule == "nonce_window" and not moved and await self._move_window(record):
                    moved = True
                    continue
                if typed and exc.rule == "nonce_conflict":
                    self._blob_floors.raise_to(record, tx)  # the next one doubles it
                return self._refused(record, fees, exc)
            except SignerError as exc:
                self.observer.signer_error(type(exc).__name__)
                log.warning("%s/%d: signer failed: %s", record.sender, record.nonce, exc)
                return None
        self.observer.signed((self.clock_ns() - started) / 1e9)
        self.ledger.signed_fees(record.sender, record.nonce, fees)
        return signed

    async def _move_window(self, record: TxRecord) -> bool:
        """The enclave refused ``record``'s nonce as beyond its nonce window: the account moved
        on outside it (raw transactions signed elsewhere). Raise the enclave's floor to the lowest
        nonce we may still have to sign for this sender (any of our records not yet finalized: a
        reorg may need it re-signed), never above; True if it was raised."""
        advance = getattr(self.signer, "advance_nonce_floor", None)
        if advance is None:
            return False
        floor = min(
            (
                r.nonce
                for r in self.book.records(record.sender)
                if r.state is not TxState.FINALIZED and not r.intent.external
            ),
            default=record.nonce,
        )
        floor = min(floor, record.nonce)
        try:
            await advance(self.chain_id, record.sender, floor)
        except SignerError as exc:
            log.warning("%s: could not move the enclave's nonce window: %s", record.sender, exc)
            return False
        log.info("%s: enclave nonce window floor raised to %d", record.sender, floor)
        return True

    def _refused(self, record: TxRecord, fees: Fees, exc: PolicyDenied) -> SignedTx | None:
        self.observer.signer_error("policy_denied")
        log.warning("%s/%d: signer refused: %s", record.sender, record.nonce, exc)
        if exc.rule == "rate_limit":
            return None
        if exc.rule == "nonce_conflict":
            self.ledger.raise_floor(record, fees)
            return None
        raise SignRefused(str(exc)) from exc

    def attempt_of(
        self, record: TxRecord, signed: SignedTx, fees: Fees, reason: AttemptReason
    ) -> Attempt:
        """The attempt ``signed`` makes at ``record``'s nonce, replacing its latest one."""
        previous = record.latest
        return Attempt(
            raw=signed.raw,
            hash=signed.hash,
            nonce=record.nonce,
            max_fee_per_gas=fees.max_fee_per_gas,
            max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
            signed_at=self.clock(),
            reason=reason,
            replaces=previous.hash if previous is not None else None,
        )

    def _record_attempt(
        self, record: TxRecord, signed: SignedTx, fees: Fees, reason: AttemptReason
    ) -> Attempt:
        attempt = self.attempt_of(record, signed, fees, reason)
        self.book.add_attempt(record, attempt)
        return attempt

    def fees_for(self, record: TxRecord, *, noop: bool) -> Fees | None:
        """Fees for the next signature at ``record``'s nonce, ``None`` (alerted) when no valid
        replacement fits under the cap."""
        try:
            return replacement(
                record.intent, self.ledger.floor(record), self.view.base_fee, self.fees, noop=noop
            )
        except FeeCapExceeded as exc:
            log.error("%s/%d: cannot bump fees: %s", record.sender, record.nonce, exc)
            self.observer.alert("fee_cap", f"{record.sender}/{record.nonce}: {exc}")
            return None

    def give_up(self, record: TxRecord, state: TxState, reason: str) -> None:
        """Enter a given-up state (the book's listeners resync the sender if a hole opened)."""
        if state in allowed(record):
            self.book.transition(record, state, reason=reason, now=self.clock())

    def wants_payload(self, record: TxRecord) -> bool:
        """The intent's own payload may still be signed and sent at its nonce."""
        if record.state not in _ACTIVE or record.released:
            return False
        if record.has_noop and not record.intent.noop:  # a gap fill's payload is its noop
            return False
        if record.block is not None:
            return False
        head = self.view.head()
        return head is None or not record.intent.expired_at(head + 1)

    async def sign_and_send(
        self,
        record: TxRecord,
        reason: AttemptReason = AttemptReason.INITIAL,
        reaction: Reaction | None = None,
        *,
        retry: bool = True,
        recv_ns: int = 0,
        durable: Awaitable[None] | None = None,
    ) -> Attempt | None:
        """Sign the payload (initial fees, or a bump over the floor) and send it.

        ``durable``: the intent's journal flush, started before the signer was asked
        (``TxManager.complete``); the signed attempt waits for it before it is recorded or sent,
        so nothing reaches the wire before the journal knows the intent (a failed flush raises
        here and nothing is sent).

        Nothing is sent once the intent was given up or found mined while the signer worked.
        A first signature that cannot be had now is retried in the background (``retry``).

        ``recv_ns``: when the intent's frame was read (``perf_counter_ns``); the first attempt's
        last RPC write then reports ``intent_to_wire`` (``broadcaster_intent_seconds``).
        """
        lock = self.lock(record)
        async with self.locked(record, reaction):
            if not self.wants_payload(record):
                return None
            if reaction is not None and reason is AttemptReason.REORG:
                ahead = self._presigned(record, noop=False)
                if ahead is not None:
                    if record.state is not _S.SIGNED and _S.SIGNED in allowed(record):
                        self.book.transition(
                            record, _S.SIGNED, reason=ahead.reason.value, now=self.clock()
                        )
                    self.send(record, ahead, reason=ResendReason.REORG, reaction=reaction)
                    return ahead
            if not record.attempts and self.delegated.busy(record, self.book):
                if retry:  # one in flight for a delegated sender: wait for it (tx.typed)
                    self.background.spawn(self._retry_signing(record, durable))
                return None
            try:
                with _priority(lock, reaction, record):
                    priced = await self.sign_priced(record)
            except SignRefused as exc:
                if not record.attempts:
                    burn = (
                        await self._burn_nonce(record)
                        if isinstance(exc, AuthorizationTaken)
                        else None
                    )
                    self.give_up(record, _S.FAILED, f"policy: {exc}")
                    if burn is not None:
                        self.send(record, burn, reason=ResendReason(burn.reason.value))
                return None
            if priced is None:
                if retry and record.state is _S.PENDING and not record.attempts:
                    self.background.spawn(self._retry_signing(record, durable))
                return None
            signed, fees = priced
            if durable is not None:
                await durable
            if not self.wants_payload(record):
                return None  # cancelled or expired while the enclave signed: never sent
            first = reaction is None and recv_ns > 0 and reason is AttemptReason.INITIAL
            book = self.book
            if first:
                # The writes first: the book and the journal change at once, the observers
                # (subscriptions, metrics, the router) hear of signed/broadcast right after the
                # last write, in order, with nothing awaited in between (as the reaction does).
                book.defer_announcements()
            try:
                attempt = self._record_attempt(record, signed, fees, reason)
                if record.state is not _S.SIGNED and _S.SIGNED in allowed(record):
                    book.transition(record, _S.SIGNED, reason=reason.value, now=attempt.signed_at)
                if first:
                    self.send_first(record, attempt, recv_ns)
                else:
                    resend = None if reason is AttemptReason.INITIAL else ResendReason(reason.value)
                    self.send(record, attempt, reason=resend, reaction=reaction)
            finally:
                if first:
                    book.announce()
            return attempt

    def _presigned(self, record: TxRecord, *, noop: bool) -> Attempt | None:
        """The replacement signed ahead for ``record``'s latest attempt, recorded, if it is still
        good (a noop exactly when ``noop``, and the base fee has not outgrown it:
        ``plans.plan_reorg``'s rule). A presignature finished while the reaction waited for its
        lock (it found none); taken either way (a discarded one's fees stay the floor)."""
        latest = record.latest
        if latest is None:
            return None
        presigned = self.ledger.take_presigned(latest.hash)
        if presigned is None or not presigned.fits(noop=noop, base_fee=self.view.base_fee):
            return None
        attempt = presigned.attempt
        self.book.add_attempt(record, attempt)
        return attempt

    async def _burn_nonce(self, record: TxRecord) -> Attempt | None:
        """A noop at ``record``'s nonce (lock held), so a nonce no payload can use is not handed
        to the next intent (:class:`AuthorizationTaken`); the caller sends it once it gave the
        record up. ``None`` when the signer cannot now: then the nonce is a hole like any."""
        try:
            priced = await self.sign_priced(record, noop=True)
        except SignRefused as exc:
            log.warning("%s/%d: no noop: %s", record.sender, record.nonce, exc)
            return None
        if priced is None:
            return None
        signed, fees = priced
        return self._record_attempt(record, signed, fees, AttemptReason.GAP_FILL)

    async def _retry_signing(
        self, record: TxRecord, durable: Awaitable[None] | None = None
    ) -> None:
        """A first signature the signer could not give yet: retry with backoff while it stays
        pending; past ``validUntilBlock`` it expires unsigned instead.

        ``durable``: the intent's flush (``sign_and_send``); no retry signs, let alone sends,
        before it is done (a retry 0.1 s later beat a slow fsync to the wire: a ``kill -9`` then
        left a transaction out that the journal never knew). A failed flush: no retry at all
        (the caller's ``complete`` raises it)."""
        if durable is not None:
            try:
                await durable
            except Exception:  # complete() reports it; nothing may be sent
                return
        for delay in retry_delays():
            await asyncio.sleep(delay)
            if record.state is not _S.PENDING or record.attempts:
                return
            head = self.view.head()
            if head is not None and record.intent.expired_at(head + 1):
                self.give_up(record, _S.EXPIRED, "validUntilBlock passed before it was signed")
                return
            if await self.sign_and_send(record, retry=False) is not None:
                return

    async def noop(
        self,
        record: TxRecord,
        reason: AttemptReason,
        *,
        final: TxState | None = None,
        reaction: Reaction | None = None,
    ) -> bool:
        """Sign a 0-value self-transfer at the record's nonce and send it; then enter ``final``.

        ``False`` when it could not be signed now (the record's state is unchanged).
        """
        lock = self.lock(record)
        async with self.locked(record, reaction):
            # A reaction that waited for this lock may have waited for the noop's presignature
            # (InclusionTracker._presign, promoted): send it rather than sign one more.
            ahead = self._presigned(record, noop=True) if reaction is not None else None
            if ahead is not None:
                attempt = ahead
            else:
                try:
                    with _priority(lock, reaction, record):
                        priced = await self.sign_priced(record, noop=True)
                except SignRefused:
                    return False
                if priced is None:
                    return False
                signed, fees = priced
                attempt = self._record_attempt(record, signed, fees, reason)
            pooled = final is _S.EXPIRED and blob_pooled(record)
            if pooled:
                # Not "expired" while the blob tx may still be mined: the noop's inclusion
                # (NonceBook.mark_included) or the payload's decides (TxRecord.expiry_waiting).
                self.book.explain(record, EXPIRY_WAITS, now=self.clock())
            elif final is not None and final is not record.state and final in allowed(record):
                self.book.transition(record, final, reason=reason.value, now=self.clock())
            elif record.state is _S.PENDING:
                self.book.transition(record, _S.SIGNED, reason=reason.value, now=self.clock())
            self.send(record, attempt, reason=ResendReason(reason.value), reaction=reaction)
            return True

    async def fill_gap(self, sender: str, nonce: int) -> bool:
        """Sign a noop at a nonce nothing of ours will use; ``False`` when it could not be now.

        The noop is private (builders and private RPCs only) when the sender holds any private
        intent."""
        tip = self.fees.priority_fee
        intent = noop_intent(
            f"gap-{sender[2:10]}-{nonce}-{next(self._ids)}",
            sender,
            chain_id=self.chain_id,
            max_fee_per_gas=2 * (self.view.base_fee or 1_000_000_000) + tip,
            tip=tip,
        )
        if any(r.intent.private for r in self.book.records(sender)):
            # DESIGN.md 5a: a private account's nonces are its own business; a public noop
            # would show its activity (and that a nonce is being plugged) to every mempool.
            intent = dataclasses.replace(intent, private=True)
        record = self.book.open_gap_fill(intent, nonce, now=self.clock())
        if record.has_noop:
            return True
        return await self.noop(record, AttemptReason.GAP_FILL)

    # -- sending ---------------------------------------------------------------------------------

    def send(
        self,
        record: TxRecord,
        attempt: Attempt,
        *,
        reason: ResendReason | None,
        reaction: Reaction | None = None,
    ) -> Submitted:
        """Hand ``attempt`` to the fan-out (every RPC that takes it), noting when it went out."""
        if reason is not None:
            self.observer.resend(reason.value)
            self.observer.status(record, "resent")
        self.ledger.sent(attempt.hash, self.view.tip_number())
        send = Send(record, attempt, reaction, urgent=reaction is not None)
        done = self.fanout.submit(attempt.raw, attempt.hash, send)
        if done.written:
            self.wrote(send)
        if reaction is not None:
            reaction.took(done)
        return done

    def send_first(self, record: TxRecord, attempt: Attempt, recv_ns: int) -> Submitted:
        """:meth:`send` for an intent's first attempt, timed from its frame read (``recv_ns``) to
        the last RPC write of this attempt: the writes done inside the fan-out's call, or, for
        a job queued behind a busy endpoint, its first write later (``TxManager.on_written``
        settles it). The same write accounting as a reorg reaction (:class:`Reaction`)."""
        self.ledger.sent(attempt.hash, self.view.tip_number())
        clock = Reaction(recv_ns, 1, 0, self._intent_done)
        send = Send(record, attempt, clock)
        done = self.fanout.submit(attempt.raw, attempt.hash, send)
        if done.written:
            self.wrote(send)
        clock.writes_left = done.written + done.queued + done.refused
        clock.took(done)
        return done

    def _intent_done(self, clock: Reaction, end_ns: int) -> None:
        if clock.recv_ns:
            if end_ns > clock.recv_ns:  # some endpoint took it (none did: nothing to time)
                self.observer.intent_to_wire((end_ns - clock.recv_ns) / 1e9)
            clock.recv_ns = 0  # reported once

    def wrote(self, send: Send) -> None:
        """An endpoint's socket took ``send``'s bytes (now, or later for a queued job)."""
        send.written = True
        record = send.record
        if record.state is _S.SIGNED and record.latest is send.attempt:
            why = EXPIRY_WAITS if record.expiry_waiting else "written"
            self.book.transition(record, _S.BROADCAST, reason=why, now=self.clock())

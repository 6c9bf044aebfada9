"""The tx manager's shared core: its state, signing and sending, nonce resync.

``TxManager`` (``broadcaster/tx/manager.py``) is assembled from this core and two parts that
build on it: ``broadcaster/tx/reaction.py`` (chain events: the reorg reaction, inclusion, finality,
expiry, stalled transactions) and ``broadcaster/tx/recovery.py`` (start-up resync and crash
recovery). The seams it talks through (signer, fan-out, chain reader, journal) are Protocols,
so tests can hand it fakes.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from broadcaster.rpc.chain_reader import ChainReadError, MinedTx
from broadcaster.rpc.fanout import BroadcastResult
from broadcaster.tx.inclusion import CanonicalWindow
from broadcaster.tx.ledger import AttemptLedger, Presigned
from broadcaster.tx.plans import Alert, plan_gap_fill, plan_nonce_counts
from broadcaster.tx.pricing import FeePolicy, initial_fees, replacement, tx_dict
from broadcaster.tx.reasons import ResendReason
from heads.events import Head
from nonce import (
    Attempt,
    AttemptReason,
    BlockRef,
    Fees,
    Intent,
    NonceBook,
    TxRecord,
    TxState,
    noop_intent,
)
from nonce.errors import FeeCapExceeded
from nonce.resync import held_top
from signer_client import PolicyDenied, SignedTx, SignerError

__all__ = [
    "REBROADCAST_BLOCKS",
    "ChainState",
    "Durable",
    "FeePolicy",
    "Presigned",
    "ResendReason",
    "Signer",
    "Submitter",
    "TxCore",
    "TxObserver",
]

REBROADCAST_BLOCKS = 2
"""A signed transaction not mined this many blocks after it went out is sent again, byte for
byte: a node may have dropped it (pool eviction, a restart, a reorg it did not re-inject)."""

log = logging.getLogger(__name__)

_S = TxState


class Submitter(Protocol):
    """The fan-out seam: ``FanOut.submit`` and ``FanOut.submit_many``."""

    def submit(self, raw: bytes, tx_hash: bytes, context: object = None) -> None: ...

    def submit_many(self, items: Sequence[tuple[bytes, bytes, object]]) -> None: ...


class Signer(Protocol):
    async def sign_transaction(self, tx: Mapping[str, Any], sender: str) -> SignedTx: ...


class ChainState(Protocol):
    """The chain-reading seam: ``broadcaster.rpc.chain_reader.ChainReader``."""

    async def transaction_counts(self, sender: str) -> tuple[int, int]: ...

    async def blocks(self, hashes: Sequence[str]) -> Mapping[str, Any]: ...

    async def receipts(self, tx_hashes: Sequence[bytes]) -> Mapping[bytes, Any]: ...

    async def base_fee(self) -> int | None: ...

    async def block_number(self) -> int: ...

    async def mined_at(self, sender: str, nonce: int) -> MinedTx | None: ...


class Durable(Protocol):
    """The journal's durability barrier: ``SqliteJournal.flush``."""

    async def flush(self) -> None: ...


class TxObserver:
    """Hooks for metrics and ``broadcaster_subscribe`` notifications; no-ops here.

    Called synchronously, on the hot path too: keep them cheap.
    """

    def status(self, record: TxRecord, event: str) -> None:
        """``event``: a state the record just entered (``TxState`` value: signed, broadcast,
        included, reorged, finalized, cancelled, expired, failed; the book's transition listener
        calls this, never the manager by hand) or ``resent``."""

    def reaction(self, seconds: float, dropped: int) -> None:
        """A reorg reaction finished: head frame read -> last RPC write of the last re-sign."""

    def resend(self, reason: str) -> None:
        """One transaction went out again (``resends_total{reason}``)."""

    def signed(self, seconds: float) -> None:
        """One signer round trip, verification included (``sign_seconds``)."""

    def signer_error(self, kind: str) -> None: ...

    def broadcast(self, result: BroadcastResult) -> None:
        """An RPC answered (or failed) one attempt."""

    def pending(self, counts: Mapping[str, int]) -> None:
        """Pending transactions per sender changed."""

    def alert(self, kind: str, detail: str) -> None:
        """Something an operator must look at (insufficient funds, deep reorg...)."""

    def foreign(self, sender: str) -> None:
        """A transaction we never signed took one of ``sender``'s nonces."""


class _Reaction:
    """Measures one reorg reaction: frame read -> the last expected RPC write."""

    __slots__ = ("dropped", "recv_ns", "writes_left")

    def __init__(self, recv_ns: int, dropped: int, writes: int) -> None:
        self.recv_ns = recv_ns
        self.dropped = dropped
        self.writes_left = writes


@dataclass(slots=True)
class _Send:
    """Fan-out context of one attempt; ``written`` once any RPC's socket took its bytes."""

    record: TxRecord
    attempt: Attempt
    reaction: _Reaction | None
    written: bool = False
    counted: bool = False  # its reaction write is accounted for (written, or failed unwritten)


RETRY_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0)
"""Seconds between attempts at something that failed for a reason that passes (signer down, an
enclave rate limit, an RPC that did not answer): doubling, capped at 5 s."""


def retry_delays() -> Iterator[float]:
    """``RETRY_DELAYS``, then 5 s forever."""
    yield from RETRY_DELAYS
    while True:
        yield RETRY_DELAYS[-1]


class SignRefused(Exception):
    """The signer will not sign this, for a reason that does not pass (a policy denial)."""


class TxCore:
    """State and the signing/sending machinery shared by every part of the tx manager."""

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
    ) -> None:
        self.chain_id = chain_id
        self.book = book
        self.journal = journal
        self.signer = signer
        self.fanout = fanout
        self.chain = chain
        self.finality_depth = finality_depth
        self.fees = fees or FeePolicy()
        self.observer = observer or TxObserver()
        self._endpoints = endpoints
        self._clock = clock
        self._clock_ns = clock_ns
        self.window = CanonicalWindow(finality_depth)
        self.ledger = AttemptLedger()
        self.base_fee: int | None = None
        self.tip: Head | None = None
        # The chain's block number learned at start, before any head arrived (expiry judging).
        self.head_number: int | None = None
        self._group: asyncio.TaskGroup | None = None
        self._pending_spawns: list[Coroutine[Any, Any, None]] = []
        self._scan_queue: dict[str, int] = {}
        self._scan_wakeup = asyncio.Event()
        self._scanned_tip: str | None = None  # the tip block once the inclusion scan covered it
        self._resync_wanted: set[str] = set()
        self._resync_delay = resync_delay
        self.presign = presign
        # Called right after a reorg reaction's last write (the service passes os.sched_yield
        # when [cpu] yield_after_reaction is on: see broadcaster.scheduling).
        self._after_reaction = after_reaction
        self.presigned_sent = 0  # reorg replacements that went out with no signer round trip
        # Memory stays bounded: only the newest ``retain_settled`` settled records are kept;
        # older ones are evicted and answered from the journal on disk (``lookup``).
        self._lookup = lookup
        self._retain_settled = retain_settled
        self._settled: collections.deque[TxRecord] = collections.deque()
        self._evicted_any = evicted_on_disk
        self._stall_checked = -1
        # Records whose nonce the chain used with none of our hashes: tip number first seen.
        self._taken_since: dict[tuple[str, int], int] = {}
        self._foreign_blocks = foreign_blocks
        # Signing at one (sender, nonce) is serialized: a cancel's noop and a reorg's re-sign
        # never race each other to the enclave (whichever comes second sees the first's result).
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._ids = itertools.count(1)
        self._stopping = False
        book.listen(self._on_transition)

    def _on_transition(self, record: TxRecord, old: TxState, new: TxState) -> None:
        """The book's listener: every state change is announced here, and only here."""
        self.observer.status(record, new.value)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Own the background tasks until cancelled (put it in the service's TaskGroup)."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            for coro in self._pending_spawns:
                group.create_task(coro)
            self._pending_spawns.clear()
            group.create_task(self._inclusion_worker(), name="inclusion")
            await asyncio.Event().wait()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the manager's TaskGroup; its exceptions are logged, not fatal."""
        guarded = self._guard(coro)
        if self._group is None:
            self._pending_spawns.append(guarded)
        else:
            self._group.create_task(guarded)

    async def _guard(self, coro: Awaitable[None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task failed")

    def stop_accepting(self) -> None:
        self._stopping = True

    # -- provided by the parts (reaction.py, recovery.py) ----------------------------------

    async def _inclusion_worker(self) -> None:
        raise NotImplementedError

    async def _reconcile(self, senders: Sequence[str], head_number: int | None) -> list[Any]:
        raise NotImplementedError

    async def _recheck(self, records: list[TxRecord], *, resend: bool) -> None:
        raise NotImplementedError

    async def _nonce_taken(self, record: TxRecord, now: float) -> None:
        raise NotImplementedError

    def _canonical(self, number: int, block_hash: str) -> bool:
        raise NotImplementedError

    def _mark_included(self, tx_hash: bytes, block: BlockRef, now: float) -> None:
        raise NotImplementedError

    # -- lookups -----------------------------------------------------------------------------

    def _initial_fees(self, intent: Intent) -> Fees:
        return initial_fees(intent)

    async def find(
        self, intent_id: str | None = None, *, key: str | None = None
    ) -> TxRecord | None:
        """A record by intent id or idempotency key: in memory, else (once anything was
        evicted) from the journal on disk, read off the event loop."""
        if intent_id is not None:
            record = self.book.find_intent(intent_id)
        else:
            record = self.book.by_key(key) if key is not None else None
        if record is not None or not self._evicted_any or self._lookup is None:
            return record
        return await asyncio.to_thread(self._lookup, intent_id, key)

    def chain_head(self) -> int | None:
        """The canonical block number as far as we know (the tip, else what start() read)."""
        return self.tip.number if self.tip is not None else self.head_number

    # -- signing and sending -----------------------------------------------------------------

    def _lock(self, record: TxRecord) -> asyncio.Lock:
        key = (record.sender, record.nonce)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _sign(self, record: TxRecord, fees: Fees, *, noop: bool = False) -> SignedTx | None:
        """One signature at ``record``'s nonce; ``None`` when it cannot be had now (retry).

        Raises :class:`SignRefused` for a denial that does not pass. An enclave ``rate_limit``
        passes (retry); a ``nonce_conflict`` means something above ``fees`` was signed at the
        nonce before (a replacement signed ahead and lost in a restart): the floor rises, and
        the caller's next computation bumps over it.
        """
        tx = tx_dict(record.intent, record.nonce, fees, noop=noop)
        started = self._clock_ns()
        try:
            signed = await self.signer.sign_transaction(tx, record.sender)
        except PolicyDenied as exc:
            self.observer.signer_error("policy_denied")
            log.warning("%s/%d: signer refused: %s", record.sender, record.nonce, exc)
            if exc.rule == "rate_limit":
                return None
            if exc.rule == "nonce_conflict":
                self.ledger.raise_floor(record, fees)
                return None
            raise SignRefused(str(exc)) from exc
        except SignerError as exc:
            self.observer.signer_error(type(exc).__name__)
            log.warning("%s/%d: signer failed: %s", record.sender, record.nonce, exc)
            return None
        self.observer.signed((self._clock_ns() - started) / 1e9)
        self.ledger.signed_fees(record.sender, record.nonce, fees)
        return signed

    def _signed_attempt(
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
            signed_at=self._clock(),
            reason=reason,
            replaces=previous.hash if previous is not None else None,
        )

    def _record_attempt(
        self, record: TxRecord, signed: SignedTx, fees: Fees, reason: AttemptReason
    ) -> Attempt:
        attempt = self._signed_attempt(record, signed, fees, reason)
        self.book.add_attempt(record, attempt)
        return attempt

    def _fees_for(self, record: TxRecord, *, noop: bool) -> Fees | None:
        """Fees for the next signature at ``record``'s nonce (``pricing.replacement`` over the
        ledger's floor), ``None`` (alerted) when no valid replacement fits under the cap."""
        try:
            return replacement(
                record.intent, self.ledger.floor(record), self.base_fee, self.fees, noop=noop
            )
        except FeeCapExceeded as exc:
            log.error("%s/%d: cannot bump fees: %s", record.sender, record.nonce, exc)
            self.observer.alert("fee_cap", f"{record.sender}/{record.nonce}: {exc}")
            return None

    def _give_up(self, record: TxRecord, state: TxState, reason: str) -> None:
        if state in _allowed(record):
            self.book.transition(record, state, reason=reason, now=self._clock())
            self._want_resync(record.sender)

    async def _sign_and_send(
        self,
        record: TxRecord,
        reason: AttemptReason = AttemptReason.INITIAL,
        reaction: _Reaction | None = None,
    ) -> Attempt | None:
        """Sign the payload at its nonce (initial fees, or a bump over the floor) and send it.

        Nothing is sent once the intent was given up or found mined while the signer worked.
        A first signature that cannot be had now is retried in the background.
        """
        async with self._lock(record):
            if not self._wants_payload(record):
                return None
            fees = self._fees_for(record, noop=False)
            if fees is None:
                return None
            try:
                signed = await self._sign(record, fees)
            except SignRefused as exc:
                if not record.attempts:
                    self._give_up(record, _S.FAILED, f"policy: {exc}")
                return None
            if signed is None:
                if record.state is _S.PENDING and not record.attempts:
                    self._spawn(self._retry_signing(record))
                return None
            if not self._wants_payload(record):
                return None  # cancelled or expired while the enclave signed: never sent
            attempt = self._record_attempt(record, signed, fees, reason)
            if record.state is not _S.SIGNED and _S.SIGNED in _allowed(record):
                self.book.transition(record, _S.SIGNED, reason=reason.value, now=attempt.signed_at)
            self._send(
                record,
                attempt,
                reason=None if reason is AttemptReason.INITIAL else reason,
                reaction=reaction,
            )
            return attempt

    def _wants_payload(self, record: TxRecord) -> bool:
        """The intent's own payload may still be signed and sent at its nonce."""
        if record.state not in (_S.PENDING, _S.SIGNED, _S.BROADCAST, _S.REORGED):
            return False
        if record.has_noop or record.released or record.block is not None:
            return False
        head = self.chain_head()
        return head is None or not record.intent.expired_at(head + 1)

    def _send(
        self,
        record: TxRecord,
        attempt: Attempt,
        *,
        reason: str | None,
        reaction: _Reaction | None = None,
    ) -> None:
        if reason is not None:
            self.observer.resend(ResendReason(reason).value)
            self.observer.status(record, "resent")
        self.ledger.sent(attempt.hash, self.tip.number if self.tip is not None else 0)
        self.fanout.submit(attempt.raw, attempt.hash, _Send(record, attempt, reaction))

    async def _retry_signing(self, record: TxRecord) -> None:
        """An intent the signer could not sign yet: retry with backoff while it stays pending."""
        for delay in retry_delays():
            await asyncio.sleep(delay)
            if record.state is not _S.PENDING or record.attempts:
                return
            head = self.chain_head()
            if head is not None and record.intent.expired_at(head + 1):
                self._give_up(record, _S.EXPIRED, "validUntilBlock passed before it was signed")
                return
            if await self._sign_and_send(record) is not None:
                return
            if record.state is not _S.PENDING:
                return  # type: ignore[unreachable]  # failed meanwhile (mypy narrows too far)

    async def _replace_with_noop(
        self, record: TxRecord, final_state: TxState, reason: AttemptReason
    ) -> bool:
        """Sign a 0-value self-transfer at the record's nonce (no gap opens), then give up.

        The record enters ``final_state`` only once the noop is signed (a bot told
        ``cancelled`` or ``expired`` can rely on it); ``False`` when it could not be signed now.
        """
        async with self._lock(record):
            if record.has_noop and record.state is final_state:
                return True
            fees = self._fees_for(record, noop=True)
            if fees is None:
                return False
            try:
                signed = await self._sign(record, fees, noop=True)
            except SignRefused:
                signed = None
            if signed is None:
                return False
            attempt = self._record_attempt(record, signed, fees, reason)
            if final_state in _allowed(record):
                self.book.transition(record, final_state, reason=reason.value, now=self._clock())
            self._send(record, attempt, reason=reason.value)
            return True

    async def _fill_gap(self, sender: str, nonce: int) -> bool:
        """Sign a noop at a nonce nothing of ours will use; ``False`` when it could not be now."""
        fees_tip = self.fees.priority_fee
        intent = noop_intent(
            f"gap-{sender[2:10]}-{nonce}-{next(self._ids)}",
            sender,
            chain_id=self.chain_id,
            max_fee_per_gas=2 * (self.base_fee or 1_000_000_000) + fees_tip,
            tip=fees_tip,
        )
        record = self.book.open_gap_fill(intent, nonce, now=self._clock())
        async with self._lock(record):
            if record.has_noop:
                return True
            fees = self._fees_for(record, noop=True)
            if fees is None:
                return False
            try:
                signed = await self._sign(record, fees, noop=True)
            except SignRefused:
                signed = None
            if signed is None:
                return False
            attempt = self._record_attempt(record, signed, fees, AttemptReason.GAP_FILL)
            if record.state is _S.PENDING:
                self.book.transition(record, _S.SIGNED, reason="gap fill", now=self._clock())
            self._send(record, attempt, reason=AttemptReason.GAP_FILL.value)
            return True

    def _presigned_of(self, record: TxRecord) -> Presigned | None:
        latest = record.latest
        return self.ledger.presigned(latest.hash) if latest is not None else None

    # -- nonce resync ----------------------------------------------------------------------------

    def _want_resync(self, sender: str) -> None:
        if sender in self._resync_wanted:
            return
        self._resync_wanted.add(sender)
        self._spawn(self._resync(sender))

    async def _counts(self, sender: str) -> tuple[int, int]:
        """(latest, pending) for ``sender``, not trusting one endpoint's jump alone."""
        each = getattr(self.chain, "transaction_counts_each", None)
        if each is None:
            answers: Mapping[str, Any] = {"rpc": await self.chain.transaction_counts(sender)}
        else:
            answers = await each(sender)
        counts = {k: v for k, v in answers.items() if isinstance(v, tuple)}
        if not counts:
            raise ChainReadError(f"no endpoint answered eth_getTransactionCount for {sender}")
        slots = {r.nonce: r for r in self.book.records(sender)}
        latest, pending, alerts = plan_nonce_counts(
            counts, held=held_top(slots), max_gap_fill=self.fees.max_gap_fill
        )
        for alert in alerts:
            self._alert(alert)
        return latest, pending

    def _alert(self, alert: Alert) -> None:
        self.observer.alert(alert.kind, alert.detail)

    async def _resync(self, sender: str) -> None:
        await asyncio.sleep(self._resync_delay)  # let the burst of answers settle first
        self._resync_wanted.discard(sender)
        try:
            latest, pending = await self._counts(sender)
        except ChainReadError as exc:
            log.warning("resync of %s failed: %s", sender, exc)
            return
        await self._apply_counts(sender, latest, pending)

    async def _apply_counts(self, sender: str, latest: int, pending: int) -> None:
        before = {r.nonce: r for r in self.book.records(sender)}
        result = self.book.resync(
            sender, chain_latest=latest, chain_pending=pending, now=self._clock()
        )
        for nonce in result.released:
            self._settle(before[nonce])
        plan = plan_gap_fill(sender, result.gaps, max_gap_fill=self.fees.max_gap_fill)
        if plan.alert is not None:
            self._alert(plan.alert)
        unfilled = False
        for nonce in plan.fill:
            if not await self._fill_gap(sender, nonce):
                unfilled = True
        if unfilled:  # the signer is down or busy: try again shortly, nothing else will
            self._spawn(self._resync_later(sender))
        self.observer.pending(self.book.pending_counts())

    async def _resync_later(self, sender: str) -> None:
        await asyncio.sleep(RETRY_DELAYS[-1])
        self._want_resync(sender)

    # -- settling ----------------------------------------------------------------------------------

    def _settle(self, record: TxRecord) -> None:
        """``record`` needs nothing more from us (final, released or failed for good): forget its
        notes now, evict it once ``retain_settled`` newer ones exist."""
        self.ledger.forget(record)
        self._locks.pop((record.sender, record.nonce), None)
        self._taken_since.pop((record.sender, record.nonce), None)
        self._settled.append(record)
        while len(self._settled) > self._retain_settled:
            self.book.evict(self._settled.popleft())
            self._evicted_any = True


def _allowed(record: TxRecord) -> frozenset[TxState]:
    from nonce import TRANSITIONS

    return TRANSITIONS[record.state]

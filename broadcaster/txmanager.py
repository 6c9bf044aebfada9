"""The transaction manager: intents in, signed attempts out, and the reorg reaction (DESIGN.md §5).

Data flow: ``subscriber -> tracker -> on_chain() -> NonceBook -> signer -> FanOut -> RPCs``.

The reorg reaction (``on_chain`` with a ``Reorg``) is the hot path. It runs synchronously in the
task that read the head frame up to the signer request: ``NonceBook.on_reorg`` finds the records
our book had in the dropped blocks (no block bodies needed), fees are bumped by geth's replace rule
and lifted over the new base fee, the signer request goes out, and the re-signed bytes are handed
to the fan-out, which writes them to every RPC at once. ``broadcaster_reaction_seconds`` measures
the head frame's arrival to the last of those writes. Nothing on the way waits on disk: journal
entries are queued for the writer thread.

A dropped transaction is re-signed even if the new branch happens to hold it too: learning that
needs the new blocks' bodies (a round trip to an RPC), and a replacement at a nonce the chain has
used can never be mined, so acting first costs a signature and some "nonce too low" answers,
while waiting would cost every truly dropped transaction that round trip. Inclusion tracking
then marks the transaction ``included`` in its new block.

Everything else (inclusion scans, finality, expiry, resync, retries of unsigned intents) runs in
background tasks of the manager's own ``TaskGroup``; each guards its exceptions, so no single
failure stops the service.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from broadcaster.chain import ChainReadError, MinedTx
from broadcaster.fanout import BroadcastResult, Written
from broadcaster.inclusion import CanonicalWindow
from broadcaster.rpc_errors import ErrorKind
from heads.events import DeepReorg, Event, Extension, Head, Reorg
from nonce import (
    Attempt,
    AttemptReason,
    BlockRef,
    Fees,
    Intent,
    NonceBook,
    NonceError,
    TxRecord,
    TxState,
    noop_intent,
    replacement_fees,
)
from nonce.errors import DuplicateIdempotencyKey, FeeCapExceeded
from nonce.recovery import (
    ChainFacts,
    FillGap,
    MarkIncluded,
    NonceTaken,
    ReplaceExpired,
    Resend,
    Sign,
    hashes_to_check,
    plan_recovery,
)
from nonce.state import ACTIVE_STATES, GIVEN_UP_STATES
from signer_client import PolicyDenied, SignedTx, SignerError

__all__ = ["REBROADCAST_BLOCKS", "FeePolicy", "TxManager", "TxObserver"]

REBROADCAST_BLOCKS = 2
"""A signed transaction not mined this many blocks after it went out is sent again, byte for
byte: a node may have dropped it (pool eviction, a restart, a reorg it did not re-inject)."""

log = logging.getLogger(__name__)

_S = TxState


class Submitter(Protocol):
    """The fan-out seam: ``FanOut.submit``."""

    def submit(self, raw: bytes, tx_hash: bytes, context: object = None) -> None: ...


class Signer(Protocol):
    async def sign_transaction(self, tx: Mapping[str, Any], sender: str) -> SignedTx: ...


class ChainState(Protocol):
    """The chain-reading seam: ``broadcaster.chain.ChainReader``."""

    async def transaction_counts(self, sender: str) -> tuple[int, int]: ...

    async def blocks(self, hashes: Sequence[str]) -> Mapping[str, Any]: ...

    async def receipts(self, tx_hashes: Sequence[bytes]) -> Mapping[bytes, Any]: ...

    async def base_fee(self) -> int | None: ...

    async def mined_at(self, sender: str, nonce: int) -> MinedTx | None: ...


class Durable(Protocol):
    """The journal's durability barrier: ``SqliteJournal.flush``."""

    async def flush(self) -> None: ...


class TxObserver:
    """Hooks for metrics and ``broadcaster_subscribe`` notifications; no-ops here.

    Called synchronously, on the hot path too: keep them cheap.
    """

    def status(self, record: TxRecord, event: str) -> None:
        """``event``: signed, broadcast, included, reorged, resent, finalized, cancelled,
        expired or failed."""

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


@dataclass(frozen=True, slots=True)
class FeePolicy:
    bump_percent: int = 10
    fee_cap: int | None = None  # never sign maxFeePerGas above this (wei)
    max_bumps: int = 8  # underpriced re-signs per nonce before giving up on bumping


class _Reaction:
    """Measures one reorg reaction: frame read -> the last expected RPC write."""

    __slots__ = ("dropped", "recv_ns", "writes_left")

    def __init__(self, recv_ns: int, dropped: int, writes: int) -> None:
        self.recv_ns = recv_ns
        self.dropped = dropped
        self.writes_left = writes


@dataclass(frozen=True, slots=True)
class _Send:
    """Fan-out context of one attempt."""

    record: TxRecord
    attempt: Attempt
    reaction: _Reaction | None


def _tx_dict(intent: Intent, nonce: int, fees: Fees, *, noop: bool = False) -> dict[str, Any]:
    """The eth-account style dict the signer takes, for the intent (or a noop at its nonce)."""
    to: str | None = intent.sender if noop else intent.to
    value, data, gas = (0, b"", 21_000) if noop else (intent.value, intent.data, intent.gas)
    tx: dict[str, Any] = {
        "type": intent.tx_type if not noop else 2,
        "chainId": intent.chain_id,
        "nonce": nonce,
        "to": to,
        "value": value,
        "data": data,
        "gas": gas,
    }
    if tx["type"] == 2:
        tx["maxFeePerGas"] = fees.max_fee_per_gas
        tx["maxPriorityFeePerGas"] = fees.max_priority_fee_per_gas
    else:
        tx["gasPrice"] = fees.max_fee_per_gas
    if tx["type"] != 0:
        tx["accessList"] = (
            [{"address": a, "storageKeys": list(keys)} for a, keys in intent.access_list]
            if not noop
            else []
        )
    return tx


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
        lookup: Callable[[str | None, str | None], TxRecord | None] | None = None,
        retain_settled: int = 10_000,
        evicted_on_disk: bool = False,
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
        self.base_fee: int | None = None
        self.tip: Head | None = None
        self._group: asyncio.TaskGroup | None = None
        self._pending_spawns: list[Coroutine[Any, Any, None]] = []
        self._scan_queue: dict[str, int] = {}
        self._scan_wakeup = asyncio.Event()
        self._resync_wanted: set[str] = set()
        # Replacements signed ahead of need: included attempt's hash -> (signed, fees). A reorg
        # that drops the attempt sends its replacement at once, with no signer round trip.
        self._presigned: dict[bytes, tuple[SignedTx, Fees]] = {}
        self.presign = presign
        self.presigned_sent = 0  # reorg replacements that went out with no signer round trip
        self._sent_at: dict[bytes, int] = {}  # attempt hash -> tip number when it last went out
        # Memory stays bounded: only the newest ``retain_settled`` finalized records are kept;
        # older ones are evicted and answered from the journal on disk (``lookup``).
        self._lookup = lookup
        self._retain_settled = retain_settled
        self._settled: collections.deque[TxRecord] = collections.deque()
        self._evicted_any = evicted_on_disk
        self._stall_checked = -1
        self._bumped_for: set[bytes] = set()  # attempt hashes already answered with a bump
        self._checked: set[bytes] = set()  # attempts already rechecked after "nonce too low"
        self._results: dict[bytes, dict[str, ErrorKind]] = {}
        self._ids = itertools.count(1)
        self._stopping = False

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

    # -- start-up: nonces and crash recovery -------------------------------------------------

    async def start(self, accounts: Iterable[str]) -> list[Any]:
        """Resync every account's nonce against the chain and reconcile the reloaded book.

        Returns the recovery actions taken (for logs and tests).
        """
        senders = sorted({a.lower() for a in accounts} | set(self.book.senders()))
        try:
            self.base_fee = await self.chain.base_fee()
        except ChainReadError as exc:
            log.warning("could not read the base fee at start: %s", exc)
        return await self._reconcile(senders, head_number=None)

    async def _reconcile(self, senders: Sequence[str], head_number: int | None) -> list[Any]:
        counts = {s: await self.chain.transaction_counts(s) for s in senders}
        records = [r for r in self.book.all_records() if not r.settled and not r.released]
        latest = {s: counts[s][0] for s in senders}
        for record in records:
            if record.sender not in latest:
                latest[record.sender] = (await self.chain.transaction_counts(record.sender))[0]
        check = hashes_to_check(records, latest)
        receipts = await self.chain.receipts(check) if check else {}
        refs = {h: BlockRef(r.block_number, r.block_hash) for h, r in receipts.items()}
        head = head_number if head_number is not None else (self.tip.number if self.tip else None)
        actions = plan_recovery(records, ChainFacts(latest, refs, head))
        now = self._clock()
        for action in actions:
            await self._apply_recovery(action, now)
        for sender in senders:
            chain_latest, chain_pending = counts[sender]
            result = self.book.resync(
                sender, chain_latest=chain_latest, chain_pending=chain_pending, now=now
            )
            for nonce in result.gaps:
                await self._fill_gap(sender, nonce)
        self.observer.pending(self.book.pending_counts())
        return actions

    async def _apply_recovery(self, action: Any, now: float) -> None:
        if isinstance(action, MarkIncluded):
            self.book.mark_included(action.tx_hash, action.block, now=now)
            self.observer.status(action.record, "included")
        elif isinstance(action, Resend):
            record = action.record
            if action.was_included and record.state is _S.INCLUDED:
                self.book.transition(record, _S.REORGED, reason="recovery: not mined", now=now)
            self._send(record, action.attempt, reason="recovery")
        elif isinstance(action, Sign):
            await self._sign_and_send(action.record, self._initial_fees(action.record.intent))
        elif isinstance(action, ReplaceExpired):
            await self._replace_with_noop(
                action.record, _S.EXPIRED, AttemptReason.EXPIRED_REPLACEMENT
            )
        elif isinstance(action, FillGap):
            await self._fill_gap(action.sender, action.nonce)
        elif isinstance(action, NonceTaken):
            await self._nonce_taken(action.record, now)

    async def _nonce_taken(self, record: TxRecord, now: float) -> None:
        """The chain used ``record``'s nonce with a hash the journal does not hold.

        Usually our own attempt whose journal entry was still queued when the process died (the
        reaction path does not wait on disk). Find the mined transaction at (sender, nonce): if it
        carries the intent's payload (or our noop), it is ours and the intent is included;
        otherwise another holder of the key used the nonce and the intent failed.
        """
        mined = await self.chain.mined_at(record.sender, record.nonce)
        intent = record.intent
        if mined is not None:
            ours = (mined.to, mined.value, mined.data) == (intent.to, intent.value, intent.data)
            noop = mined.to == record.sender and mined.value == 0 and not mined.data
            if ours or noop:
                attempt = Attempt(
                    raw=mined.raw,
                    hash=mined.hash,
                    nonce=record.nonce,
                    max_fee_per_gas=mined.max_fee_per_gas,
                    max_priority_fee_per_gas=mined.max_priority_fee_per_gas,
                    signed_at=now,
                    reason=AttemptReason.REORG if record.attempts else AttemptReason.INITIAL,
                    replaces=record.latest.hash if record.latest is not None else None,
                )
                if self.book.by_hash(mined.hash) is None:
                    self.book.add_attempt(record, attempt)
                block = BlockRef(mined.block_number, mined.block_hash)
                self.book.mark_included(mined.hash, block, now=now)
                self.observer.status(record, "included")
                log.warning(
                    "%s/%d: recovered a mined attempt the journal had not written yet (0x%s)",
                    record.sender,
                    record.nonce,
                    mined.hash.hex(),
                )
                return
        log.error(
            "%s/%d: the chain used this nonce with a transaction that is not ours",
            record.sender,
            record.nonce,
        )
        self.observer.alert("nonce_taken", f"{record.sender}/{record.nonce}")
        if _S.FAILED in _allowed(record):
            self.book.transition(record, _S.FAILED, reason="nonce used elsewhere", now=now)
            self.observer.status(record, "failed")

    # -- intents -------------------------------------------------------------------------------

    def _initial_fees(self, intent: Intent) -> Fees:
        return Fees(intent.max_fee_per_gas, intent.max_priority_fee_per_gas)

    async def submit(self, intent: Intent) -> TxRecord:
        """Book ``intent``, make it durable, sign it and send it. Returns its record.

        Raises ``DuplicateIdempotencyKey`` (with the earlier record) for a repeated key.
        Signer trouble does not raise: the record stays ``pending`` and is retried, or goes
        ``failed`` on a policy denial (check ``record.state``).
        """
        if self._stopping:
            raise RuntimeError("the service is shutting down and accepts no new intents")
        if intent.key is not None and self.book.by_key(intent.key) is None:
            earlier = await self.find(key=intent.key)  # evicted: only the journal knows it
            if earlier is not None:
                raise DuplicateIdempotencyKey(intent.key, earlier)
        record = self.book.accept(intent, now=self._clock())
        await self.journal.flush()  # an accepted intent is never lost (DESIGN.md §5)
        self.observer.pending(self.book.pending_counts())
        await self._sign_and_send(record, self._initial_fees(intent))
        return record

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

    # -- signing and sending -----------------------------------------------------------------

    async def _sign(self, record: TxRecord, fees: Fees, *, noop: bool = False) -> SignedTx | None:
        tx = _tx_dict(record.intent, record.nonce, fees, noop=noop)
        started = self._clock_ns()
        try:
            signed = await self.signer.sign_transaction(tx, record.sender)
        except PolicyDenied as exc:
            self.observer.signer_error("policy_denied")
            log.warning("%s/%d: signer refused: %s", record.sender, record.nonce, exc)
            if _S.FAILED in _allowed(record) and not record.attempts:
                self.book.transition(record, _S.FAILED, reason=f"policy: {exc}", now=self._clock())
                self.observer.status(record, "failed")
                self._want_resync(record.sender)
            return None
        except SignerError as exc:
            self.observer.signer_error(type(exc).__name__)
            log.warning("%s/%d: signer failed: %s", record.sender, record.nonce, exc)
            return None
        self.observer.signed((self._clock_ns() - started) / 1e9)
        return signed

    def _record_attempt(
        self, record: TxRecord, signed: SignedTx, fees: Fees, reason: AttemptReason
    ) -> Attempt:
        previous = record.latest
        attempt = Attempt(
            raw=signed.raw,
            hash=signed.hash,
            nonce=record.nonce,
            max_fee_per_gas=fees.max_fee_per_gas,
            max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
            signed_at=self._clock(),
            reason=reason,
            replaces=previous.hash if previous is not None else None,
        )
        self.book.add_attempt(record, attempt)
        return attempt

    async def _sign_and_send(
        self,
        record: TxRecord,
        fees: Fees,
        reason: AttemptReason = AttemptReason.INITIAL,
        reaction: _Reaction | None = None,
    ) -> Attempt | None:
        signed = await self._sign(record, fees)
        if signed is None:
            if record.state is _S.PENDING:
                self._spawn(self._retry_signing(record))
            return None
        attempt = self._record_attempt(record, signed, fees, reason)
        if record.state is not _S.SIGNED and _S.SIGNED in _allowed(record):
            self.book.transition(record, _S.SIGNED, reason=reason.value, now=attempt.signed_at)
            self.observer.status(record, "signed")
        self._send(
            record,
            attempt,
            reason=None if reason is AttemptReason.INITIAL else reason,
            reaction=reaction,
        )
        return attempt

    def _send(
        self,
        record: TxRecord,
        attempt: Attempt,
        *,
        reason: str | None,
        reaction: _Reaction | None = None,
    ) -> None:
        if reason is not None:
            self.observer.resend(str(reason))
            self.observer.status(record, "resent")
        self._sent_at[attempt.hash] = self.tip.number if self.tip is not None else 0
        self.fanout.submit(attempt.raw, attempt.hash, _Send(record, attempt, reaction))

    async def _retry_signing(self, record: TxRecord) -> None:
        """An intent the signer could not sign yet: retry with backoff while it stays pending."""
        delay = 0.1
        while record.state is _S.PENDING and not record.attempts:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            if record.state is not _S.PENDING:
                return  # type: ignore[unreachable]  # cancelled meanwhile (mypy narrows too far)
            signed = await self._sign(record, self._initial_fees(record.intent))
            if signed is None:
                continue
            fees = self._initial_fees(record.intent)
            attempt = self._record_attempt(record, signed, fees, AttemptReason.INITIAL)
            self.book.transition(record, _S.SIGNED, reason="signed after retry", now=self._clock())
            self.observer.status(record, "signed")
            self._send(record, attempt, reason=None)
            return

    async def _replace_with_noop(
        self, record: TxRecord, final_state: TxState, reason: AttemptReason
    ) -> None:
        """Sign a 0-value self-transfer at the record's nonce (no gap opens), then give up."""
        fees = self._bumped(record)
        if fees is None:
            return
        signed = await self._sign(record, fees, noop=True)
        now = self._clock()
        if final_state in _allowed(record):
            self.book.transition(record, final_state, reason=reason.value, now=now)
            self.observer.status(record, final_state.value)
        if signed is None:
            return
        attempt = self._record_attempt(record, signed, fees, reason)
        self._send(record, attempt, reason=reason.value)

    async def _fill_gap(self, sender: str, nonce: int) -> None:
        base = self.base_fee or 1_000_000_000
        tip = 1_000_000_000
        intent = noop_intent(
            f"gap-{sender[2:10]}-{nonce}-{next(self._ids)}",
            sender,
            chain_id=self.chain_id,
            max_fee_per_gas=2 * base + tip,
            tip=tip,
        )
        record = self.book.open_gap_fill(intent, nonce, now=self._clock())
        fees = Fees(2 * base + tip, tip)
        if record.latest is not None:
            bumped = self._bumped(record)
            if bumped is None:
                return
            fees = bumped
        signed = await self._sign(record, fees, noop=True)
        if signed is None:
            return
        attempt = self._record_attempt(record, signed, fees, AttemptReason.GAP_FILL)
        if record.state is _S.PENDING:
            self.book.transition(record, _S.SIGNED, reason="gap fill", now=self._clock())
        self._send(record, attempt, reason=AttemptReason.GAP_FILL.value)

    def _bumped(self, record: TxRecord) -> Fees | None:
        """Replacement fees over the record's latest attempt (geth's rule, new base fee).

        A replacement signed ahead (and not used) counts as the latest signature: the enclave's
        nonce protection compares a new payload with the last one it signed at that nonce.
        """
        latest = record.latest
        if latest is None:
            return self._initial_fees(record.intent)
        old = Fees(latest.max_fee_per_gas, latest.max_priority_fee_per_gas)
        ahead = self._presigned.get(latest.hash)
        if ahead is not None:
            old = Fees(
                max(old.max_fee_per_gas, ahead[1].max_fee_per_gas),
                max(old.max_priority_fee_per_gas, ahead[1].max_priority_fee_per_gas),
            )
        try:
            return replacement_fees(
                old,
                base_fee=self.base_fee or 0,
                bump_percent=self.fees.bump_percent,
                tip=None if record.intent.noop else record.intent.max_priority_fee_per_gas,
                cap=self.fees.fee_cap,
            )
        except FeeCapExceeded as exc:
            log.error("%s/%d: cannot bump fees: %s", record.sender, record.nonce, exc)
            self.observer.alert("fee_cap", f"{record.sender}/{record.nonce}: {exc}")
            return None

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
            sent: list[TxRecord] = []
            tip_number = event.tip.number
            for record in dropped:
                if record.sender not in waiting and self._send_presigned(
                    record, reaction, tip_number
                ):
                    sent.append(record)
                else:
                    waiting.add(record.sender)
                    slow.append(record)
            if slow:
                self._react(slow, reaction, tip_number)
            for record in dropped:
                self.observer.status(record, "reorged")
            for record in sent:
                self.observer.resend(AttemptReason.REORG.value)
                self.observer.status(record, "resent")
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

    def _send_presigned(self, record: TxRecord, reaction: _Reaction, tip_number: int) -> bool:
        """Send the replacement signed ahead for ``record``'s dropped attempt, if still good."""
        latest = record.latest
        if latest is None or not self._presigned:
            return False
        ahead = self._presigned.pop(latest.hash, None)
        if ahead is None:
            return False
        signed, fees = ahead
        if record.intent.expired_at(tip_number + 1):
            return False  # a noop must take the nonce instead
        needed = self._bumped(record)
        if (
            needed is None
            or fees.max_fee_per_gas < needed.max_fee_per_gas
            or fees.max_priority_fee_per_gas < needed.max_priority_fee_per_gas
        ):
            return False  # the base fee rose past what it was signed for: sign afresh
        attempt = self._record_attempt(record, signed, fees, AttemptReason.REORG)
        self.presigned_sent += 1
        if record.state is _S.REORGED:
            self.book.transition(record, _S.SIGNED, reason="re-signed ahead", now=attempt.signed_at)
        self._sent_at[attempt.hash] = tip_number
        self.fanout.submit(attempt.raw, attempt.hash, _Send(record, attempt, reaction))
        return True

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
            self._presigned[latest.hash] = (signed, fees)

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

    # -- fan-out callbacks ---------------------------------------------------------------------

    def on_written(self, written: Written) -> None:
        send = written.context
        if type(send) is not _Send:
            return
        record = send.record
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

    # -- nonce resync ----------------------------------------------------------------------------

    def _want_resync(self, sender: str) -> None:
        if sender in self._resync_wanted:
            return
        self._resync_wanted.add(sender)
        self._spawn(self._resync(sender))

    async def _resync(self, sender: str) -> None:
        await asyncio.sleep(0.2)  # let the burst of answers for this sender settle first
        self._resync_wanted.discard(sender)
        try:
            latest, pending = await self.chain.transaction_counts(sender)
        except ChainReadError as exc:
            log.warning("resync of %s failed: %s", sender, exc)
            return
        result = self.book.resync(
            sender, chain_latest=latest, chain_pending=pending, now=self._clock()
        )
        for nonce in result.gaps:
            await self._fill_gap(sender, nonce)
        self.observer.pending(self.book.pending_counts())


def _allowed(record: TxRecord) -> frozenset[TxState]:
    from nonce import TRANSITIONS

    return TRANSITIONS[record.state]

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
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from broadcaster.rpc.chain_reader import ChainReadError, MinedTx
from broadcaster.rpc.error_table import ErrorKind
from broadcaster.rpc.fanout import BroadcastResult
from broadcaster.tx.inclusion import CanonicalWindow
from heads.events import Head
from nonce import (
    Attempt,
    AttemptReason,
    Fees,
    Intent,
    NonceBook,
    TxRecord,
    TxState,
    noop_intent,
    replacement_fees,
)
from nonce.errors import FeeCapExceeded
from signer_client import PolicyDenied, SignedTx, SignerError

__all__ = [
    "REBROADCAST_BLOCKS",
    "ChainState",
    "Durable",
    "FeePolicy",
    "Presigned",
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


class Presigned(NamedTuple):
    """A replacement signed ahead of need for an included attempt (the dict key): the attempt
    to send if a reorg drops it, and the highest base fee it is still good for."""

    attempt: Attempt
    fees: Fees
    max_base_fee: int


@dataclass(slots=True)
class _Send:
    """Fan-out context of one attempt; ``written`` once any RPC's socket took its bytes."""

    record: TxRecord
    attempt: Attempt
    reaction: _Reaction | None
    written: bool = False


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
        self._presigned: dict[bytes, Presigned] = {}
        self.presign = presign
        # Called right after a reorg reaction's last write (the service passes os.sched_yield
        # when [cpu] yield_after_reaction is on: see broadcaster.scheduling).
        self._after_reaction = after_reaction
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

    # -- provided by the parts (reaction.py, recovery.py) ----------------------------------

    async def _inclusion_worker(self) -> None:
        raise NotImplementedError

    async def _reconcile(self, senders: Sequence[str], head_number: int | None) -> list[Any]:
        raise NotImplementedError

    async def _recheck(self, records: list[TxRecord], *, resend: bool) -> None:
        raise NotImplementedError

    # -- lookups -----------------------------------------------------------------------------

    def _initial_fees(self, intent: Intent) -> Fees:
        return Fees(intent.max_fee_per_gas, intent.max_priority_fee_per_gas)

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
                max(old.max_fee_per_gas, ahead.fees.max_fee_per_gas),
                max(old.max_priority_fee_per_gas, ahead.fees.max_priority_fee_per_gas),
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

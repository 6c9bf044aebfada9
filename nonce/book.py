"""``NonceBook``: per-sender nonce allocation and the transaction state machine (DESIGN.md §5).

Pure and synchronous: no clock (every change takes ``now``), no I/O (changes go to a
:class:`~nonce.entries.Journal` whose ``append`` only enqueues). It sits on the reorg hot path, so
lookups are single dict hits and a change is a table check, a few field stores and one append::

    book.resync(sender, chain_latest=7, chain_pending=7, now=t)      # at start, before reserving
    rec = book.accept(intent, now=t)                                   # reserves the next nonce
    book.add_attempt(rec, attempt)                                     # the signed bytes
    book.transition(rec, TxState.SIGNED, reason="signed", now=t)
    book.mark_included(tx_hash, BlockRef(n, h), now=t)                 # a canonical block's txs
    for rec in book.on_reorg(reorg_old_hashes, now=t): ...             # re-sign these, in order
    book.finalize(block_hash, now=t)                                   # finality_depth deep

Every state change, and every change of a slot's chain facts, goes through ``_apply``: it keeps
the indexes and the pending counts right, logs, journals one ``StateChanged`` and, when the state
itself changed, tells the book's listener (``book.listen(fn)``; ``fn(record, old, new)``). The
observers (metrics, the API's status notifications) hang on that: no transition is announced by
hand, and a change of chain facts alone (a noop of a cancelled intent mined) announces nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping

from nonce.entries import (
    AttemptAdded,
    BundleOpened,
    Journal,
    NullJournal,
    RecordOpened,
    SlotReleased,
    StateChanged,
)
from nonce.errors import (
    AttemptMismatch,
    DuplicateIdempotencyKey,
    DuplicateIntent,
    InvalidTransition,
    NonceInUse,
    SenderNotSynced,
    UnknownIntent,
)
from nonce.resync import ResyncResult, find_gaps, next_nonce
from nonce.state import (
    ACTIVE_STATES,
    GIVEN_UP_STATES,
    TRANSITIONS,
    Address,
    Attempt,
    BlockRef,
    Intent,
    TxRecord,
    TxState,
)

logger = logging.getLogger(__name__)
_DEBUG = logging.DEBUG
_INCLUDED = TxState.INCLUDED
_REORGED = TxState.REORGED
_FINALIZED = TxState.FINALIZED
_INCLUDABLE = frozenset((TxState.PENDING, TxState.SIGNED, TxState.BROADCAST, TxState.REORGED))

TransitionListener = Callable[[TxRecord, TxState, TxState], None]
"""``listener(record, old, new)``, called synchronously after ``record`` moved from ``old`` to
``new`` (the record already shows ``new``; its ``state_reason`` says why). Keep it cheap: it runs
on the reorg reaction's path."""


class NonceBook:
    """All our transactions by ``(sender, nonce)``, by any attempt's hash, by intent id and key."""

    __slots__ = (
        "_by_block",
        "_by_hash",
        "_by_intent",
        "_by_key",
        "_deferred",
        "_journal",
        "_listeners",
        "_next",
        "_pending",
        "_slots",
    )

    def __init__(self, journal: Journal | None = None) -> None:
        self._journal: Journal = journal if journal is not None else NullJournal()
        self._next: dict[Address, int] = {}
        self._slots: dict[Address, dict[int, TxRecord]] = {}
        self._by_hash: dict[bytes, TxRecord] = {}
        self._by_intent: dict[str, TxRecord] = {}
        self._by_key: dict[str, TxRecord] = {}
        self._by_block: dict[str, list[TxRecord]] = {}
        self._pending: dict[Address, int] = {}
        self._listeners: tuple[TransitionListener, ...] = ()
        self._deferred: list[tuple[TxRecord, TxState, TxState]] | None = None

    def listen(self, listener: TransitionListener) -> None:
        """Call ``listener(record, old, new)`` after every state change from now on."""
        self._listeners = (*self._listeners, listener)

    def defer_announcements(self) -> None:
        """Hold the listeners' calls until :meth:`announce` (the reorg reaction writes first and
        tells the observers right after; the book and the journal change at once)."""
        if self._deferred is None:
            self._deferred = []

    def announce(self) -> None:
        """Make the calls held since :meth:`defer_announcements`, in order."""
        held, self._deferred = self._deferred, None
        if held:
            listeners = self._listeners
            for record, old, new in held:
                for listener in listeners:
                    listener(record, old, new)

    # -- lookups (the hot ones are one dict hit) ------------------------------------------------

    def get(self, sender: Address, nonce: int) -> TxRecord | None:
        """The record occupying ``(sender, nonce)``, if any."""
        slots = self._slots.get(sender)
        return slots.get(nonce) if slots is not None else None

    def by_hash(self, tx_hash: bytes) -> TxRecord | None:
        """The record that signed ``tx_hash`` (any of its attempts, noops included)."""
        return self._by_hash.get(tx_hash)

    def find_intent(self, intent_id: str) -> TxRecord | None:
        return self._by_intent.get(intent_id)

    def by_intent(self, intent_id: str) -> TxRecord:
        """The record of ``intent_id``; raises :class:`UnknownIntent`."""
        try:
            return self._by_intent[intent_id]
        except KeyError:
            raise UnknownIntent(intent_id) from None

    def by_key(self, key: str) -> TxRecord | None:
        """The record booked under idempotency ``key``, if any."""
        return self._by_key.get(key)

    def in_block(self, block_hash: str) -> tuple[TxRecord, ...]:
        """Records whose inclusion the book holds in block ``block_hash``."""
        return tuple(self._by_block.get(block_hash, ()))

    def records(self, sender: Address) -> list[TxRecord]:
        """The records occupying ``sender``'s slots, in nonce order."""
        slots = self._slots.get(sender, {})
        return [slots[n] for n in sorted(slots)]

    def all_records(self) -> Iterator[TxRecord]:
        """Every record the book holds (released ones included), in no particular order."""
        return iter(self._by_intent.values())

    def senders(self) -> list[Address]:
        return sorted(self._next.keys() | self._slots.keys())

    def peek_next(self, sender: Address) -> int | None:
        """The nonce ``reserve`` would hand out next, ``None`` if never synced."""
        return self._next.get(sender)

    def pending_count(self, sender: Address) -> int:
        """Records of ``sender`` in pending/signed/broadcast/reorged (the metrics gauge)."""
        return self._pending.get(sender, 0)

    def pending_counts(self) -> Mapping[Address, int]:
        """Every known sender's pending count, zeros included (so a gauge drops back to 0)."""
        pending = self._pending
        return {
            s: pending.get(s, 0) for s in self._next.keys() | self._slots.keys() | pending.keys()
        }

    # -- booking -------------------------------------------------------------------------------

    def reserve(self, sender: Address) -> int:
        """Allocate ``sender``'s next nonce. Low level: ``accept`` books a record with it; a
        reserved nonce nothing is booked at becomes a gap (``gaps``) or is reclaimed by ``resync``.
        """
        try:
            nonce = self._next[sender]
        except KeyError:
            raise SenderNotSynced(sender) from None
        self._next[sender] = nonce + 1
        return nonce

    def accept(self, intent: Intent, *, now: float, nonce: int | None = None) -> TxRecord:
        """Book ``intent`` at the sender's next nonce (or at ``nonce``, for bytes signed elsewhere).

        Raises :class:`DuplicateIntent`, :class:`DuplicateIdempotencyKey` (carrying the earlier
        record, so the API can answer with it) or :class:`NonceInUse`. The journal gets a
        ``RecordOpened``; the caller makes it durable (``await journal.flush()``) before it
        acknowledges the intent.
        """
        if intent.id in self._by_intent:
            raise DuplicateIntent(intent.id)
        if intent.key is not None and (earlier := self._by_key.get(intent.key)) is not None:
            raise DuplicateIdempotencyKey(intent.key, earlier)
        sender = intent.sender
        if nonce is None:
            nonce = self.reserve(sender)
            if intent.authorizations and intent.nonce_span > 1:
                # EIP-7702 self-sponsored: the authorization's nonce is n + 1
                self._next[sender] = nonce + intent.nonce_span
        else:
            occupant = self.get(sender, nonce)
            if occupant is not None:
                if occupant.covers_nonce or occupant.attempts:
                    raise NonceInUse(sender, nonce, occupant.intent.id)
                self._release(occupant, now)
            if nonce >= self._next.get(sender, 0):
                self._next[sender] = nonce + 1
        record = TxRecord(intent=intent, nonce=nonce, state=TxState.PENDING, updated_at=now)
        self._slots.setdefault(sender, {})[nonce] = record
        self._by_intent[intent.id] = record
        if intent.key is not None:
            self._by_key[intent.key] = record
        self._pending[sender] = self._pending.get(sender, 0) + 1
        self._journal.append(RecordOpened(intent, nonce, TxState.PENDING, now))
        return record

    def open_bundle(self, bundle_id: str, spec: bytes, *, now: float) -> None:
        """Journal a bundle's definition (``BundleOpened``) before its members are booked: the
        same batch or an earlier one makes it durable with them."""
        self._journal.append(BundleOpened(bundle_id, spec, now))

    def add_attempt(self, record: TxRecord, attempt: Attempt) -> None:
        """Keep a signed attempt (its raw bytes are journaled). The state is not changed: follow
        with ``transition(record, SIGNED, ...)`` unless the attempt is a noop of a given-up record.
        """
        if attempt.nonce != record.nonce:
            raise AttemptMismatch(record.sender, record.nonce, f"attempt nonce {attempt.nonce}")
        if attempt.hash in self._by_hash:
            raise AttemptMismatch(
                record.sender, record.nonce, f"hash 0x{attempt.hash.hex()} reused"
            )
        if record.released:
            raise AttemptMismatch(record.sender, record.nonce, "the record gave its nonce back")
        record.attempts.append(attempt)
        self._by_hash[attempt.hash] = record
        self._journal.append(AttemptAdded(record.intent.id, attempt))

    # -- the state machine ---------------------------------------------------------------------

    def transition(
        self,
        record: TxRecord,
        new: TxState,
        *,
        reason: str,
        now: float,
        block: BlockRef | None = None,
        tx_hash: bytes | None = None,
    ) -> None:
        """Move ``record`` to ``new`` if ``TRANSITIONS`` allows it, else :class:`InvalidTransition`.

        ``included`` needs ``block`` and ``tx_hash`` (one of the record's attempts);
        ``mark_included`` finds the record by hash and calls this for you.
        """
        old = record.state
        if new not in TRANSITIONS[old]:
            raise InvalidTransition(record.sender, record.nonce, old, new)
        if new is _INCLUDED:
            if block is None or tx_hash is None or self._by_hash.get(tx_hash) is not record:
                raise AttemptMismatch(
                    record.sender, record.nonce, "included needs a block and one of its hashes"
                )
            self._apply(record, new, reason, now, block, tx_hash)
        elif new is _FINALIZED:
            self._apply(record, new, reason, now, record.block, record.included_hash, settled=True)
        elif old is _INCLUDED:
            self._apply(record, new, reason, now, None, None)
        else:
            self._apply(record, new, reason, now, record.block, record.included_hash)

    def mark_included(self, tx_hash: bytes, block: BlockRef, *, now: float) -> TxRecord | None:
        """``tx_hash`` is in canonical ``block``: record it; ``None`` when the hash is not ours.

        The intent becomes ``included`` unless the mined attempt is a noop of a given-up record
        (then only the slot's facts change). Idempotent for a repeated (hash, block).
        """
        record = self._by_hash.get(tx_hash)
        if record is None:
            return None
        if record.included_hash == tx_hash and record.block == block:
            return record
        state = record.state
        if record.settled:
            logger.warning(
                "%s/%d: settled, ignoring inclusion in %s", record.sender, record.nonce, block.hash
            )
            return record
        if state in _INCLUDABLE:
            self._apply(record, _INCLUDED, "included", now, block, tx_hash)
        elif state in GIVEN_UP_STATES and not _attempt(record, tx_hash).is_noop:
            self._apply(
                record, _INCLUDED, "included: replacement lost the race", now, block, tx_hash
            )
        else:  # already included elsewhere, or a given-up record's noop was mined
            self._apply(record, state, "included", now, block, tx_hash)
        return record

    def on_reorg(self, old_blocks: Iterable[str], *, now: float) -> list[TxRecord]:
        """Blocks ``old_blocks`` (hashes) left the canonical chain: drop the inclusions held there.

        Included records become ``reorged``; noop-settled records keep their state but lose the
        block. Returns every record that needs re-sending, sorted by ``(sender, nonce)`` so later
        nonces of a sender keep their order. Needs no block bodies: the book already knows what
        it had in each block, so the reaction starts before anything is fetched.
        """
        dropped: list[TxRecord] = []
        for block_hash in old_blocks:
            held = self._by_block.pop(block_hash, None)
            if held is None:
                continue
            for record in held:
                if record.settled:
                    logger.error(
                        "%s/%d: finalized block %s reorged out (deeper than finality)",
                        record.sender,
                        record.nonce,
                        block_hash,
                    )
                    continue
                new = _REORGED if record.state is _INCLUDED else record.state
                self._apply(record, new, "reorg", now, None, None, unindex=False)
                dropped.append(record)
        if len(dropped) > 1:
            dropped.sort(key=_slot_order)
        return dropped

    def finalize(self, block_hash: str, *, now: float) -> list[TxRecord]:
        """Block ``block_hash`` is final: its included records become ``finalized`` (settled)."""
        held = self._by_block.pop(block_hash, None)
        if held is None:
            return []
        for record in held:
            new = _FINALIZED if record.state is _INCLUDED else record.state
            self._apply(
                record,
                new,
                "finalized",
                now,
                record.block,
                record.included_hash,
                unindex=False,
                settled=True,
            )
        return held

    def _apply(
        self,
        record: TxRecord,
        new: TxState,
        reason: str,
        now: float,
        block: BlockRef | None,
        included_hash: bytes | None,
        *,
        unindex: bool = True,
        settled: bool = False,
    ) -> None:
        """The one place a record changes: indexes, pending counts, log line, journal entry."""
        old = record.state
        old_block = record.block
        moved = old_block is not block
        if unindex and old_block is not None and not record.settled and (moved or settled):
            held = self._by_block.get(old_block.hash)
            if held is not None:
                held.remove(record)
                if not held:
                    del self._by_block[old_block.hash]
        if moved and block is not None and not settled:
            self._by_block.setdefault(block.hash, []).append(record)
        if (old in ACTIVE_STATES) != (new in ACTIVE_STATES):
            sender = record.intent.sender
            self._pending[sender] = self._pending.get(sender, 0) + (
                1 if new in ACTIVE_STATES else -1
            )
        record.state = new
        record.block = block
        record.included_hash = included_hash
        record.state_reason = reason
        record.updated_at = now
        if settled:
            record.settled = True
        if logger.isEnabledFor(_DEBUG):
            logger.debug(
                "%s/%d %s -> %s (%s) block=%s",
                record.intent.sender,
                record.nonce,
                old.value,
                new.value,
                reason,
                block.number if block else None,
            )
        self._journal.append(
            StateChanged(
                record.intent.id, old, new, reason, now, block, included_hash, record.settled
            )
        )
        if old is not new:
            if self._deferred is not None:
                self._deferred.append((record, old, new))
            else:
                for listener in self._listeners:
                    listener(record, old, new)

    # -- reconciliation with the chain ---------------------------------------------------------

    def resync(
        self, sender: Address, *, chain_latest: int, chain_pending: int, now: float
    ) -> ResyncResult:
        """Reconcile ``sender``'s next nonce with ``eth_getTransactionCount`` (latest, pending).

        Run at start, after every reorg and after nonce errors. The rule is ``nonce.resync``'s:
        ``next = max(chain_latest, chain_pending, held)``; it moves backwards only over nonces
        reserved but never signed (their given-up records are released and journaled).
        """
        old_next = self._next.get(sender)
        slots = self._slots.get(sender, {})
        new_next = next_nonce(slots, chain_latest, chain_pending)
        released = sorted(n for n in slots if n >= new_next)
        for nonce in released:
            self._release(slots[nonce], now)
        self._next[sender] = new_next
        if old_next != new_next:
            logger.info(
                "%s: next nonce %s -> %d (chain latest %d, pending %d)",
                sender,
                old_next,
                new_next,
                chain_latest,
                chain_pending,
            )
        return ResyncResult(
            sender, old_next, new_next, tuple(released), tuple(find_gaps(slots, chain_latest))
        )

    def gaps(self, sender: Address, chain_latest: int) -> list[int]:
        """Nonces the manager must fill with a noop, ascending (``nonce.resync.find_gaps``)."""
        return find_gaps(self._slots.get(sender, {}), chain_latest)

    def open_gap_fill(self, intent: Intent, nonce: int, *, now: float) -> TxRecord:
        """The record to hang a gap's noop attempt on (``AttemptReason.GAP_FILL``).

        The slot's given-up record when there is one (its status stays), else a new record booked
        for ``intent`` (a ``noop_intent``) at ``nonce``. Then sign a noop, ``add_attempt``, and for
        a new record ``transition(.., SIGNED)``.
        """
        record = self.get(intent.sender, nonce)
        if record is not None and not record.covers_nonce:
            return record
        return self.accept(intent, now=now, nonce=nonce)

    def _release(self, record: TxRecord, now: float) -> None:
        slots = self._slots[record.intent.sender]
        if slots.get(record.nonce) is record:
            del slots[record.nonce]
        record.released = True
        record.updated_at = now
        self._journal.append(SlotReleased(record.intent.id, now))

    # -- memory ----------------------------------------------------------------------------------

    def evict(self, record: TxRecord) -> None:
        """Forget a settled record (its journal rows stay, and ``journal.lookup`` finds it by
        id or idempotency key: the caller checks there for what the book no longer holds)."""
        slots = self._slots.get(record.intent.sender)
        if slots is not None and slots.get(record.nonce) is record:
            del slots[record.nonce]
        for attempt in record.attempts:
            if self._by_hash.get(attempt.hash) is record:
                del self._by_hash[attempt.hash]
        if self._by_intent.get(record.intent.id) is record:
            del self._by_intent[record.intent.id]
        key = record.intent.key
        if key is not None and self._by_key.get(key) is record:
            del self._by_key[key]
        if record.state in ACTIVE_STATES:
            self._pending[record.intent.sender] -= 1
        if record.block is not None and not record.settled:
            held = self._by_block.get(record.block.hash)
            if held is not None and record in held:
                held.remove(record)

    @classmethod
    def restore(cls, records: Iterable[TxRecord], journal: Journal | None = None) -> NonceBook:
        """A book holding ``records`` as loaded from a journal (booking order), without
        journaling them again. Each sender's next nonce is one past its highest occupied slot;
        ``resync`` it against the chain before reserving.
        """
        book = cls(journal)
        for record in records:
            sender = record.intent.sender
            book._by_intent[record.intent.id] = record
            if record.intent.key is not None:
                book._by_key[record.intent.key] = record
            for attempt in record.attempts:
                book._by_hash[attempt.hash] = record
            if record.released:
                continue
            book._slots.setdefault(sender, {})[record.nonce] = record
            book._next[sender] = max(book._next.get(sender, 0), record.nonce + record.span)
            if record.state in ACTIVE_STATES:
                book._pending[sender] = book._pending.get(sender, 0) + 1
            if record.block is not None and not record.settled:
                book._by_block.setdefault(record.block.hash, []).append(record)
        return book


def _attempt(record: TxRecord, tx_hash: bytes) -> Attempt:
    for attempt in record.attempts:
        if attempt.hash == tx_hash:
            return attempt
    raise AttemptMismatch(record.sender, record.nonce, f"0x{tx_hash.hex()} is not its attempt")


def _slot_order(record: TxRecord) -> tuple[str, int]:
    return (record.intent.sender, record.nonce)


__all__ = ["NonceBook", "ResyncResult", "TransitionListener"]

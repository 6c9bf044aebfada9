"""What the book hands to its journal, and the ``Journal`` seam (a Protocol with fakes).

Entries are immutable values holding the facts at the moment of the change (never the mutable
``TxRecord``), so a writer thread may serialise them later without a lock. They are NamedTuples
rather than frozen dataclasses on purpose: three or four are built per re-signed transaction on
the reorg hot path, and a tuple is built several times faster than a frozen dataclass.

The book calls ``journal.append(entry)`` on every change, on the reorg hot path too:
implementations must make ``append`` O(1) and never block (``SqliteJournal`` only enqueues).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, TypeVar

from nonce.state import Attempt, BlockRef, Intent, TxState


class RecordOpened(NamedTuple):
    """An intent was booked at ``(intent.sender, nonce)``."""

    intent: Intent
    nonce: int
    state: TxState
    at: float


class AttemptAdded(NamedTuple):
    """A signed attempt was added to the record of ``intent_id`` (raw bytes included)."""

    intent_id: str
    attempt: Attempt


class StateChanged(NamedTuple):
    """The record's state and/or chain facts changed (``old == new`` for a facts-only change).

    Facts-only changes happen when a noop attempt of a cancelled/expired/failed record is included,
    dropped or finalized: the intent's status stays, the slot's inclusion moves.
    """

    intent_id: str
    old: TxState
    new: TxState
    reason: str
    at: float
    block: BlockRef | None
    included_hash: bytes | None
    settled: bool


class SlotReleased(NamedTuple):
    """The record gave its nonce back (``NonceBook.resync`` moved the next nonce below it)."""

    intent_id: str
    at: float


class BundleOpened(NamedTuple):
    """A ``broadcaster_sendBundle`` bundle was accepted (DESIGN.md 5a): ``spec`` is its
    definition (member intent ids, raw transactions, block bounds) as the broadcaster encodes
    it, opaque here; journaled before its members' ``RecordOpened`` so a restart re-targets it."""

    bundle_id: str
    spec: bytes
    at: float


Entry = RecordOpened | AttemptAdded | StateChanged | SlotReleased | BundleOpened
_E = TypeVar("_E")


class Journal(Protocol):
    """Durable sink of book changes. ``append`` must be O(1) and must never block."""

    def append(self, entry: Entry) -> None: ...


class NullJournal:
    """Journals nothing (benchmarks, throwaway books)."""

    def append(self, entry: Entry) -> None:
        pass


class MemoryJournal:
    """Keeps entries in a list, in order: the fake for tests of code that drives a book."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def append(self, entry: Entry) -> None:
        self.entries.append(entry)

    def of_type(self, kind: type[_E]) -> list[_E]:
        return [e for e in self.entries if isinstance(e, kind)]


__all__ = [
    "AttemptAdded",
    "BundleOpened",
    "Entry",
    "Journal",
    "MemoryJournal",
    "NullJournal",
    "RecordOpened",
    "SlotReleased",
    "StateChanged",
]

"""Errors of the transaction bookkeeping core.

    NonceError
    ├── InvalidIntent            an intent value that cannot be signed as given (field, reason)
    ├── InvalidTransition        a state change the transition table forbids (key, old, new)
    ├── UnknownIntent            no record holds this intent id
    ├── DuplicateIntent          an intent id that is already booked
    ├── DuplicateIdempotencyKey  an idempotency key that is already booked (carries the record)
    ├── NonceInUse               an explicit nonce whose slot a live record occupies
    ├── SenderNotSynced          a nonce asked for a sender whose next nonce was never resynced
    ├── AttemptMismatch          an attempt that does not belong to the record (nonce, hash reuse)
    ├── FeeError
    │   ├── BumpTooSmall         a replacement bump below geth's minimum of 10 %
    │   └── FeeCapExceeded       the replacement fees the rules demand exceed the caller's cap
    └── JournalError             the durable journal failed; acknowledged durability is at risk
        ├── JournalClosed        the journal was closed (or its writer died)
        └── StaleEpoch           a write under a lease epoch another instance has replaced (fenced)

Errors carry fields, not just text; sqlite3 errors are converted at the journal boundary and
chained with ``from``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nonce.state import TxRecord, TxState


class NonceError(Exception):
    """Base of every error raised by ``nonce``."""


class InvalidIntent(NonceError, ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid intent field {field!r}: {reason}")
        self.field = field
        self.reason = reason


class InvalidTransition(NonceError):
    def __init__(self, sender: str, nonce: int, old: TxState, new: TxState) -> None:
        super().__init__(f"{sender}/{nonce}: transition {old.value} -> {new.value} is not allowed")
        self.sender = sender
        self.nonce = nonce
        self.old = old
        self.new = new


class UnknownIntent(NonceError, KeyError):
    def __init__(self, intent_id: str) -> None:
        super().__init__(intent_id)
        self.intent_id = intent_id

    def __str__(self) -> str:
        return f"unknown intent {self.intent_id!r}"


class DuplicateIntent(NonceError):
    def __init__(self, intent_id: str) -> None:
        super().__init__(f"intent {intent_id!r} is already booked")
        self.intent_id = intent_id


class DuplicateIdempotencyKey(NonceError):
    """The key was seen before; ``record`` is the booking it produced (answer with it)."""

    def __init__(self, key: str, record: TxRecord) -> None:
        super().__init__(f"idempotency key {key!r} already booked as intent {record.intent.id!r}")
        self.key = key
        self.record = record


class NonceInUse(NonceError):
    def __init__(self, sender: str, nonce: int, occupant: str) -> None:
        super().__init__(f"{sender}/{nonce} is occupied by intent {occupant!r}")
        self.sender = sender
        self.nonce = nonce
        self.occupant = occupant


class SenderNotSynced(NonceError):
    """``reserve`` before ``resync``: the book would guess the next nonce (DESIGN.md §5)."""

    def __init__(self, sender: str) -> None:
        super().__init__(f"{sender}: next nonce unknown, resync it against the chain first")
        self.sender = sender


class AttemptMismatch(NonceError):
    def __init__(self, sender: str, nonce: int, reason: str) -> None:
        super().__init__(f"{sender}/{nonce}: {reason}")
        self.sender = sender
        self.nonce = nonce
        self.reason = reason


class FeeError(NonceError, ValueError):
    """A fee rule cannot be satisfied as asked."""


class BumpTooSmall(FeeError):
    def __init__(self, percent: int, minimum: int) -> None:
        super().__init__(
            f"bump_percent {percent} is below the minimum {minimum} (geth's replace rule)"
        )
        self.percent = percent
        self.minimum = minimum


class FeeCapExceeded(FeeError):
    def __init__(self, field: str, required: int, cap: int) -> None:
        super().__init__(f"{field}: replacement needs {required} wei, above the cap {cap}")
        self.field = field
        self.required = required
        self.cap = cap


class JournalError(NonceError):
    """The journal could not write; entries after the last acknowledged flush may be lost."""


class JournalClosed(JournalError):
    def __init__(self, detail: str = "journal is closed") -> None:
        super().__init__(detail)


class StaleEpoch(JournalError):
    """Fencing: this instance's lease epoch is no longer the lease's; its writes are refused."""

    def __init__(self, epoch: int, current: int | None) -> None:
        self.epoch = epoch
        self.current = current
        super().__init__(f"lease epoch {epoch} is stale (the lease is at epoch {current})")


__all__ = [
    "AttemptMismatch",
    "BumpTooSmall",
    "DuplicateIdempotencyKey",
    "DuplicateIntent",
    "FeeCapExceeded",
    "FeeError",
    "InvalidIntent",
    "InvalidTransition",
    "JournalClosed",
    "JournalError",
    "NonceError",
    "NonceInUse",
    "SenderNotSynced",
    "StaleEpoch",
    "UnknownIntent",
]

"""Transaction bookkeeping: nonces, the per-(sender, nonce) state machine, fee rules, the
durable journal and crash recovery (DESIGN.md §5). Pure and synchronous except the journal's
writer thread; the async tx manager in ``broadcaster`` drives it.
"""

from nonce.book import NonceBook
from nonce.entries import (
    AttemptAdded,
    BundleOpened,
    Entry,
    Journal,
    MemoryJournal,
    NullJournal,
    RecordOpened,
    SlotReleased,
    StateChanged,
)
from nonce.errors import (
    AttemptMismatch,
    BumpTooSmall,
    DuplicateIdempotencyKey,
    DuplicateIntent,
    FeeCapExceeded,
    FeeError,
    InvalidIntent,
    InvalidTransition,
    JournalClosed,
    JournalError,
    NonceError,
    NonceInUse,
    SenderNotSynced,
    UnknownIntent,
)
from nonce.fees import Fees, replacement_fees
from nonce.journal import SqliteJournal, load, open_book
from nonce.resync import ResyncResult
from nonce.state import (
    ACTIVE_STATES,
    TRANSITIONS,
    Attempt,
    AttemptReason,
    AuthItem,
    BlockRef,
    Intent,
    TxRecord,
    TxState,
    noop_intent,
)

__all__ = [
    "ACTIVE_STATES",
    "TRANSITIONS",
    "Attempt",
    "AttemptAdded",
    "AttemptMismatch",
    "AttemptReason",
    "AuthItem",
    "BlockRef",
    "BumpTooSmall",
    "BundleOpened",
    "DuplicateIdempotencyKey",
    "DuplicateIntent",
    "Entry",
    "FeeCapExceeded",
    "FeeError",
    "Fees",
    "Intent",
    "InvalidIntent",
    "InvalidTransition",
    "Journal",
    "JournalClosed",
    "JournalError",
    "MemoryJournal",
    "NonceBook",
    "NonceError",
    "NonceInUse",
    "NullJournal",
    "RecordOpened",
    "ResyncResult",
    "SenderNotSynced",
    "SlotReleased",
    "SqliteJournal",
    "StateChanged",
    "TxRecord",
    "TxState",
    "UnknownIntent",
    "load",
    "noop_intent",
    "open_book",
    "replacement_fees",
]

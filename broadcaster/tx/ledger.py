"""What the tx manager remembers about each signed attempt, beside the book.

The book (``nonce.NonceBook``) holds the durable facts: records, attempts, states. The manager
also needs a few things per attempt that are not worth journaling: the tip number it last went
out at (stall rechecks), the replacement signed ahead for it, whether an "underpriced" or "nonce
too low" answer was already acted on, and which endpoints refused it for good. They live here,
in one map, and leave it together when the record settles (``forget``), so nothing grows with
the number of finalized transactions.

The ledger also keeps, per ``(sender, nonce)``, the highest fees ever signed there, replacements
signed ahead and later discarded included: the enclave's nonce protection refuses any new payload
at that nonce that does not beat the *last* signature by ``bump_percent``, so that is the floor
of every re-sign (DESIGN.md §5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from nonce import Attempt, Fees, TxRecord

__all__ = ["AttemptLedger", "AttemptNotes", "Presigned"]


class Presigned(NamedTuple):
    """A replacement signed ahead of need for an included attempt: what a reorg dropping that
    attempt sends at once, and the highest base fee it is still good for."""

    attempt: Attempt
    fees: Fees
    max_base_fee: int

    def fits(self, *, noop: bool, base_fee: int | None) -> bool:
        """Still good to send: the kind wanted (a noop exactly when ``noop``) and the base fee
        (``None``: unknown) has not outgrown it."""
        return self.attempt.is_noop == noop and (base_fee is None or base_fee <= self.max_base_fee)


@dataclass(slots=True)
class AttemptNotes:
    sent_at: int | None = None  # tip number when it last went out
    presigned: Presigned | None = None
    bumped: bool = False  # an "underpriced" answer was already answered with a bump
    rechecked: bool = False  # a "nonce too low" answer was already checked against receipts
    refusals: dict[str, str] | None = None  # endpoint -> final error kind


class AttemptLedger:
    """Per-attempt notes by hash, and the fee floor per ``(sender, nonce)``."""

    __slots__ = ("_floor", "_notes")

    def __init__(self) -> None:
        self._notes: dict[bytes, AttemptNotes] = {}
        self._floor: dict[tuple[str, int], Fees] = {}

    def __len__(self) -> int:
        return len(self._notes)

    def notes(self, tx_hash: bytes) -> AttemptNotes:
        notes = self._notes.get(tx_hash)
        if notes is None:
            notes = self._notes[tx_hash] = AttemptNotes()
        return notes

    def peek(self, tx_hash: bytes) -> AttemptNotes | None:
        return self._notes.get(tx_hash)

    # -- sends -----------------------------------------------------------------------------------

    def sent(self, tx_hash: bytes, tip_number: int) -> None:
        self.notes(tx_hash).sent_at = tip_number

    def sent_at(self, tx_hash: bytes) -> int | None:
        notes = self._notes.get(tx_hash)
        return notes.sent_at if notes is not None else None

    def first_bump(self, tx_hash: bytes) -> bool:
        """True the first time an "underpriced" answer for ``tx_hash`` is seen."""
        notes = self.notes(tx_hash)
        first = not notes.bumped
        notes.bumped = True
        return first

    def first_recheck(self, tx_hash: bytes) -> bool:
        notes = self.notes(tx_hash)
        first = not notes.rechecked
        notes.rechecked = True
        return first

    def refused(self, tx_hash: bytes, endpoint: str, kind: str) -> int:
        """Note a final refusal; returns how many endpoints have refused ``tx_hash``."""
        notes = self.notes(tx_hash)
        if notes.refusals is None:
            notes.refusals = {}
        notes.refusals[endpoint] = kind
        return len(notes.refusals)

    def refused_by_all(self, tx_hash: bytes, endpoints: int) -> bool:
        """Every one of the ``endpoints`` refused ``tx_hash`` for good (its bytes are dead)."""
        notes = self._notes.get(tx_hash)
        return notes is not None and notes.refusals is not None and len(notes.refusals) >= endpoints

    # -- replacements signed ahead ---------------------------------------------------------------

    def presign(self, tx_hash: bytes, presigned: Presigned) -> None:
        self.notes(tx_hash).presigned = presigned

    def presigned(self, tx_hash: bytes) -> Presigned | None:
        notes = self._notes.get(tx_hash)
        return notes.presigned if notes is not None else None

    def take_presigned(self, tx_hash: bytes) -> Presigned | None:
        notes = self._notes.get(tx_hash)
        if notes is None or notes.presigned is None:
            return None
        presigned, notes.presigned = notes.presigned, None
        return presigned

    # -- the fee floor -----------------------------------------------------------------------------

    def signed_fees(self, sender: str, nonce: int, fees: Fees) -> None:
        """A signature at ``(sender, nonce)`` with ``fees`` was made (used or not)."""
        key = (sender, nonce)
        old = self._floor.get(key)
        if old is None or (
            fees.max_fee_per_gas >= old.max_fee_per_gas
            and fees.max_priority_fee_per_gas >= old.max_priority_fee_per_gas
        ):
            self._floor[key] = fees
        else:
            self._floor[key] = Fees(
                max(old.max_fee_per_gas, fees.max_fee_per_gas),
                max(old.max_priority_fee_per_gas, fees.max_priority_fee_per_gas),
            )

    def floor(self, record: TxRecord) -> Fees | None:
        """The fees any new signature at ``record``'s nonce must beat (``None``: never signed)."""
        floor = self._floor.get((record.sender, record.nonce))
        for attempt in record.attempts:  # journaled attempts count after a restart too
            fee, tip = attempt.max_fee_per_gas, attempt.max_priority_fee_per_gas
            if floor is None:
                floor = Fees(fee, tip)
            elif fee > floor.max_fee_per_gas or tip > floor.max_priority_fee_per_gas:
                floor = Fees(
                    max(fee, floor.max_fee_per_gas), max(tip, floor.max_priority_fee_per_gas)
                )
        return floor

    def raise_floor(self, record: TxRecord, fees: Fees) -> None:
        """The enclave refused a signature at these fees: something higher was signed there
        (a replacement signed ahead before a restart): count ``fees`` as signed."""
        self.signed_fees(record.sender, record.nonce, fees)

    # -- settling ----------------------------------------------------------------------------------

    def forget(self, record: TxRecord) -> None:
        """``record`` settled (final, released or evicted): drop everything about it."""
        for attempt in record.attempts:
            self._notes.pop(attempt.hash, None)
        self._floor.pop((record.sender, record.nonce), None)

"""Crash recovery: reconcile the reloaded book with chain state, as a plan (pure, no I/O).

After ``kill -9`` the journal holds every acknowledged intent and a prefix of the later changes
(``nonce.journal``). What it cannot know is what the chain did meanwhile, and which of the last
re-signed attempts made it to disk. The caller gathers the facts, this module decides::

    records = list(book.all_records())
    latest = {s: await rpc.get_transaction_count(s, "latest") for s in book.senders()}
    check = hashes_to_check(records, latest)               # only these can be mined
    receipts = {h: BlockRef(n, bh) for h in check if (n, bh) := <receipt of h, canonical>}
    for action in plan_recovery(records, ChainFacts(latest, receipts, head_number)):
        ...                                                  # then book.resync(...) per sender

Per record (a ``(sender, nonce)`` we booked), with ``L`` the sender's mined nonce count:

- ``nonce < L`` and one of its attempts has a receipt: :class:`MarkIncluded` (by that hash).
- ``nonce < L`` and none has: :class:`NonceTaken` (see there: an attempt journaled too late, or
  another holder of the key).
- ``nonce >= L``, never signed: :class:`Sign` (or :class:`ReplaceExpired` past validUntilBlock).
- ``nonce >= L``, signed: :class:`Resend` of the *identical* latest bytes (valid while the nonce is
  unused; the journal may say ``included`` if its block was reorged out while we were down), or
  :class:`ReplaceExpired` when the intent's validUntilBlock has passed.
- nonces in ``[L, held)`` nothing covers: :class:`FillGap` (``nonce.resync.find_gaps``).

Actions come sorted by ``(sender, nonce)``, so resends keep each sender's nonce order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nonce.resync import find_gaps
from nonce.state import Address, Attempt, BlockRef, TxRecord, TxState


@dataclass(frozen=True, slots=True)
class ChainFacts:
    """What the caller learned from canonical chain state.

    ``nonces``: ``eth_getTransactionCount(sender, "latest")`` for every sender in the book.
    ``receipts``: for hashes of ours (from ``hashes_to_check``) with a receipt in a canonical
    block, that block. ``head_number``: the canonical head, to judge ``validUntilBlock``.
    """

    nonces: Mapping[Address, int]
    receipts: Mapping[bytes, BlockRef]
    head_number: int | None = None


@dataclass(frozen=True, slots=True)
class MarkIncluded:
    """``book.mark_included(tx_hash, block, now=...)``."""

    record: TxRecord
    tx_hash: bytes
    block: BlockRef


@dataclass(frozen=True, slots=True)
class Resend:
    """Rebroadcast ``attempt.raw`` unchanged. ``was_included``: transition included -> reorged
    first; then the record goes to ``broadcast`` (a noop of a given-up record keeps its state).
    """

    record: TxRecord
    attempt: Attempt
    was_included: bool


@dataclass(frozen=True, slots=True)
class Sign:
    """Booked and acknowledged, never signed (crash before the first attempt was journaled)."""

    record: TxRecord


@dataclass(frozen=True, slots=True)
class ReplaceExpired:
    """validUntilBlock passed before it was mined: go to ``expired`` (through ``reorged`` if the
    journal says ``included``) and sign a noop at the nonce (fees bumped over ``record.latest``).
    """

    record: TxRecord


@dataclass(frozen=True, slots=True)
class FillGap:
    """Nothing of ours will use ``nonce``: ``book.open_gap_fill`` and sign a noop there."""

    sender: Address
    nonce: int


@dataclass(frozen=True, slots=True)
class NonceTaken:
    """The chain mined ``record``'s nonce, but with none of the hashes the journal holds.

    Either an attempt signed in the last milliseconds before the crash never reached the journal
    (the reaction path does not wait on disk) and was mined, or another holder of the key used the
    nonce. Find the mined transaction at ``(sender, nonce)`` (e.g. ``eth_getTransactionBySender
    AndNonce`` where the node has it, or the blocks since the record's last known block): if it
    carries the intent's ``to``/``value``/``data`` the intent was included, else mark it failed.
    """

    record: TxRecord


Action = MarkIncluded | Resend | Sign | ReplaceExpired | FillGap | NonceTaken


def hashes_to_check(records: Iterable[TxRecord], nonces: Mapping[Address, int]) -> list[bytes]:
    """The hashes worth a receipt query: attempts of unsettled records whose nonce is mined."""
    out: list[bytes] = []
    for record in records:
        if record.settled or record.released:
            continue
        if record.nonce < nonces[record.intent.sender]:
            out.extend(a.hash for a in record.attempts)
    return out


def plan_recovery(records: Iterable[TxRecord], facts: ChainFacts) -> list[Action]:
    """Decide what to do with each reloaded record (see the module docstring). Reads only."""
    by_sender: dict[Address, dict[int, TxRecord]] = {}
    for record in records:
        if not record.released:
            by_sender.setdefault(record.intent.sender, {})[record.nonce] = record
    head = facts.head_number
    actions: list[tuple[Address, int, Action]] = []
    for sender, slots in by_sender.items():
        mined = facts.nonces[sender]
        for nonce, record in slots.items():
            if record.settled:
                continue
            action = _decide(record, mined, facts.receipts, head)
            if action is not None:
                actions.append((sender, nonce, action))
        actions.extend((sender, n, FillGap(sender, n)) for n in find_gaps(slots, mined))
    actions.sort(key=lambda item: (item[0], item[1]))
    return [action for _, _, action in actions]


def _decide(
    record: TxRecord, mined: int, receipts: Mapping[bytes, BlockRef], head: int | None
) -> Action | None:
    if record.nonce < mined:
        for attempt in record.attempts:
            block = receipts.get(attempt.hash)
            if block is not None:
                if record.included_hash == attempt.hash and record.block == block:
                    return None  # the journal already says so
                return MarkIncluded(record, attempt.hash, block)
        return NonceTaken(record) if record.covers_nonce else None
    if not record.covers_nonce:
        return None  # a hole: find_gaps reports it
    latest = record.latest
    expired = head is not None and record.intent.expired_at(head)
    if latest is None:
        return ReplaceExpired(record) if expired else Sign(record)
    if expired and not latest.is_noop and record.state not in _GIVEN_UP:
        return ReplaceExpired(record)
    return Resend(record, latest, was_included=record.block is not None)


_GIVEN_UP = frozenset((TxState.CANCELLED, TxState.EXPIRED, TxState.FAILED))

__all__ = [
    "Action",
    "ChainFacts",
    "FillGap",
    "MarkIncluded",
    "NonceTaken",
    "ReplaceExpired",
    "Resend",
    "Sign",
    "hashes_to_check",
    "plan_recovery",
]

"""Small builders for the nonce tests: intents, attempts with unique fake bytes, synced books."""

from __future__ import annotations

import hashlib
import itertools

from nonce.book import NonceBook
from nonce.entries import Journal
from nonce.state import Attempt, AttemptReason, Intent, TxRecord

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
TARGET = "0x" + "c3" * 20
CHAIN_ID = 31337

_counter = itertools.count()


def intent(
    sender: str = ALICE,
    *,
    id: str | None = None,
    key: str | None = None,
    valid_until_block: int | None = None,
    max_fee: int = 30_000_000_000,
    tip: int = 1_000_000_000,
    value: int = 1,
) -> Intent:
    return Intent(
        id=id or f"intent-{next(_counter)}",
        sender=sender,
        to=TARGET,
        value=value,
        data=b"\x01\x02",
        gas=50_000,
        max_fee_per_gas=max_fee,
        max_priority_fee_per_gas=tip,
        chain_id=CHAIN_ID,
        valid_until_block=valid_until_block,
        key=key,
    )


def attempt(
    record: TxRecord,
    *,
    reason: AttemptReason = AttemptReason.INITIAL,
    max_fee: int | None = None,
    tip: int | None = None,
    at: float = 0.0,
) -> Attempt:
    """A fake signed attempt: unique raw bytes, hash = sha256(raw) (the book never decodes)."""
    raw = b"\x02" + f"{record.intent.id}/{record.nonce}/{next(_counter)}".encode()
    latest = record.latest
    return Attempt(
        raw=raw,
        hash=hashlib.sha256(raw).digest(),
        nonce=record.nonce,
        max_fee_per_gas=max_fee if max_fee is not None else record.intent.max_fee_per_gas,
        max_priority_fee_per_gas=tip if tip is not None else record.intent.max_priority_fee_per_gas,
        signed_at=at,
        reason=reason,
        replaces=latest.hash if latest is not None else None,
    )


def synced_book(
    journal: Journal | None = None, senders: tuple[str, ...] = (ALICE, BOB), start: int = 0
) -> NonceBook:
    book = NonceBook(journal)
    for sender in senders:
        book.resync(sender, chain_latest=start, chain_pending=start, now=0.0)
    return book

"""Child process for the kill -9 test: books intents as fast as it can, acknowledging each one
on stdout only after ``await journal.flush()`` returned, exactly as the intent API does.

    python -m tests.nonce.journal_child DB_PATH_OR_URL
"""

from __future__ import annotations

import asyncio
import sys

from nonce.backends import open_book
from nonce.state import AttemptReason, BlockRef, TxState
from tests.nonce.factories import ALICE, BOB, attempt, intent


async def main(path: str) -> None:
    book, journal = open_book(path)
    for sender in (ALICE, BOB):
        book.resync(sender, chain_latest=0, chain_pending=0, now=0.0)
    out = sys.stdout
    n = 0

    async def one(i: int) -> None:
        record = book.accept(intent(ALICE if i % 3 else BOB, id=f"i{i}", key=f"k{i}"), now=i)
        first = attempt(record, at=i)
        book.add_attempt(record, first)
        book.transition(record, TxState.SIGNED, reason="signed", now=i)
        await journal.flush()
        out.write(
            f"ack {record.intent.id} {record.intent.sender} {record.nonce} {first.hash.hex()}\n"
        )
        out.flush()
        # Unacknowledged follow-ups, as the hot path produces them (never flushed).
        book.transition(record, TxState.BROADCAST, reason="sent", now=i)
        if i % 2:
            block = BlockRef(i, f"0x{i:064x}")
            book.mark_included(first.hash, block, now=i)
            book.on_reorg([block.hash], now=i)
            book.add_attempt(record, attempt(record, reason=AttemptReason.REORG, at=i))
            book.transition(record, TxState.SIGNED, reason="reorg", now=i)

    while True:
        await asyncio.gather(*(one(n + k) for k in range(8)))
        n += 8


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

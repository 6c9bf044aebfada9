"""The SQLite journal: round trips, flush semantics, failure surfacing, and kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from nonce.book import NonceBook
from nonce.entries import AttemptAdded
from nonce.errors import JournalClosed, JournalError
from nonce.journal import SqliteJournal, load, open_book
from nonce.state import AttemptReason, BlockRef, Intent, TxRecord, TxState
from tests.nonce.factories import ALICE, BOB, TARGET, attempt, intent

REPO = Path(__file__).resolve().parents[2]
B1 = BlockRef(10, "0x" + "11" * 32)


def _snapshot(records: list[TxRecord]) -> list[tuple[object, ...]]:
    return [
        (r.intent, r.nonce, r.state, r.attempts, r.block, r.included_hash, r.state_reason,
         r.settled, r.released, r.updated_at)
        for r in records
    ]  # fmt: skip


def _populate(book: NonceBook) -> None:
    for sender in (ALICE, BOB):
        book.resync(sender, chain_latest=3, chain_pending=3, now=0.0)
    big = Intent(
        id="big",
        sender=ALICE,
        to=None,  # contract creation
        value=2**200,
        data=bytes(range(256)),
        gas=3_000_000,
        max_fee_per_gas=2**70,
        max_priority_fee_per_gas=2**69,
        chain_id=1,
        valid_until_block=99,
        key="key-big",
        access_list=((TARGET, ("0x" + "00" * 32, "0x" + "01" * 32)),),
        external=True,
    )
    r0 = book.accept(big, now=1.5)
    a0 = attempt(r0, reason=AttemptReason.EXTERNAL, at=1.6)
    book.add_attempt(r0, a0)
    book.transition(r0, TxState.SIGNED, reason="signed", now=1.7)
    book.transition(r0, TxState.BROADCAST, reason="sent", now=1.8)
    book.mark_included(a0.hash, B1, now=2.0)
    book.on_reorg([B1.hash], now=2.5)
    book.add_attempt(r0, attempt(r0, reason=AttemptReason.REORG, at=2.6))
    book.transition(r0, TxState.SIGNED, reason="reorg", now=2.6)
    r1 = book.accept(intent(BOB), now=3.0)
    a1 = attempt(r1)
    book.add_attempt(r1, a1)
    book.transition(r1, TxState.SIGNED, reason="signed", now=3.1)
    book.mark_included(a1.hash, B1, now=3.2)
    book.finalize(B1.hash, now=3.3)
    r2 = book.accept(intent(), now=4.0)
    book.transition(r2, TxState.CANCELLED, reason="user", now=4.1)
    book.resync(ALICE, chain_latest=3, chain_pending=3, now=4.2)  # releases r2's nonce
    book.accept(intent(id="reuses-4"), now=5.0)


def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SqliteJournal(path):
        pass
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_load_gives_back_exactly_what_the_book_held(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    book, journal = open_book(path)
    _populate(book)
    journal.close()
    records = load(path)
    assert _snapshot(records) == _snapshot(list(book.all_records()))
    again = NonceBook.restore(records)
    assert again.peek_next(ALICE) == 5
    assert again.get(ALICE, 4) is not None and again.get(ALICE, 4).intent.id == "reuses-4"  # type: ignore[union-attr]
    assert again.by_key("key-big") is records[0]
    assert again.pending_counts() == {ALICE: 2, BOB: 0}


def test_a_reopened_journal_keeps_appending(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    book, journal = open_book(path)
    _populate(book)
    journal.close()
    book2, journal2 = open_book(path)
    book2.resync(ALICE, chain_latest=3, chain_pending=3, now=6.0)
    book2.accept(intent(id="after-restart"), now=6.0)
    journal2.close()
    assert [r.intent.id for r in load(path)][-1] == "after-restart"


def test_missing_file_loads_empty(tmp_path: Path) -> None:
    assert load(tmp_path / "absent.db") == []


async def test_flush_waits_for_the_commit_and_concurrent_flushes_share_it(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    book, journal = open_book(path)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    for i in range(50):
        book.accept(intent(id=f"i{i}"), now=i)
    await asyncio.gather(*(journal.flush() for _ in range(20)))
    # Read through an independent connection while the writer stays open.
    assert len(load(path)) == 50
    await journal.flush()  # nothing new: still returns (an fsynced empty commit)
    journal.close()


async def test_a_cancelled_flush_does_not_break_the_writer(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    task = asyncio.ensure_future(journal.flush())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await journal.flush()
    journal.close()


def test_a_failed_write_makes_every_flush_raise(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    book = NonceBook(journal)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    record = book.accept(intent(), now=0)
    a = attempt(record)
    book.add_attempt(record, a)
    journal.append(AttemptAdded(record.intent.id, a))  # the same hash twice: IntegrityError
    with pytest.raises(JournalError) as caught:
        journal.commit_now(timeout=10)
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert journal.error is caught.value
    with pytest.raises(JournalError):
        journal.commit_now(timeout=10)
    journal.close()


def test_a_closed_journal_refuses_appends(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    journal.close()
    journal.close()
    book = NonceBook(journal)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    with pytest.raises(JournalClosed):
        book.accept(intent(), now=0)
    with pytest.raises(JournalClosed):
        journal.commit_now()


@pytest.mark.parametrize("acks_before_kill", [1, 40, 400])
def test_every_acknowledged_intent_survives_kill_9(tmp_path: Path, acks_before_kill: int) -> None:
    path = tmp_path / "j.db"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.nonce.journal_child", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None and child.stderr is not None
    acked: dict[str, tuple[str, int, bytes]] = {}
    try:
        while len(acked) < acks_before_kill:
            line = child.stdout.readline()
            assert line, f"child ended early: {child.stderr.read()}"
            _, intent_id, sender, nonce, tx_hash = line.split()
            acked[intent_id] = (sender, int(nonce), bytes.fromhex(tx_hash))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    records = {r.intent.id: r for r in load(path)}
    for intent_id, (sender, nonce, tx_hash) in acked.items():
        record = records[intent_id]
        assert (record.sender, record.nonce) == (sender, nonce)
        assert record.attempts[0].hash == tx_hash
        assert record.state is not TxState.PENDING  # the acknowledged 'signed' made it
    # Batches are atomic and in order: no attempt without its record, nonces unique per sender.
    conn = sqlite3.connect(path)
    orphans = conn.execute(
        "SELECT COUNT(*) FROM attempts WHERE record_id NOT IN (SELECT id FROM records)"
    ).fetchone()[0]
    conn.close()
    assert orphans == 0
    book = NonceBook.restore(records.values())
    for sender in (ALICE, BOB):
        nonces = [r.nonce for r in book.records(sender)]
        assert nonces == list(range(len(nonces)))
        assert book.gaps(sender, chain_latest=0) == []

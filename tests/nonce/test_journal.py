"""The journal contract on both backends (``store``: SQLite, a real PostgreSQL): round trips,
flush semantics, failure surfacing, and kill -9."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonce.backends import Target, load, lookup, open_book, open_journal
from nonce.book import NonceBook
from nonce.entries import (
    AttemptAdded,
    Entry,
    MemoryJournal,
    RecordOpened,
    SlotReleased,
    StateChanged,
)
from nonce.errors import JournalClosed, JournalError, NonceError
from nonce.journal import SqliteJournal
from nonce.schema import SCHEMA, SCHEMA_VERSION, batch_statements, statements
from nonce.state import AttemptReason, BlockRef, Intent, TxRecord, TxState
from tests.nonce.conftest import query
from tests.nonce.factories import ALICE, BOB, TARGET, attempt, intent, synced_book

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


def test_load_gives_back_exactly_what_the_book_held(store: Target) -> None:
    path = store
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


def test_a_reopened_journal_keeps_appending(store: Target) -> None:
    path = store
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


def test_an_empty_store_loads_empty(store: Target) -> None:
    open_journal(store).close()
    assert load(store) == []


async def test_flush_waits_for_the_commit_and_concurrent_flushes_share_it(store: Target) -> None:
    path = store
    book, journal = open_book(path)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    for i in range(50):
        book.accept(intent(id=f"i{i}"), now=i)
    await asyncio.gather(*(journal.flush() for _ in range(20)))
    # Read through an independent connection while the writer stays open.
    assert len(load(path)) == 50
    await journal.flush()  # nothing new: still returns (an fsynced empty commit)
    journal.close()


async def test_a_cancelled_flush_does_not_break_the_writer(store: Target) -> None:
    journal = open_journal(store)
    task = asyncio.ensure_future(journal.flush())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await journal.flush()
    journal.close()


def test_a_failed_write_makes_every_flush_raise(store: Target) -> None:
    """On both backends: a conflicting row fails the journal loudly, never dropped silently
    (PostgreSQL ignores conflicts only when it writes a batch again after a lost connection)."""
    journal = open_journal(store)
    book = NonceBook(journal)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    record = book.accept(intent(), now=0)
    a = attempt(record)
    book.add_attempt(record, a)
    journal.append(AttemptAdded(record.intent.id, a))  # the same hash twice: IntegrityError
    with pytest.raises(JournalError) as caught:
        journal.commit_now(timeout=10)
    cause = caught.value.__cause__
    assert isinstance(cause, sqlite3.IntegrityError) or type(cause).__name__ == "UniqueViolation"
    assert journal.error is caught.value
    with pytest.raises(JournalError):
        journal.commit_now(timeout=10)
    journal.close()


def test_a_closed_journal_refuses_appends(store: Target) -> None:
    journal = open_journal(store)
    journal.close()
    journal.close()
    book = NonceBook(journal)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    with pytest.raises(JournalClosed):
        book.accept(intent(), now=0)
    with pytest.raises(JournalClosed):
        journal.commit_now()


@pytest.mark.parametrize("acks_before_kill", [1, 40, 400])
def test_every_acknowledged_intent_survives_kill_9(store: Target, acks_before_kill: int) -> None:
    path = store
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.nonce.journal_child", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        },
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
    orphans = query(
        path, "SELECT COUNT(*) FROM attempts WHERE record_id NOT IN (SELECT id FROM records)"
    )[0][0]
    assert orphans == 0
    book = NonceBook.restore(records.values())
    for sender in (ALICE, BOB):
        nonces = [r.nonce for r in book.records(sender)]
        assert nonces == list(range(len(nonces)))
        assert book.gaps(sender, chain_latest=0) == []


# -- the batch writer: coalesced updates, same end state as the entry-by-entry path ----------

OPS = ("accept", "sign", "broadcast", "include", "reorg", "finalize", "give_up", "noop", "resync")
BLOCKS = [BlockRef(n, f"0x{n:064x}") for n in range(3)]


def _entries(ops: list[tuple[str, int]]) -> list[Entry]:
    """Drive a book through ``ops`` (invalid ones skipped) and return what it journaled."""
    memory = MemoryJournal()
    book = synced_book(memory)
    for step, (op, i) in enumerate(ops):
        now = float(step)
        live = sorted((r for r in book.all_records() if not r.released), key=lambda r: r.nonce)
        r = live[i % len(live)] if live else None
        block = BLOCKS[i % len(BLOCKS)]
        try:
            if op == "accept":
                book.accept(intent((ALICE, BOB)[i % 2]), now=now)
            elif r is None:
                continue
            elif op == "sign":
                book.add_attempt(r, attempt(r, at=now))
                book.transition(r, TxState.SIGNED, reason="signed", now=now)
            elif op == "broadcast":
                book.transition(r, TxState.BROADCAST, reason="sent", now=now)
            elif op == "include" and r.latest is not None:
                book.mark_included(r.latest.hash, block, now=now)
            elif op == "reorg":
                book.on_reorg([block.hash], now=now)
            elif op == "finalize":
                book.finalize(block.hash, now=now)
            elif op == "give_up":
                book.transition(r, TxState.CANCELLED, reason="given up", now=now)
            elif op == "noop" and not r.covers_nonce:
                book.add_attempt(r, attempt(r, reason=AttemptReason.GAP_FILL, at=now))
            elif op == "resync":
                book.resync(r.sender, chain_latest=i % 3, chain_pending=i % 3, now=now)
        except NonceError:
            pass
    return memory.entries


def _tables(conn: sqlite3.Connection) -> list[list[tuple[object, ...]]]:
    return [
        conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
        for table in ("records", "attempts", "transitions")
    ]


def _fresh() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(SCHEMA)
    return conn


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 50)), max_size=60),
    cuts=st.lists(st.integers(0, 200), max_size=8),
)
def test_batches_leave_the_tables_as_entry_by_entry_writes_do(
    ops: list[tuple[str, int]], cuts: list[int]
) -> None:
    entries = _entries(ops)
    slow, fast = _fresh(), _fresh()
    for entry in entries:
        for sql, params in statements(entry):
            slow.execute(sql, params)
    bounds = [0, *sorted(c for c in cuts if c < len(entries)), len(entries)]
    for start, end in itertools.pairwise(bounds):
        for sql, rows in batch_statements(entries[start:end]):
            fast.executemany(sql, rows)
    assert _tables(fast) == _tables(slow)


def test_one_batch_of_many_changes_reloads_the_last_state_and_keeps_every_transition(
    store: Target,
) -> None:
    path = store
    book, journal = open_book(path)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    before = book.accept(intent(id="before"), now=1.0)
    journal.commit_now()  # its row is on disk: the changes below are UPDATEs of it
    batches = journal.committed_batches
    within = book.accept(intent(id="within"), now=2.0)  # opened and changed in one batch
    for n, record in enumerate((before, within)):
        a = attempt(record, at=3.0 + n)
        book.add_attempt(record, a)
        book.transition(record, TxState.SIGNED, reason="signed", now=3.0 + n)
        book.transition(record, TxState.BROADCAST, reason="sent", now=4.0 + n)
        book.mark_included(a.hash, B1, now=5.0 + n)
    book.finalize(B1.hash, now=7.0)
    journal.commit_now()
    assert journal.committed_batches == batches + 1
    journal.close()

    assert _snapshot(load(path)) == _snapshot(list(book.all_records()))
    trail = query(path, "SELECT record_id, old, new, at FROM transitions ORDER BY seq")
    assert trail == [
        ("before", "pending", "signed", 3.0),
        ("before", "signed", "broadcast", 4.0),
        ("before", "broadcast", "included", 5.0),
        ("within", "pending", "signed", 4.0),
        ("within", "signed", "broadcast", 5.0),
        ("within", "broadcast", "included", 6.0),
        ("before", "included", "finalized", 7.0),
        ("within", "included", "finalized", 7.0),
    ]


def test_a_release_and_a_state_change_in_one_batch_keep_the_later_time(store: Target) -> None:
    path = store
    book, journal = open_book(path)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    first = book.accept(intent(id="first"), now=1.0)
    journal.commit_now()
    book.transition(first, TxState.CANCELLED, reason="user", now=2.0)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=3.0)  # releases its nonce
    second = book.accept(intent(id="second"), now=4.0)  # reuses nonce 0, same batch
    book.transition(second, TxState.CANCELLED, reason="user", now=5.0)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=6.0)
    journal.close()
    records = {r.intent.id: r for r in load(path)}
    assert (records["first"].released, records["first"].updated_at) == (True, 3.0)
    assert (records["second"].released, records["second"].updated_at) == (True, 6.0)
    assert records["second"].state is TxState.CANCELLED
    assert _snapshot(list(records.values())) == _snapshot([first, second])


# -- fsyncs: shared by concurrent flushes, skipped when nothing is new ------------------------


async def test_a_burst_of_flushes_shares_a_few_commits(store: Target) -> None:
    book, journal = open_book(store)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    await journal.flush()
    before = journal.committed_batches

    async def one(i: int) -> None:
        book.accept(intent(id=f"i{i}"), now=i)
        await journal.flush()

    await asyncio.gather(*(one(i) for i in range(200)))
    # Typically one commit; the bound leaves room for the writer taking the GIL mid-burst.
    assert journal.committed_batches - before < 20
    assert len(load(store)) == 200
    journal.close()


def test_a_flush_after_an_fsynced_commit_with_nothing_new_commits_nothing(store: Target) -> None:
    book, journal = open_book(store)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    book.accept(intent(), now=1.0)
    journal.commit_now()
    batches = journal.committed_batches
    journal.commit_now()
    assert journal.committed_batches == batches


# -- schema v1 (before attempts_slot) --------------------------------------------------------

SCHEMA_V1_INDEXES = """
CREATE INDEX records_slot ON records (sender, nonce);
CREATE INDEX attempts_record ON attempts (record_id);
"""


def test_a_v1_journal_is_migrated_and_reloads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    memory = MemoryJournal()
    book = NonceBook(memory)
    _populate(book)
    # What the v1 code wrote: the same tables, its two indexes, one row per statement.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA.replace("CREATE INDEX IF NOT EXISTS attempts_slot", "-- "))
    conn.executescript(SCHEMA_V1_INDEXES)
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema', '1'), ('flushes', '0')")
    for entry in memory.entries:
        for sql, params in statements(entry):
            conn.execute(sql, params)
    conn.execute("ALTER TABLE records DROP COLUMN is_private")  # v1 had no such column (v3)
    for column in ("max_fee_per_blob_gas", "blobs", "authorizations"):  # nor these (v5, types)
        conn.execute(f"ALTER TABLE records DROP COLUMN {column}")
    conn.close()

    book2, journal = open_book(path)
    assert _snapshot(list(book2.all_records())) == _snapshot(list(book.all_records()))
    book2.resync(ALICE, chain_latest=3, chain_pending=3, now=6.0)
    book2.accept(intent(id="after-migration"), now=6.0)
    journal.close()
    conn = sqlite3.connect(path)
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
    conn.close()
    assert "attempts_slot" in indexes
    assert not indexes & {"records_slot", "attempts_record"}
    assert version == SCHEMA_VERSION
    found, held = lookup(path, intent_id="big"), book.find_intent("big")
    assert found is not None and held is not None
    assert _snapshot([found]) == _snapshot([held])
    assert [r.intent.id for r in load(path)][-1] == "after-migration"


def test_a_change_after_a_release_in_one_batch_keeps_its_own_time() -> None:
    """The book does not produce this order today; the batch writer must still not reorder it."""
    opened = RecordOpened(intent(id="r"), 0, TxState.PENDING, 1.0)
    released = SlotReleased("r", 2.0)
    changed = StateChanged("r", TxState.PENDING, TxState.FAILED, "late", 3.0, None, None, False)
    for head, tail in (([opened], [released, changed]), ([], [opened, released, changed])):
        slow, fast = _fresh(), _fresh()
        for entry in [*head, *tail]:
            for sql, params in statements(entry):
                slow.execute(sql, params)
        for batch in (head, tail):
            for sql, rows in batch_statements(batch):
                fast.executemany(sql, rows)
        assert _tables(fast) == _tables(slow)


def test_a_private_intent_reloads_private_and_a_v2_journal_gains_the_column(
    tmp_path: Path,
) -> None:
    """DESIGN.md 5a: a private intent must stay private after a restart (it is never sent to a
    public endpoint); journals written before the flag read every intent as public."""
    path = tmp_path / "j.db"
    book, journal = open_book(path)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    book.accept(dataclasses.replace(intent(id="secret"), private=True), now=1.0)
    book.accept(intent(id="plain"), now=1.0)
    journal.close()
    flags = {r.intent.id: r.intent.private for r in load(path)}
    assert flags == {"secret": True, "plain": False}
    found = lookup(path, intent_id="secret")
    assert found is not None and found.intent.private
    # The same file as v2 wrote it: no column; opening it migrates and reads all as public.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("ALTER TABLE records DROP COLUMN is_private")
    for column in ("max_fee_per_blob_gas", "blobs", "authorizations"):  # v5, the types step
        conn.execute(f"ALTER TABLE records DROP COLUMN {column}")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    conn.close()
    book2, journal2 = open_book(path)
    assert {r.intent.id: r.intent.private for r in book2.all_records()} == {
        "secret": False,
        "plain": False,
    }
    journal2.close()

"""Finalized records beyond what stays in memory are found on disk, by id or idempotency key."""

from __future__ import annotations

from nonce import AuthItem, BlockRef, Intent, TxState
from nonce.backends import Target, load, load_bundles, lookup, open_book
from nonce.schema import SCHEMA_VERSION

ALICE = "0x" + "aa" * 20
BOB = "0x" + "bb" * 20
CAROL = "0x" + "cc" * 20


def settle(path: Target, count: int) -> list[str]:
    """Book ``count`` intents, include and finalize all but the last; return their ids."""
    from nonce import Attempt, AttemptReason

    book, journal = open_book(path)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0)
    ids = []
    for i in range(count):
        intent = Intent(
            id=f"i{i}", sender=ALICE, to=BOB, value=i, data=b"", gas=21_000,
            max_fee_per_gas=2, max_priority_fee_per_gas=1, chain_id=1, key=f"k{i}",
        )  # fmt: skip
        record = book.accept(intent, now=i)
        tx_hash = bytes([i % 256]) * 31 + bytes([i // 256])
        book.add_attempt(
            record,
            Attempt(b"\x02raw", tx_hash, record.nonce, 2, 1, float(i), AttemptReason.INITIAL),
        )
        book.transition(record, TxState.SIGNED, reason="signed", now=i)
        if i < count - 1:
            block = BlockRef(i + 1, "0x" + f"{i + 1:064x}")
            book.mark_included(tx_hash, block, now=i)
            book.finalize(block.hash, now=i)
        ids.append(intent.id)
    journal.commit_now()
    journal.close()
    return ids


def test_load_keeps_every_open_record_and_only_the_last_finalized_ones(store: Target) -> None:
    path = store
    ids = settle(path, 10)
    everything = load(path)
    assert [r.intent.id for r in everything] == ids
    kept = load(path, settled_kept=3)
    assert [r.intent.id for r in kept] == ids[-4:]  # the 3 newest finalized + the open one
    assert kept[-1].state is TxState.SIGNED and not kept[-1].settled


def test_lookup_finds_an_evicted_record_by_id_or_key(store: Target) -> None:
    path = store
    ids = settle(path, 5)
    by_id = lookup(path, intent_id=ids[0])
    by_key = lookup(path, key="k0")
    assert by_id is not None and by_key is not None
    assert by_id.intent.id == by_key.intent.id == ids[0]
    assert by_id.state is TxState.FINALIZED and by_id.block == BlockRef(1, "0x" + f"{1:064x}")
    assert len(by_id.attempts) == 1
    assert lookup(path, intent_id="nope") is None
    assert lookup(path, key="nope") is None


def test_lookup_keeps_apart_the_attempts_of_records_that_share_a_nonce(store: Target) -> None:
    """Attempts are found by (nonce, record id): other senders' and released records' attempts
    at the same nonce stay with their own records."""
    from nonce import Attempt, AttemptReason

    path = store
    book, journal = open_book(path)
    for sender in (ALICE, BOB):
        book.resync(sender, chain_latest=0, chain_pending=0, now=0)

    def booked(intent_id: str, sender: str, n: int) -> bytes:
        intent = Intent(
            id=intent_id, sender=sender, to=BOB, value=1, data=b"", gas=21_000,
            max_fee_per_gas=2, max_priority_fee_per_gas=1, chain_id=1, key=f"k-{intent_id}",
        )  # fmt: skip
        record = book.accept(intent, now=n)
        tx_hash = bytes([n]) * 32
        book.add_attempt(
            record,
            Attempt(
                b"\x02" + tx_hash, tx_hash, record.nonce, 2, 1, float(n), AttemptReason.INITIAL
            ),
        )
        return tx_hash

    alice, bob = booked("alice-0", ALICE, 1), booked("bob-0", BOB, 2)
    released = book.accept(
        Intent(id="gone", sender=BOB, to=ALICE, value=1, data=b"", gas=21_000,
               max_fee_per_gas=2, max_priority_fee_per_gas=1, chain_id=1),
        now=3,
    )  # fmt: skip
    book.transition(released, TxState.CANCELLED, reason="user", now=3)
    book.resync(BOB, chain_latest=1, chain_pending=1, now=3)  # gives nonce 1 back: reused
    again = booked("bob-1", BOB, 4)
    journal.close()

    for intent_id, tx_hash in (("alice-0", alice), ("bob-0", bob), ("bob-1", again)):
        found = lookup(path, intent_id=intent_id)
        assert found is not None and [a.hash for a in found.attempts] == [tx_hash]
    gone = lookup(path, intent_id="gone")
    assert gone is not None and gone.released and gone.attempts == []
    assert [len(r.attempts) for r in load(path, settled_kept=0)] == [1, 1, 0, 1]


def test_a_v3_journal_gains_is_private_on_both_backends(store: Target) -> None:
    """Schema v3 (the audit tables) had no ``records.is_private``: opening it applies the v3 -> v4
    step on SQLite and PostgreSQL alike, old intents read public, and a new private one sticks."""
    from nonce.backends import is_postgres
    from nonce.schema import SCHEMA_VERSION
    from tests.nonce.conftest import query

    book, journal = open_book(store)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    book.accept(_intent("old", 0, private=False), now=1.0)
    journal.close()
    _downgrade_to_v3(store, is_postgres(store))
    book2, journal2 = open_book(store)
    book2.accept(_intent("new", 1, private=True), now=2.0)
    journal2.close()
    assert query(store, "SELECT value FROM meta WHERE key = 'schema'") == [(SCHEMA_VERSION,)]
    assert {r.intent.id: r.intent.private for r in load(store)} == {"old": False, "new": True}


def test_bundles_survive_a_restart_on_both_backends(store: Target) -> None:
    """``BundleOpened`` (broadcaster_sendBundle) lands in the ``bundles`` table with the
    members' records, in the same batch; ``load_bundles`` reads them back oldest first."""
    book, journal = open_book(store)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    book.open_bundle("bundle-1", b'{"slots": []}', now=1.0)
    book.accept(_intent("member", 0, private=True), now=1.0)
    book.open_bundle("bundle-2", b"\x00spec", now=2.0)
    book.open_bundle("bundle-1", b"again", now=3.0)  # a retried batch: the first row stays
    journal.close()
    assert load_bundles(store) == [("bundle-1", b'{"slots": []}'), ("bundle-2", b"\x00spec")]
    assert [r.intent.id for r in load(store)] == ["member"]


def test_a_v5_journal_gains_the_bundles_table_on_both_backends(store: Target) -> None:
    """Migration step "5" -> "6" ("bundles"): a journal written before it has no bundles
    table; opening it creates the table and moves the version, its records untouched."""
    from nonce.backends import is_postgres
    from tests.nonce.conftest import query

    book, journal = open_book(store)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    book.accept(_intent("old", 0, private=True), now=1.0)
    journal.close()
    _run(
        store,
        is_postgres(store),
        "DROP TABLE bundles",
        "UPDATE meta SET value = '5' WHERE key = 'schema'",
    )
    assert load_bundles(store) == [] or is_postgres(store)  # (PostgreSQL: the reader migrates)
    book2, journal2 = open_book(store)
    book2.open_bundle("bundle-new", b"{}", now=2.0)
    journal2.close()
    assert query(store, "SELECT value FROM meta WHERE key = 'schema'") == [(SCHEMA_VERSION,)]
    assert load_bundles(store) == [("bundle-new", b"{}")]
    assert [r.intent.id for r in load(store)] == ["old"]


def _run(store: Target, postgres: bool, *sqls: str) -> None:
    if postgres:
        import psycopg

        assert isinstance(store, str)
        with psycopg.connect(store) as conn:
            for sql in sqls:
                conn.execute(sql)
        return
    import sqlite3

    conn = sqlite3.connect(store, isolation_level=None)
    for sql in sqls:
        conn.execute(sql)
    conn.close()


_TYPED_COLUMNS = ("max_fee_per_blob_gas", "blobs", "authorizations")  # v5, the "types" step


def _downgrade_to_v3(store: Target, postgres: bool, version: str = "3") -> None:
    dropped = (*_TYPED_COLUMNS, "is_private") if version == "3" else _TYPED_COLUMNS
    sqls = (
        *(f"ALTER TABLE records DROP COLUMN {column}" for column in dropped),
        f"UPDATE meta SET value = '{version}' WHERE key = 'schema'",
    )
    if postgres:
        import psycopg

        assert isinstance(store, str)
        with psycopg.connect(store) as conn:
            for sql in sqls:
                conn.execute(sql)
        return
    import sqlite3

    conn = sqlite3.connect(store, isolation_level=None)
    for sql in sqls:
        conn.execute(sql)
    conn.close()


def test_a_v4_journal_gains_the_typed_columns_and_blob_and_7702_intents_survive_a_restart(
    store: Target,
) -> None:
    """The "types" step (v4 -> v5) on SQLite and PostgreSQL alike: old intents read back as they
    were, and a blob intent (its blobs) and a set-code intent (its authorizations, signed and to
    sign) reload identical, so a re-sign after a restart has everything it signed before."""
    from nonce.backends import is_postgres
    from tests.nonce.conftest import query

    book, journal = open_book(store)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    book.accept(_intent("old", 0, private=False), now=1.0)
    journal.close()
    _downgrade_to_v3(store, is_postgres(store), "4")
    book2, journal2 = open_book(store)
    blob = Intent(
        id="blob", sender=ALICE, to=BOB, value=0, data=b"", gas=21_000, max_fee_per_gas=10,
        max_priority_fee_per_gas=1, chain_id=1, tx_type=3, max_fee_per_blob_gas=2**70,
        blobs=(b"\x00" * 131_072, b"\x01" * 32 + b"\x00" * (131_072 - 32)),
    )  # fmt: skip
    auths = (AuthItem(1, BOB), AuthItem(0, CAROL, 7, (1, 2**255, 3)))
    setcode = Intent(
        id="setcode", sender=ALICE, to=ALICE, value=0, data=b"", gas=60_000, max_fee_per_gas=10,
        max_priority_fee_per_gas=1, chain_id=1, tx_type=4, authorizations=auths,
    )  # fmt: skip
    book2.accept(blob, now=2.0)
    book2.accept(setcode, now=3.0)
    journal2.close()
    assert query(store, "SELECT value FROM meta WHERE key = 'schema'") == [(SCHEMA_VERSION,)]
    loaded = {r.intent.id: r for r in load(store)}
    assert loaded["old"].intent == _intent("old", 0, private=False)
    assert loaded["blob"].intent == blob
    assert loaded["setcode"].intent == setcode
    assert (loaded["blob"].nonce, loaded["setcode"].nonce) == (1, 2)
    # the self-sponsored authorization took nonce 3 too: the next intent gets 4 after a restart
    book3, journal3 = open_book(store)
    assert book3.accept(_intent("next", 1, private=False), now=4.0).nonce == 4
    journal3.close()


def _intent(intent_id: str, value: int, *, private: bool) -> Intent:
    return Intent(
        id=intent_id, sender=ALICE, to=BOB, value=value, data=b"", gas=21_000,
        max_fee_per_gas=2, max_priority_fee_per_gas=1, chain_id=1, key=intent_id, private=private,
    )  # fmt: skip

"""The journal's SQLite schema and the codec between rows and the book's values.

Three tables (the audit copy's three aside, see ``nonce.audit_copy``): ``records`` (one row per
booked intent: the intent as accepted plus its current state and chain facts), ``attempts``
(every signed attempt, raw bytes included, never updated) and ``transitions`` (every state
change, append-only: the audit trail). Rows are written in the order the book produced the
entries, so ``rowid`` order is booking order on reload.

Quantities that may exceed SQLite's signed 64-bit INTEGER (``value``, fee fields) are stored as
decimal TEXT; hashes and raw transactions as BLOB; block hashes as the ``0x`` hex the tracker uses.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator

import orjson

from nonce.entries import AttemptAdded, Entry, RecordOpened, SlotReleased, StateChanged
from nonce.state import Attempt, AttemptReason, BlockRef, Intent, TxRecord, TxState

SCHEMA_VERSION = "3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    id                       TEXT PRIMARY KEY,
    sender                   TEXT NOT NULL,
    nonce                    INTEGER NOT NULL,
    idem_key                 TEXT UNIQUE,
    chain_id                 INTEGER NOT NULL,
    tx_type                  INTEGER NOT NULL,
    to_address               TEXT,
    value                    TEXT NOT NULL,
    data                     BLOB NOT NULL,
    gas                      INTEGER NOT NULL,
    max_fee_per_gas          TEXT NOT NULL,
    max_priority_fee_per_gas TEXT NOT NULL,
    valid_until_block        INTEGER,
    access_list              BLOB,
    external                 INTEGER NOT NULL,
    noop                     INTEGER NOT NULL,
    accepted_at              REAL NOT NULL,
    state                    TEXT NOT NULL,
    state_reason             TEXT NOT NULL DEFAULT '',
    updated_at               REAL NOT NULL,
    block_number             INTEGER,
    block_hash               TEXT,
    included_hash            BLOB,
    settled                  INTEGER NOT NULL DEFAULT 0,
    released                 INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS attempts (
    hash                     BLOB PRIMARY KEY,
    record_id                TEXT NOT NULL,
    nonce                    INTEGER NOT NULL,
    raw                      BLOB NOT NULL,
    max_fee_per_gas          TEXT NOT NULL,
    max_priority_fee_per_gas TEXT NOT NULL,
    signed_at                REAL NOT NULL,
    reason                   TEXT NOT NULL,
    replaces                 BLOB
);
CREATE INDEX IF NOT EXISTS attempts_slot ON attempts (nonce, record_id);
CREATE TABLE IF NOT EXISTS transitions (
    seq           INTEGER PRIMARY KEY,
    record_id     TEXT NOT NULL,
    old           TEXT NOT NULL,
    new           TEXT NOT NULL,
    reason        TEXT NOT NULL,
    at            REAL NOT NULL,
    block_number  INTEGER,
    block_hash    TEXT,
    tx_hash       BLOB
);-- The verified copy of the enclave's audit log (DESIGN.md section 6a; broadcaster/audit): every
-- entry as the enclave signed it (``entry``: its JSON line), checked before it is stored; the
-- log keys attestation vouched for; the signed heads the enclave reported.
CREATE TABLE IF NOT EXISTS audit_entries (
    seq      INTEGER PRIMARY KEY,
    hash     TEXT NOT NULL,
    kind     TEXT NOT NULL,
    log_key  TEXT NOT NULL,
    tx_hash  BLOB,
    sender   TEXT,
    nonce    INTEGER,
    entry    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_entries_tx ON audit_entries (tx_hash) WHERE tx_hash IS NOT NULL;
CREATE TABLE IF NOT EXISTS audit_keys (
    log_key     TEXT PRIMARY KEY,
    attested    INTEGER NOT NULL,
    pcr0        TEXT,
    first_seen  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_heads (
    seq        INTEGER PRIMARY KEY,
    hash       TEXT NOT NULL,
    signature  TEXT NOT NULL,
    log_key    TEXT NOT NULL,
    at         REAL NOT NULL
);
"""
"""Indexes are what ``read_records`` needs and nothing more: every index insert dirties a page
the next commit writes to the WAL and fsyncs. Intent ids and attempt hashes are random, so
their indexes take one page per intent; ``attempts_slot`` finds a record's attempts by
``(nonce, record_id)`` (an attempt's nonce is its record's, ``NonceBook.add_attempt`` checks)
so that its inserts land next to each other at each sender's newest nonces instead."""

MIGRATIONS: dict[str, tuple[str, str]] = {
    # v1 had records_slot (no reader used it) and attempts_record on the random record id;
    # SCHEMA has already built attempts_slot in their place when this runs.
    "1": ("2", "DROP INDEX IF EXISTS records_slot; DROP INDEX IF EXISTS attempts_record;"),
    # v3 adds the audit copy's tables (audit_entries, audit_keys, audit_heads): SCHEMA has
    # created them (IF NOT EXISTS) when this runs, so only the version moves.
    "2": ("3", ""),
}
"""``version -> (next version, SQL)``: applied in order on open, each in one transaction."""

INSERT_RECORD = (
    "INSERT INTO records (id, sender, nonce, idem_key, chain_id, tx_type, to_address, value, data,"
    " gas, max_fee_per_gas, max_priority_fee_per_gas, valid_until_block, access_list, external,"
    " noop, accepted_at, state, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_RECORD_FINAL = (
    "INSERT INTO records (id, sender, nonce, idem_key, chain_id, tx_type, to_address, value, data,"
    " gas, max_fee_per_gas, max_priority_fee_per_gas, valid_until_block, access_list, external,"
    " noop, accepted_at, state, updated_at, state_reason, block_number, block_hash,"
    " included_hash, settled, released)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_ATTEMPT = (
    "INSERT INTO attempts (hash, record_id, nonce, raw, max_fee_per_gas, max_priority_fee_per_gas,"
    " signed_at, reason, replaces) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_STATE = (
    "UPDATE records SET state = ?, state_reason = ?, updated_at = ?, block_number = ?,"
    " block_hash = ?, included_hash = ?, settled = ? WHERE id = ?"
)
# The _BARE variants spell a change without chain facts with NULL literals: sqlite3 binds a
# None parameter through its adapter lookup (an AttributeError raised and cleared each time).
UPDATE_STATE_BARE = (
    "UPDATE records SET state = ?, state_reason = ?, updated_at = ?, block_number = NULL,"
    " block_hash = NULL, included_hash = NULL, settled = ? WHERE id = ?"
)
INSERT_TRANSITION = (
    "INSERT INTO transitions (record_id, old, new, reason, at, block_number, block_hash, tx_hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_TRANSITION_BARE = (
    "INSERT INTO transitions (record_id, old, new, reason, at) VALUES (?, ?, ?, ?, ?)"
)
RELEASE = "UPDATE records SET released = 1, updated_at = ? WHERE id = ?"

Statement = tuple[str, tuple[object, ...]]
Rows = list[tuple[object, ...]]

_TEXT: dict[str, str] = {m: m.value for m in (*TxState, *AttemptReason)}
"""Enum member -> plain ``str``: ``.value`` is a descriptor call, and a ``StrEnum`` parameter is
not an exact ``str``, so sqlite3 would send it through its adapter lookup."""
_NO_ACCESS = orjson.dumps([])


def statements(entry: Entry) -> Iterator[Statement]:
    """The SQL that makes ``entry`` durable, in order: the obvious path, one entry at a time.

    The writer uses :func:`batch_statements`; tests pin it to this function's end state.
    """
    if isinstance(entry, StateChanged):
        block = entry.block
        number = block.number if block is not None else None
        block_hash = block.hash if block is not None else None
        yield (
            UPDATE_STATE,
            (entry.new.value, entry.reason, entry.at, number, block_hash, entry.included_hash,
             int(entry.settled), entry.intent_id),
        )  # fmt: skip
        yield (
            INSERT_TRANSITION,
            (entry.intent_id, entry.old.value, entry.new.value, entry.reason, entry.at, number,
             block_hash, entry.included_hash),
        )  # fmt: skip
    elif isinstance(entry, AttemptAdded):
        a = entry.attempt
        yield (
            INSERT_ATTEMPT,
            (a.hash, entry.intent_id, a.nonce, a.raw, str(a.max_fee_per_gas),
             str(a.max_priority_fee_per_gas), a.signed_at, a.reason.value, a.replaces),
        )  # fmt: skip
    elif isinstance(entry, RecordOpened):
        i = entry.intent
        access = orjson.dumps([[addr, list(keys)] for addr, keys in i.access_list])
        yield (
            INSERT_RECORD,
            (i.id, i.sender, entry.nonce, i.key, i.chain_id, i.tx_type, i.to, str(i.value), i.data,
             i.gas, str(i.max_fee_per_gas), str(i.max_priority_fee_per_gas), i.valid_until_block,
             access, int(i.external), int(i.noop), entry.at, entry.state.value, entry.at),
        )  # fmt: skip
    elif isinstance(entry, SlotReleased):
        yield (RELEASE, (entry.at, entry.intent_id))
    else:  # pragma: no cover - the Entry union is closed
        raise TypeError(f"not a journal entry: {entry!r}")


def batch_statements(entries: Iterable[Entry]) -> list[tuple[str, Rows]]:
    """The SQL of one transaction holding ``entries`` (in the book's order), for ``executemany``.

    Leaves the tables exactly as :func:`statements` applied entry by entry would (tests pin it),
    with less work on the writer thread, whose CPU every intent pays:

    - ``records``: every state UPDATE sets all of the row's state columns, so within a batch only
      a record's last one matters; a record opened in the batch is inserted with its final state
      and needs none. ``updated_at`` is the time of the record's last entry, whichever kind.
    - ``attempts`` and ``transitions`` (the audit trail): every row, in append order.
    - Each table's rows go out in one ``executemany`` per statement text (runs, where order
      matters), not one call per entry kind change.

    Relies on the book's order: a record's changes follow its ``RecordOpened``.
    """
    text = _TEXT
    opened: list[RecordOpened] = []
    last: dict[str, StateChanged] = {}  # each record's last change in the batch
    released: dict[str, float] = {}
    released_last: set[str] = set()  # released after its last change: RELEASE runs after it
    attempts: Rows = []
    transitions: list[tuple[str, Rows]] = []
    run_sql = ""
    run: Rows = []
    for entry in entries:
        # Exact type checks, most frequent first: cheaper than isinstance over the union.
        if type(entry) is StateChanged:
            rid = entry.intent_id
            last[rid] = entry
            if released_last:
                released_last.discard(rid)
            block, included = entry.block, entry.included_hash
            if block is None and included is None:
                sql = INSERT_TRANSITION_BARE
                row: tuple[object, ...] = (
                    rid, text[entry.old], text[entry.new], entry.reason, entry.at
                )  # fmt: skip
            else:
                sql = INSERT_TRANSITION
                row = (rid, text[entry.old], text[entry.new], entry.reason, entry.at,
                       block.number if block is not None else None,
                       block.hash if block is not None else None, included)  # fmt: skip
            if sql != run_sql:
                run = []
                transitions.append((sql, run))
                run_sql = sql
            run.append(row)
        elif type(entry) is AttemptAdded:
            a = entry.attempt
            attempts.append(
                (a.hash, entry.intent_id, a.nonce, a.raw, str(a.max_fee_per_gas),
                 str(a.max_priority_fee_per_gas), a.signed_at, text[a.reason], a.replaces)
            )  # fmt: skip
        elif type(entry) is RecordOpened:
            opened.append(entry)
        elif type(entry) is SlotReleased:
            rid = entry.intent_id
            released[rid] = entry.at
            released_last.add(rid)
        else:  # pragma: no cover - the Entry union is closed
            raise TypeError(f"not a journal entry: {entry!r}")

    out: list[tuple[str, Rows]] = []
    run_sql = ""
    for o in opened:
        i = o.intent
        rid = i.id
        access = (
            orjson.dumps([[addr, list(keys)] for addr, keys in i.access_list])
            if i.access_list
            else _NO_ACCESS
        )
        head = (rid, i.sender, o.nonce, i.key, i.chain_id, i.tx_type, i.to, str(i.value), i.data,
                i.gas, str(i.max_fee_per_gas), str(i.max_priority_fee_per_gas),
                i.valid_until_block, access, int(i.external), int(i.noop), o.at)  # fmt: skip
        change = last.pop(rid, None)
        release_at = released.pop(rid, None)
        if change is None and release_at is None:
            sql, row = INSERT_RECORD, (*head, text[o.state], o.at)
        else:
            sql = INSERT_RECORD_FINAL
            if change is None:
                row = (*head, text[o.state], release_at, "", None, None, None, 0, 1)
            else:
                block = change.block
                at = release_at if release_at is not None and rid in released_last else change.at
                row = (*head, text[change.new], at, change.reason,
                       block.number if block is not None else None,
                       block.hash if block is not None else None, change.included_hash,
                       int(change.settled), int(release_at is not None))  # fmt: skip
        if sql != run_sql:
            run = []
            out.append((sql, run))
            run_sql = sql
        run.append(row)
    if attempts:
        out.append((INSERT_ATTEMPT, attempts))

    # Rows already on disk. Distinct records are independent rows, so only a record's own
    # RELEASE/UPDATE order matters: it decides which ``updated_at`` stays.
    release_after: Rows = []
    if released:
        release_before: Rows = []
        for rid, at in released.items():
            (release_after if rid in released_last else release_before).append((at, rid))
        if release_before:
            out.append((RELEASE, release_before))
    bare: Rows = []
    full: Rows = []
    for rid, e in last.items():
        block, included = e.block, e.included_hash
        if block is None and included is None:
            bare.append((text[e.new], e.reason, e.at, int(e.settled), rid))
        else:
            full.append((text[e.new], e.reason, e.at,
                         block.number if block is not None else None,
                         block.hash if block is not None else None, included,
                         int(e.settled), rid))  # fmt: skip
    if bare:
        out.append((UPDATE_STATE_BARE, bare))
    if full:
        out.append((UPDATE_STATE, full))
    if release_after:
        out.append((RELEASE, release_after))
    out.extend(transitions)
    return out


def read_records(
    conn: sqlite3.Connection, where: str = "", params: tuple[object, ...] = ()
) -> list[TxRecord]:
    """The journal's records (all, or those matching the SQL ``where`` on ``records``) with
    their attempts, in booking order."""
    record_filter = f" WHERE {where}" if where else ""
    # A filtered read finds the attempts through attempts_slot: the records first (CROSS JOIN
    # keeps that order), then each one's attempts by (nonce, id).
    attempt_source = (
        f"(SELECT nonce, id FROM records{record_filter}) AS r CROSS JOIN attempts AS a"
        " ON a.nonce = r.nonce AND a.record_id = r.id"
        if where
        else "attempts AS a"
    )
    attempts: dict[str, list[Attempt]] = {}
    for row in conn.execute(
        "SELECT a.record_id, a.raw, a.hash, a.nonce, a.max_fee_per_gas,"
        " a.max_priority_fee_per_gas, a.signed_at, a.reason, a.replaces"
        f" FROM {attempt_source} ORDER BY a.rowid",
        params,
    ):
        attempts.setdefault(row[0], []).append(
            Attempt(
                raw=bytes(row[1]),
                hash=bytes(row[2]),
                nonce=row[3],
                max_fee_per_gas=int(row[4]),
                max_priority_fee_per_gas=int(row[5]),
                signed_at=row[6],
                reason=AttemptReason(row[7]),
                replaces=bytes(row[8]) if row[8] is not None else None,
            )
        )
    out: list[TxRecord] = []
    for row in conn.execute(
        "SELECT id, sender, nonce, idem_key, chain_id, tx_type, to_address, value, data, gas,"
        " max_fee_per_gas, max_priority_fee_per_gas, valid_until_block, access_list, external,"
        " noop, state, state_reason, updated_at, block_number, block_hash, included_hash,"
        f" settled, released FROM records{record_filter} ORDER BY rowid",
        params,
    ):
        access = tuple((addr, tuple(keys)) for addr, keys in orjson.loads(row[13] or b"[]"))
        intent = Intent(
            id=row[0],
            sender=row[1],
            to=row[6],
            value=int(row[7]),
            data=bytes(row[8]),
            gas=row[9],
            max_fee_per_gas=int(row[10]),
            max_priority_fee_per_gas=int(row[11]),
            chain_id=row[4],
            valid_until_block=row[12],
            key=row[3],
            tx_type=row[5],
            access_list=access,
            external=bool(row[14]),
            noop=bool(row[15]),
        )
        out.append(
            TxRecord(
                intent=intent,
                nonce=row[2],
                state=TxState(row[16]),
                updated_at=row[18],
                attempts=attempts.get(row[0], []),
                block=BlockRef(row[19], row[20]) if row[20] is not None else None,
                included_hash=bytes(row[21]) if row[21] is not None else None,
                state_reason=row[17],
                settled=bool(row[22]),
                released=bool(row[23]),
            )
        )
    return out


__all__ = [
    "MIGRATIONS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Statement",
    "batch_statements",
    "read_records",
    "statements",
]

"""The journal's SQLite schema and the codec between rows and the book's values.

Three tables: ``records`` (one row per booked intent: the intent as accepted plus its current
state and chain facts), ``attempts`` (every signed attempt, raw bytes included, never updated)
and ``transitions`` (every state change, append-only: the audit trail). Rows are written in the
order the book produced the entries, so ``rowid`` order is booking order on reload.

Quantities that may exceed SQLite's signed 64-bit INTEGER (``value``, fee fields) are stored as
decimal TEXT; hashes and raw transactions as BLOB; block hashes as the ``0x`` hex the tracker uses.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import orjson

from nonce.entries import AttemptAdded, Entry, RecordOpened, SlotReleased, StateChanged
from nonce.state import Attempt, AttemptReason, BlockRef, Intent, TxRecord, TxState

SCHEMA_VERSION = "1"

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
CREATE INDEX IF NOT EXISTS records_slot ON records (sender, nonce);
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
CREATE INDEX IF NOT EXISTS attempts_record ON attempts (record_id);
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
);
"""

INSERT_RECORD = (
    "INSERT INTO records (id, sender, nonce, idem_key, chain_id, tx_type, to_address, value, data,"
    " gas, max_fee_per_gas, max_priority_fee_per_gas, valid_until_block, access_list, external,"
    " noop, accepted_at, state, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_ATTEMPT = (
    "INSERT INTO attempts (hash, record_id, nonce, raw, max_fee_per_gas, max_priority_fee_per_gas,"
    " signed_at, reason, replaces) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_STATE = (
    "UPDATE records SET state = ?, state_reason = ?, updated_at = ?, block_number = ?,"
    " block_hash = ?, included_hash = ?, settled = ? WHERE id = ?"
)
INSERT_TRANSITION = (
    "INSERT INTO transitions (record_id, old, new, reason, at, block_number, block_hash, tx_hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
RELEASE = "UPDATE records SET released = 1, updated_at = ? WHERE id = ?"

Statement = tuple[str, tuple[object, ...]]


def statements(entry: Entry) -> Iterator[Statement]:
    """The SQL that makes ``entry`` durable, in order."""
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


def read_records(
    conn: sqlite3.Connection, where: str = "", params: tuple[object, ...] = ()
) -> list[TxRecord]:
    """The journal's records (all, or those matching the SQL ``where`` on ``records``) with
    their attempts, in booking order."""
    record_filter = f" WHERE {where}" if where else ""
    attempt_filter = f" WHERE record_id IN (SELECT id FROM records{record_filter})" if where else ""
    attempts: dict[str, list[Attempt]] = {}
    for row in conn.execute(
        "SELECT record_id, raw, hash, nonce, max_fee_per_gas, max_priority_fee_per_gas,"
        f" signed_at, reason, replaces FROM attempts{attempt_filter} ORDER BY rowid",
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


__all__ = ["SCHEMA", "SCHEMA_VERSION", "Statement", "read_records", "statements"]

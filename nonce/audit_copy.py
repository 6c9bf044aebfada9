"""The broadcaster's verified copy of the enclave's audit log, in the journal (DESIGN §6a).

Four tables declared with the journal's (``nonce.schema``): ``audit_entries`` (each entry as
the enclave signed it, with the ``sign`` entries' ``tx_hash``, ``sender`` and ``nonce`` indexed
for the reconciler), ``audit_keys`` (the log keys attestation vouched for), ``audit_heads`` (the
signed heads the enclave reported) and ``audit_logs`` (which log each instance's enclave serves).

Keyed by log: with active/standby instances on one PostgreSQL journal each instance's enclave
keeps its own log (its own seq, its own log keys), so every entry and head carries ``log_id``,
the key of the segment that opened its log at seq 1 (:func:`log_id_of`), and every read of a
log's chain names it: a verify of one log never reads another's rows. Only the reconciler's
:meth:`AuditCopyBase.signed` reads across logs: a transaction of ours is accounted for if ANY
verified log holds it (after a failover, the new leader's chain holds what the old leader's
enclave signed).

Two backends, one contract (:class:`AuditCopyBase`, SQL written once for SQLite and translated
by :data:`nonce.schema.POSTGRES`): :class:`AuditCopy` on the SQLite journal file, and
``nonce.pg_audit_copy.PgAuditCopy`` on the PostgreSQL journal, whose writes are fenced on the
lease epoch as the journal's are. :func:`open_audit_copy` picks one from the journal target.

Only ``broadcaster.audit`` writes here, and only entries it verified; it does so from a
background task through :func:`asyncio.to_thread`, on its own connection. Nothing on the
reaction path touches it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nonce.errors import JournalError
from nonce.journal import _connect

__all__ = [
    "AuditCopy",
    "AuditCopyBase",
    "StoredAnchor",
    "StoredEntry",
    "log_id_of",
    "open_audit_copy",
]

Batch = list[tuple[str, list[tuple[object, ...]]]]


@dataclass(frozen=True, slots=True)
class StoredAnchor:
    seq: int
    hash: str
    key: str


@dataclass(frozen=True, slots=True)
class StoredEntry:
    seq: int
    hash: str
    kind: str
    log_key: str
    tx_hash: bytes | None
    sender: str | None
    nonce: int | None
    entry: bytes


def entry_chain(line: bytes | memoryview | str) -> int | None:
    """The chain id a stored ``sign`` entry's data names (``data.chain``), or None."""
    try:
        data = orjson.loads(bytes(line) if isinstance(line, memoryview) else line)["data"]
        chain = data.get("chain")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    return chain if type(chain) is int else None


def log_id_of(first: StoredEntry) -> str:
    """A log's id: the key of the segment its seq-1 ``start`` entry opened."""
    return first.log_key.lower()


_ADD_KEY = (
    "INSERT INTO audit_keys (log_key, attested, pcr0, first_seen) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (log_key) DO UPDATE SET attested = CASE WHEN excluded.attested >"
    " audit_keys.attested THEN excluded.attested ELSE audit_keys.attested END"
)
_ADD_ENTRY = (
    "INSERT INTO audit_entries (log_id, seq, hash, kind, log_key, tx_hash, sender, nonce, entry)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ADD_HEAD = (
    "INSERT INTO audit_heads (log_id, seq, hash, signature, log_key, at) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (log_id, seq) DO UPDATE SET hash = excluded.hash, signature ="
    " excluded.signature, log_key = excluded.log_key, at = excluded.at"
)
_BIND = (
    "INSERT INTO audit_logs (instance, log_id, first_seen) VALUES (?, ?, ?)"
    " ON CONFLICT (instance) DO NOTHING"
)


class AuditCopyBase:
    """The copy's contract; a backend implements :meth:`_run` (one statement, autocommit) and
    :meth:`_write` (statements in one transaction: fenced on PostgreSQL)."""

    where: str = ""

    def _run(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _write(self, batch: Batch) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- writes (verified data only) ----------------------------------------------------------

    def add_key(self, log_key: str, *, attested: bool, pcr0: str | None, at: float) -> None:
        self._write([(_ADD_KEY, [(log_key.lower(), int(attested), pcr0, at)])])

    def append(
        self,
        log_id: str,
        entries: Sequence[StoredEntry],
        head: tuple[int, str, str, str] | None,
        at: float,
        *,
        instance: str | None = None,
    ) -> None:
        """Store verified entries of log ``log_id`` and the head they reached, in one
        transaction; ``instance``: record that this log is that instance's (its first batch)."""
        log_id = log_id.lower()
        batch: Batch = []
        if entries:
            batch.append(
                (
                    _ADD_ENTRY,
                    [
                        (log_id, e.seq, e.hash, e.kind, e.log_key, e.tx_hash, e.sender, e.nonce,
                         e.entry)
                        for e in entries
                    ],
                )
            )  # fmt: skip
        if head is not None:
            seq, digest, signature, key = head
            batch.append((_ADD_HEAD, [(log_id, seq, digest, signature, key, at)]))
        if instance is not None:
            batch.append((_BIND, [(instance, log_id, at)]))
        if batch:
            self._write(batch)

    # -- reads --------------------------------------------------------------------------------

    def log_of(self, instance: str) -> str | None:
        """The log ``instance``'s enclave serves (``None``: none stored yet)."""
        rows = self._run("SELECT log_id FROM audit_logs WHERE instance = ?", (instance,))
        return str(rows[0][0]) if rows else None

    def instance_of(self, log_id: str) -> str | None:
        """The instance whose enclave serves ``log_id`` (``None``: no instance's yet)."""
        rows = self._run("SELECT instance FROM audit_logs WHERE log_id = ?", (log_id.lower(),))
        return str(rows[0][0]) if rows else None

    def logs(self) -> list[str]:
        """Every log the copy holds entries of, in order of their id."""
        rows = self._run("SELECT DISTINCT log_id FROM audit_entries ORDER BY 1")
        return [str(r[0]) for r in rows]

    def anchor(self, log_id: str) -> StoredAnchor | None:
        """The last stored entry of ``log_id`` (``None``: nothing stored yet)."""
        rows = self._run(
            "SELECT seq, hash, log_key FROM audit_entries WHERE log_id = ?"
            " ORDER BY seq DESC LIMIT 1",
            (log_id,),
        )
        if not rows:
            return None
        seq, digest, key = rows[0]
        return StoredAnchor(int(seq), str(digest), str(key))

    def last_head(self, log_id: str) -> tuple[int, str, str] | None:
        rows = self._run(
            "SELECT seq, hash, signature FROM audit_heads WHERE log_id = ?"
            " ORDER BY seq DESC LIMIT 1",
            (log_id,),
        )
        if not rows:
            return None
        seq, digest, signature = rows[0]
        return int(seq), str(digest), str(signature)

    def lines(self, log_id: str, from_seq: int = 1, limit: int = 10_000) -> list[StoredEntry]:
        """The stored entries of ``log_id`` (``entry``: the JSON line as the enclave signed it,
        beside the columns indexed from it), in seq order."""
        rows = self._run(
            "SELECT seq, hash, kind, log_key, tx_hash, sender, nonce, entry FROM audit_entries"
            " WHERE log_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
            (log_id, from_seq, limit),
        )
        return [
            StoredEntry(
                int(seq), str(digest), str(kind), str(key),
                bytes(tx) if tx is not None else None, sender,
                int(nonce) if nonce is not None else None, bytes(entry),
            )
            for seq, digest, kind, key, tx, sender, nonce, entry in rows
        ]  # fmt: skip

    def heads(self, log_id: str) -> list[tuple[int, str, str]]:
        """Every stored signed head ``(seq, hash, signature)`` of ``log_id``, ascending."""
        rows = self._run(
            "SELECT seq, hash, signature FROM audit_heads WHERE log_id = ? ORDER BY seq",
            (log_id,),
        )
        return [(int(a), str(b), str(c)) for a, b, c in rows]

    def keys(self, *, attested_only: bool = False) -> set[str]:
        """The stored log keys (``attested_only``: those an attestation vouched for)."""
        sql = "SELECT log_key FROM audit_keys" + (" WHERE attested = 1" if attested_only else "")
        return {str(row[0]) for row in self._run(sql)}

    def holders(self, tx_hashes: Iterable[bytes]) -> list[tuple[bytes, str, int]]:
        """``(tx_hash, log_id, seq)`` of every stored ``sign`` entry holding one of
        ``tx_hashes``, in any log (the reconciler decides which logs count)."""
        wanted = list(tx_hashes)
        out: list[tuple[bytes, str, int]] = []
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            rows = self._run(
                "SELECT tx_hash, log_id, seq FROM audit_entries WHERE tx_hash IN"
                f" ({','.join('?' * len(chunk))})",
                tuple(chunk),
            )
            out += [(bytes(tx), str(log_id), int(seq)) for tx, log_id, seq in rows]
        return out

    def signed(self, tx_hashes: Iterable[bytes]) -> set[bytes]:
        """Those of ``tx_hashes`` a verified ``sign`` entry holds, in any log."""
        return self._matching("SELECT tx_hash FROM audit_entries WHERE tx_hash IN ({})", tx_hashes)

    def signed_nonces(self, log_id: str, sender: str, floor: int, chain_id: int) -> set[int]:
        """The nonces at or above ``floor`` that ``sender`` has a verified ``sign`` entry at in
        ``log_id`` on chain ``chain_id`` (recovery: ``broadcaster.tx.unjournaled``). The chain is
        read from the stored entry (no column of its own): an enclave whose policy allows several
        chains signs the same key's nonces on each, and its nonce protection is per chain."""
        rows = self._run(
            "SELECT nonce, entry FROM audit_entries"
            " WHERE log_id = ? AND kind = 'sign' AND sender = ? AND nonce >= ?",
            (log_id, sender.lower(), floor),
        )
        return {int(nonce) for nonce, entry in rows if entry_chain(entry) == chain_id}

    def external(self, tx_hashes: Iterable[bytes]) -> set[bytes]:
        """Those of ``tx_hashes`` that are attempts of raw transactions the journal accepted
        as external (``eth_sendRawTransaction``: signed elsewhere, on purpose)."""
        return self._matching(
            "SELECT a.hash FROM attempts a JOIN records r ON r.id = a.record_id"
            " WHERE r.external = 1 AND a.hash IN ({})",
            tx_hashes,
        )

    def _matching(self, template: str, tx_hashes: Iterable[bytes]) -> set[bytes]:
        wanted = list(tx_hashes)
        found: set[bytes] = set()
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            rows = self._run(template.format(",".join("?" * len(chunk))), tuple(chunk))
            found.update(bytes(row[0]) for row in rows)
        return found

    def count(self, log_id: str | None = None) -> int:
        if log_id is None:
            return int(self._run("SELECT COUNT(*) FROM audit_entries")[0][0])
        rows = self._run("SELECT COUNT(*) FROM audit_entries WHERE log_id = ?", (log_id,))
        return int(rows[0][0])


class AuditCopy(AuditCopyBase):
    """The audit tables of the SQLite journal at ``path`` (created, or migrated, on open). Its
    own connection: WAL lets it share the file with the journal's writer thread;
    ``busy_timeout`` waits out the writer's commits."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self._lock = threading.Lock()
        try:
            self._conn = _connect(self.path)
            self._conn.execute("PRAGMA busy_timeout = 5000")
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the audit copy in {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _run(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._conn.execute(sql, params))
            except sqlite3.Error as exc:
                raise JournalError(f"audit copy {self.path}: {exc}") from exc

    def _write(self, batch: Batch) -> None:
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                for sql, rows in batch:
                    conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise JournalError(f"audit copy {self.path}: {exc}") from exc


def open_audit_copy(target: str | Path, *, epoch: int | None = None) -> AuditCopyBase:
    """The copy in the journal ``target`` (a SQLite path or a ``postgresql://`` URL; ``epoch``:
    fence every write on it, PostgreSQL only)."""
    from nonce.backends import is_postgres

    if is_postgres(target):
        from nonce.pg_audit_copy import PgAuditCopy

        return PgAuditCopy(str(target), epoch=epoch)
    if epoch is not None:
        raise ValueError("a lease epoch needs a PostgreSQL journal")
    return AuditCopy(target)

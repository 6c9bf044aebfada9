"""The broadcaster's verified copy of the enclave's audit log, in the journal file (DESIGN §6a).

Three tables declared with the journal's (``nonce.schema``): ``audit_entries`` (each entry as the
enclave signed it, with the ``sign`` entries' ``tx_hash``, ``sender`` and ``nonce`` indexed for
the reconciler), ``audit_keys`` (the log keys attestation vouched for) and ``audit_heads`` (the
signed heads the enclave reported). Only ``broadcaster.audit`` writes here, and only entries it
verified; it does so from a background task through :func:`asyncio.to_thread`, on its own
connection (WAL lets it share the file with the journal's writer thread; ``busy_timeout`` waits
out the writer's commits). Nothing on the reaction path touches it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nonce.errors import JournalError
from nonce.journal import _connect

__all__ = ["AuditCopy", "StoredAnchor", "StoredEntry"]


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


class AuditCopy:
    """The audit tables of the journal at ``path`` (created, or migrated, on open)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
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

    # -- writes (verified data only) ----------------------------------------------------------

    def add_key(self, log_key: str, *, attested: bool, pcr0: str | None, at: float) -> None:
        self._run(
            "INSERT INTO audit_keys (log_key, attested, pcr0, first_seen) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (log_key) DO UPDATE SET attested = MAX(attested, excluded.attested)",
            (log_key.lower(), int(attested), pcr0, at),
        )

    def append(
        self, entries: Sequence[StoredEntry], head: tuple[int, str, str, str] | None, at: float
    ) -> None:
        """Store verified entries and the head they reached, in one transaction."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT INTO audit_entries (seq, hash, kind, log_key, tx_hash, sender, nonce,"
                    " entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (e.seq, e.hash, e.kind, e.log_key, e.tx_hash, e.sender, e.nonce, e.entry)
                        for e in entries
                    ],
                )
                if head is not None:
                    seq, digest, signature, key = head
                    conn.execute(
                        "INSERT OR REPLACE INTO audit_heads (seq, hash, signature, log_key, at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (seq, digest, signature, key, at),
                    )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise JournalError(f"audit copy {self.path}: {exc}") from exc

    # -- reads --------------------------------------------------------------------------------

    def anchor(self) -> StoredAnchor | None:
        """The last stored entry (``None``: nothing stored yet)."""
        rows = self._run("SELECT seq, hash, log_key FROM audit_entries ORDER BY seq DESC LIMIT 1")
        if not rows:
            return None
        seq, digest, key = rows[0]
        return StoredAnchor(int(seq), str(digest), str(key))

    def last_head(self) -> tuple[int, str, str] | None:
        rows = self._run("SELECT seq, hash, signature FROM audit_heads ORDER BY seq DESC LIMIT 1")
        if not rows:
            return None
        seq, digest, signature = rows[0]
        return int(seq), str(digest), str(signature)

    def lines(self, from_seq: int = 1, limit: int = 10_000) -> list[StoredEntry]:
        """The stored entries (``entry``: the JSON line as the enclave signed it, beside the
        columns indexed from it), in seq order."""
        rows = self._run(
            "SELECT seq, hash, kind, log_key, tx_hash, sender, nonce, entry FROM audit_entries"
            " WHERE seq >= ? ORDER BY seq LIMIT ?",
            (from_seq, limit),
        )
        return [
            StoredEntry(
                int(seq), str(digest), str(kind), str(key),
                bytes(tx) if tx is not None else None, sender,
                int(nonce) if nonce is not None else None, bytes(entry),
            )
            for seq, digest, kind, key, tx, sender, nonce, entry in rows
        ]  # fmt: skip

    def heads(self) -> list[tuple[int, str, str]]:
        """Every stored signed head ``(seq, hash, signature)``, ascending."""
        rows = self._run("SELECT seq, hash, signature FROM audit_heads ORDER BY seq")
        return [(int(a), str(b), str(c)) for a, b, c in rows]

    def keys(self) -> set[str]:
        return {str(row[0]) for row in self._run("SELECT log_key FROM audit_keys")}

    def signed(self, tx_hashes: Iterable[bytes]) -> set[bytes]:
        """Those of ``tx_hashes`` a verified ``sign`` entry holds."""
        wanted = list(tx_hashes)
        found: set[bytes] = set()
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._run(
                f"SELECT tx_hash FROM audit_entries WHERE tx_hash IN ({marks})", tuple(chunk)
            )
            found.update(bytes(row[0]) for row in rows)
        return found

    def external(self, tx_hashes: Iterable[bytes]) -> set[bytes]:
        """Those of ``tx_hashes`` that are attempts of raw transactions the journal accepted
        as external (``eth_sendRawTransaction``: signed elsewhere, on purpose)."""
        wanted = list(tx_hashes)
        found: set[bytes] = set()
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._run(
                "SELECT a.hash FROM attempts a JOIN records r ON r.id = a.record_id"
                f" WHERE r.external = 1 AND a.hash IN ({marks})",
                tuple(chunk),
            )
            found.update(bytes(row[0]) for row in rows)
        return found

    def count(self) -> int:
        return int(self._run("SELECT COUNT(*) FROM audit_entries")[0][0])

"""The audit copy on the PostgreSQL journal (``[journal] url``, DESIGN.md §6a and §9).

The contract of :class:`nonce.audit_copy.AuditCopyBase` (the same SQL, translated by
:data:`nonce.schema.POSTGRES`), on one connection of its own (not the journal writer's: nothing
here waits on the reaction path's commits, nor they on it), kept and re-opened once after a lost
connection. Writes are fenced like the journal's (``nonce.pg_journal``): with ``epoch`` given,
each write transaction first reads the lease row ``FOR KEY SHARE`` and goes on only if its epoch
is still ours, so a stale leader's copy write fails with :class:`nonce.errors.StaleEpoch` and
changes nothing. Reads are not fenced: ``broadcaster audit`` reads a copy offline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg

from nonce.audit_copy import AuditCopyBase, Batch
from nonce.errors import JournalError, StaleEpoch
from nonce.pg_journal import check_fence, connect, redact
from nonce.schema import POSTGRES

__all__ = ["PgAuditCopy"]


class PgAuditCopy(AuditCopyBase):
    """The audit tables of the PostgreSQL journal at ``url`` (created, or migrated, on open)."""

    def __init__(self, url: str, *, epoch: int | None = None) -> None:
        self.url = url
        self.where = redact(url)
        self.epoch = epoch
        self.on_stale: Callable[[StaleEpoch], None] | None = None
        """Called the moment a write finds the lease at another epoch (as the journal's)."""
        self._lock = threading.Lock()
        try:
            self._conn: psycopg.Connection[Any] | None = connect(url)
        except (psycopg.Error, OSError) as exc:
            raise JournalError(f"cannot open the audit copy in {self.where}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            self._conn = connect(self.url)
        return self._conn

    def _retrying(self, work: Any) -> Any:
        """``work(conn, again)`` under the lock; once more (``again``) on a new connection after
        a lost one."""
        with self._lock:
            for attempt in range(2):
                try:
                    return work(self._connection(), bool(attempt))
                except psycopg.OperationalError as exc:
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = None
                    if attempt:
                        raise JournalError(f"audit copy {self.where}: {exc}") from exc
                except (psycopg.Error, OSError) as exc:
                    raise JournalError(f"audit copy {self.where}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _run(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        text = POSTGRES.sql(sql)

        def work(conn: psycopg.Connection[Any], again: bool) -> list[tuple[Any, ...]]:
            cursor = conn.execute(text, params)
            return list(cursor.fetchall()) if cursor.description is not None else []

        result: list[tuple[Any, ...]] = self._retrying(work)
        return result

    def _write(self, batch: Batch) -> None:
        groups = [(POSTGRES.sql(sql), rows) for sql, rows in batch]
        # Written again after a lost connection, a batch whose COMMIT went through finds its
        # own rows: the same verified entries, so they are kept as they are.
        again_groups = [
            (sql + " ON CONFLICT DO NOTHING" if "ON CONFLICT" not in sql else sql, rows)
            for sql, rows in groups
        ]

        def work(conn: psycopg.Connection[Any], again: bool) -> None:
            with conn.transaction():
                check_fence(conn, self.epoch, self.on_stale)
                cursor = conn.cursor()
                for sql, rows in again_groups if again else groups:
                    cursor.executemany(sql, rows)

        self._retrying(work)

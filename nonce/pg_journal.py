"""The journal on PostgreSQL (``[journal] url = "postgresql://..."``, DESIGN.md §5 and §9).

The same contract as :class:`nonce.journal.SqliteJournal` -- it shares its writer thread
(:class:`nonce.journal.ThreadedJournal`): ``append`` is one ``deque.append``, the writer commits
what accumulated every ``linger`` as one transaction (group commit, the same
``schema.batch_statements``), ``flush``/``commit_now`` return once it is durable. A batch
without a flush in it commits with ``synchronous_commit = off`` (SQLite's ``NORMAL``: it may be
lost with the database server's crash, never half of it); a batch holding a flush commits with
``synchronous_commit = on`` (the WAL is flushed, on a replica too when the server is set so).

Differences, all on the writer thread:

- **Connection loss** (the database restarts, a failover of a managed database): the batch's
  transaction rolled back; the writer reconnects (backoff up to 1 s) and writes the same batch
  again, for as long as it takes. Flushes wait meanwhile: the intent API does not acknowledge
  what is not durable. A batch whose COMMIT was sent but whose answer was lost may be written
  twice: written again, its inserts are ``ON CONFLICT DO NOTHING`` and its updates set whole
  states, so the second write changes nothing (its audit ``transitions`` rows may appear
  twice). A first write is as strict as SQLite's: a genuine conflict fails the journal.
- **Fencing** (``epoch`` given, with ``[ha]``): every batch first reads the lease row ``FOR
  KEY SHARE`` and goes on only if its epoch is still ours. A standby's takeover (which locks
  that row ``FOR UPDATE``) waits for a batch in flight, the leader's renewal does not, and
  every later batch of the old leader fails with :class:`nonce.errors.StaleEpoch`: the journal
  turns unhealthy, nothing more is written.

``load``/``lookup``/``open_book`` mirror those of :mod:`nonce.journal`. The schema is the one of
:data:`nonce.schema.TABLES` in :data:`nonce.schema.POSTGRES`; migrations are the same
:data:`nonce.schema.MIGRATIONS`, run under an advisory lock (instances may start together).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.sql

from nonce.book import NonceBook
from nonce.entries import Entry
from nonce.errors import JournalError, StaleEpoch
from nonce.journal import LINGER, MAX_BATCH, ThreadedJournal
from nonce.schema import (
    LEASE,
    MIGRATIONS,
    POSTGRES,
    SCHEMA_VERSION,
    batch_statements,
    read_bundles,
    read_records,
)
from nonce.state import TxRecord

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5
"""Seconds a connection attempt may take (libpq ``connect_timeout``)."""

GIVE_UP_ON_CLOSE = 5.0
"""Seconds a closing journal keeps retrying a lost connection before it gives up (and says so)."""

_SCHEMA_LOCK = 0x6A6F75726E616C  # pg_advisory_xact_lock key: "journal"
_FENCE = "SELECT epoch FROM ha_lease WHERE name = 'leader' FOR KEY SHARE"
"""The batch's fence. ``KEY SHARE``: a takeover (``FOR UPDATE``) waits for it, the leader's own
renewal (an ``UPDATE`` of non-key columns) does not -- with ``FOR SHARE`` a renewal waited for
the batch in flight, and a batch slower than the lock timeout failed it (the leader exited)."""


def check_fence(
    conn: psycopg.Connection[Any],
    epoch: int | None,
    on_stale: Callable[[StaleEpoch], None] | None,
) -> None:
    """Inside the write's transaction: the lease is still at ``epoch`` (``None``: unfenced), or
    :class:`StaleEpoch` (``on_stale`` told first). The journal and the audit copy both call it."""
    if epoch is None:
        return
    row = conn.execute(_FENCE).fetchone()
    current = row[0] if row else None
    if current != epoch:
        stale = StaleEpoch(epoch, current)
        if on_stale is not None:
            on_stale(stale)
        raise stale


_BUMP_FLUSHES = "UPDATE meta SET value = (value::bigint + 1)::text WHERE key = 'flushes'"


def redact(url: str) -> str:
    """``url`` without its password, for logs and errors: the one in the authority and a
    ``password=`` query parameter (libpq takes both); a URL that does not parse is not shown."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "postgresql://(a URL that does not parse)"
    if password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
    if parts.query:
        fields = [
            f"{name}=***" if name.lower() == "password" else field
            for field in parts.query.split("&")
            for name in (field.partition("=")[0],)
        ]
        parts = parts._replace(query="&".join(fields))
    return urlunsplit(parts)


STUCK_TRANSACTION_MS = 1000
"""A session idle inside a transaction this long is ended by the server (its transaction rolls
back): a writer paused mid-batch (SIGSTOP) must not hold its ``FOR KEY SHARE`` lock on the lease
row, which would block a standby's takeover until it resumes. A batch never idles that long between
its statements; if it did, it is written again after the reconnect."""
_WRITER = {"idle_in_transaction_session_timeout": str(STUCK_TRANSACTION_MS)}


def connect(url: str, *, settings: dict[str, str] | None = None) -> psycopg.Connection[Any]:
    """An autocommit connection (transactions are explicit), the schema created or migrated,
    ``settings`` applied to the session (``SET name = value``)."""
    conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    try:
        for name, value in (settings or {}).items():
            conn.execute(
                psycopg.sql.SQL("SELECT set_config({}, {}, false)").format(
                    psycopg.sql.Literal(name), psycopg.sql.Literal(value)
                )
            )
        ensure_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the tables (journal and lease) and bring an older schema up to date."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute(POSTGRES.ddl((*_tables(), LEASE)))
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema', %s) ON CONFLICT DO NOTHING",
            (SCHEMA_VERSION,),
        )
        conn.execute("INSERT INTO meta (key, value) VALUES ('flushes', '0') ON CONFLICT DO NOTHING")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        version = row[0] if row else SCHEMA_VERSION
        while version in MIGRATIONS:
            version, step = MIGRATIONS[version]
            sql = POSTGRES.migration(step)
            if sql:  # a step may only move the version (its tables are in the DDL above)
                conn.execute(sql)
            conn.execute("UPDATE meta SET value = %s WHERE key = 'schema'", (version,))
            logger.info("journal: migrated to schema %s", version)
    if version != SCHEMA_VERSION:
        raise JournalError(f"journal schema {version}, this code reads {SCHEMA_VERSION}")


def _tables() -> tuple[Any, ...]:
    from nonce.schema import TABLES  # read at call time: tests may extend it

    return TABLES


def _strict(sql: str) -> str:
    """``sql`` in PostgreSQL without the ``ON CONFLICT DO NOTHING`` a retried batch needs
    (kept where SQLite ignores too: ``INSERT OR IGNORE``)."""
    done = POSTGRES.sql(sql)
    if sql.startswith("INSERT OR IGNORE"):
        return done
    return done.removesuffix(" ON CONFLICT DO NOTHING")


class PgJournal(ThreadedJournal):
    """``Journal`` on PostgreSQL with a writer thread; ``epoch``: fence every write on it."""

    def __init__(
        self,
        url: str,
        *,
        epoch: int | None = None,
        linger: float = LINGER,
        max_batch: int = MAX_BATCH,
    ) -> None:
        super().__init__(linger=linger, max_batch=max_batch)
        self.url = url
        self.where = redact(url)
        self.epoch = epoch
        self.reconnects = 0
        self.on_stale: Callable[[StaleEpoch], None] | None = None
        """Called (on the writer thread) the moment a batch finds the lease at another epoch:
        the service lapses its fence there, before the next send, not at the next renewal."""
        try:
            self._conn: psycopg.Connection[Any] | None = connect(url, settings=_WRITER)
        except (psycopg.Error, OSError) as exc:
            raise JournalError(f"cannot open journal {self.where}: {exc}") from exc
        self._start()

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write(self, entries: list[Entry], *, durable: bool) -> None:
        if not entries and self._synced:
            return
        statements = list(batch_statements(entries))
        # The first write is as strict as SQLite's (a genuine conflict fails the journal, loudly);
        # only a batch written again after a lost connection may find its own rows there.
        groups = [(_strict(sql), rows) for sql, rows in statements]
        delay = 0.05
        gave_up_at: float | None = None
        while True:
            try:
                self._transaction(groups, durable=durable, empty=not entries)
                break
            except psycopg.OperationalError as exc:
                # The connection is gone (or the server restarts): the transaction rolled back.
                now = time.monotonic()
                if self._closed:
                    gave_up_at = gave_up_at or now + GIVE_UP_ON_CLOSE
                    if now > gave_up_at:
                        raise
                groups = [(POSTGRES.sql(sql), rows) for sql, rows in statements]
                logger.warning("journal %s: %s; reconnecting in %.2f s", self.where, exc, delay)
                self._disconnect()
                time.sleep(delay)
                delay = min(1.0, delay * 2)
                try:
                    self._conn = connect(self.url, settings=_WRITER)
                    self.reconnects += 1
                except (psycopg.Error, OSError) as again:
                    logger.warning("journal %s: reconnect failed: %s", self.where, again)
        self._synced = durable
        self.committed_batches += 1

    def _transaction(self, groups: list[tuple[str, Any]], *, durable: bool, empty: bool) -> None:
        conn = self._conn
        if conn is None:
            raise psycopg.OperationalError("not connected")
        with conn.transaction():
            check_fence(conn, self.epoch, self.on_stale)
            if not durable:
                conn.execute("SET LOCAL synchronous_commit TO off")
            cursor = conn.cursor()
            for sql, rows in groups:
                cursor.executemany(sql, rows)
            if empty:  # a flush with nothing new: a durable commit flushes the earlier ones
                conn.execute(_BUMP_FLUSHES)


class PgReader:
    """Reads for the service (``lookup`` of evicted records): one connection, kept, re-opened
    after a failure; a lock makes it safe from any thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def query(self, where: str, params: tuple[object, ...]) -> list[TxRecord]:
        with self._lock:
            for attempt in range(2):
                try:
                    if self._conn is None:
                        self._conn = connect(self.url)
                    return read_records(self._conn, where, params, POSTGRES)
                except psycopg.OperationalError as exc:
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = None
                    if attempt:
                        raise JournalError(
                            f"cannot read journal {redact(self.url)}: {exc}"
                        ) from exc
                except psycopg.Error as exc:
                    raise JournalError(f"cannot read journal {redact(self.url)}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def lookup(self, *, intent_id: str | None = None, key: str | None = None) -> TxRecord | None:
        if intent_id is not None:
            found = self.query("id = ?", (intent_id,))
        elif key is not None:
            found = self.query("idem_key = ?", (key,))
        else:
            raise ValueError("lookup needs an intent id or a key")
        return found[0] if found else None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def load(url: str, *, settled_kept: int | None = None) -> list[TxRecord]:
    """The journal's records, as :func:`nonce.journal.load` (an empty database: none)."""
    where = ""
    params: tuple[object, ...] = ()
    if settled_kept is not None:
        where = (
            "settled = 0 OR rowid IN (SELECT rowid FROM records WHERE settled = 1"
            " ORDER BY rowid DESC LIMIT ?)"
        )
        params = (settled_kept,)
    reader = PgReader(url)
    try:
        return reader.query(where, params)
    finally:
        reader.close()


def load_bundles(url: str) -> list[tuple[str, bytes]]:
    """The journal's bundles as ``(id, spec)``, as :func:`nonce.journal.load_bundles`."""
    try:
        conn = connect(url)
    except psycopg.Error as exc:
        raise JournalError(f"cannot read journal {redact(url)}: {exc}") from exc
    try:
        return read_bundles(conn, POSTGRES)
    except psycopg.errors.UndefinedTable:
        return []  # no journal written yet
    except psycopg.Error as exc:
        raise JournalError(f"cannot read journal {redact(url)}: {exc}") from exc
    finally:
        conn.close()


def lookup(url: str, *, intent_id: str | None = None, key: str | None = None) -> TxRecord | None:
    """One record by intent id or idempotency key, as :func:`nonce.journal.lookup`."""
    reader = PgReader(url)
    try:
        return reader.lookup(intent_id=intent_id, key=key)
    finally:
        reader.close()


def open_book(
    url: str, *, epoch: int | None = None, settled_kept: int | None = None
) -> tuple[NonceBook, PgJournal]:
    """Reload the book from the database and journal its further changes there (fenced on
    ``epoch`` when given). With ``epoch``, open the writer first: a stale epoch fails before
    anything is read."""
    journal = PgJournal(url, epoch=epoch)
    try:
        if epoch is not None:
            journal.commit_now(timeout=30)  # one fenced (empty) commit: still ours?
        records = load(url, settled_kept=settled_kept)
    except BaseException:
        journal.close()
        raise
    return NonceBook.restore(records, journal), journal


__all__ = [
    "PgJournal",
    "PgReader",
    "connect",
    "ensure_schema",
    "load",
    "load_bundles",
    "lookup",
    "open_book",
]

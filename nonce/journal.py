"""The durable journal: SQLite in WAL mode, written by one background thread (DESIGN.md §5).

Durability contract
-------------------
- ``journal.append(entry)`` is what ``NonceBook`` calls on every change, on the reorg hot path
  too. It is O(1) and never blocks: one ``deque.append``, which does not even wake the writer
  thread (a wake-up in the middle of a reaction would make the two threads trade the GIL). The
  writer wakes every ``linger`` seconds (default 2 ms), or at once on ``kick()``/``flush()``,
  and commits whatever has accumulated as one transaction (group commit; each table's rows in
  append order, a record's state updates within the batch folded into its last one, see
  ``schema.batch_statements``) with ``synchronous=NORMAL``: a committed batch survives a crash
  of this process (``kill -9``), it may be lost with the machine's power. Nothing on the
  reaction path waits for it; the tx manager calls ``kick()`` once its reaction's last write
  is done.
- ``await journal.flush()`` (asyncio) and ``journal.commit_now()`` (blocking, for start-up,
  shutdown and tests) return once everything appended before the call is committed *and fsynced*
  (that batch commits with ``synchronous=FULL``): durable against ``kill -9`` and power loss.
  The intent API awaits ``flush()`` after booking (and signing) an intent and before it answers:
  an acknowledged intent is never lost. Concurrent flushes share one commit, and flushes with
  nothing new since an fsynced commit need none.
- So after a crash the file holds every flushed entry, and a prefix of the entries appended after
  the last flush: batches are atomic and in order (an attempt never without its record), but the
  last milliseconds of state changes and re-signed attempts may be missing. ``recovery`` closes
  that hole by matching ``(sender, nonce)`` against chain state.
- If a write fails (disk full, I/O error) the journal turns unhealthy: ``error`` is set, every
  pending and later ``flush``/``commit_now`` raises :class:`JournalError`; stop acknowledging.

``load(path)`` reads the records back (booking order, attempts with their raw bytes, last states);
``open_book(path)`` is load + a fresh writer + ``NonceBook.restore``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from nonce.book import NonceBook
from nonce.entries import Entry
from nonce.errors import JournalClosed, JournalError
from nonce.schema import (
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    SQLITE,
    batch_statements,
    read_bundles,
    read_records,
)
from nonce.state import TxRecord

logger = logging.getLogger(__name__)

MAX_BATCH = 4096
"""Entries per transaction at most: bounds the writer's time holding the GIL per batch."""

LINGER = 0.002
"""Seconds the writer sleeps between commits when nobody kicks it: the crash-loss window."""


@dataclass(slots=True)
class _Barrier:
    """A flush request: resolved after the batch holding it is committed and fsynced."""

    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[None] | None
    event: threading.Event | None
    error: BaseException | None = None


class _Close:
    pass


_CLOSE = _Close()


class ThreadedJournal:
    """The writer-thread machinery every backend shares (see the module docstring): the caller's
    side (``append``, ``kick``, ``flush``, ``commit_now``, ``close``) and the group-commit loop.
    A backend implements ``_write(entries, durable=...)`` (one transaction) and ``_disconnect``;
    its constructor opens the connection, then calls :meth:`_start`."""

    where: str = "journal"

    def __init__(self, *, linger: float = LINGER, max_batch: int = MAX_BATCH) -> None:
        self._linger = linger
        self._max_batch = max_batch
        self._pending: deque[Entry | _Barrier | _Close] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._error: JournalError | None = None
        self.committed_batches = 0
        self._synced = False  # the last commit was fsynced: nothing written since awaits one
        # Bound methods, looked up once: append is on the reorg hot path.
        self._push = self._pending.append

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nonce-journal", daemon=True)
        self._thread.start()

    def _write(self, entries: list[Entry], *, durable: bool) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    # -- the caller's side ---------------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        """Queue ``entry`` for the writer: O(1), never blocks, never waits on disk or wakes it."""
        if self._closed:
            raise JournalClosed()
        self._push(entry)

    def kick(self) -> None:
        """Let the writer commit now rather than at its next ``linger`` tick (after a burst)."""
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything appended so far is committed and fsynced (not on the hot path)."""
        await self.begin_flush()

    def begin_flush(self) -> asyncio.Future[None]:
        """:meth:`flush` started now: the writer is woken before this returns, and the future
        settles once everything appended so far is committed and fsynced. The intent path
        starts the fsync with it and asks the signer meanwhile (``TxManager.complete``)."""
        if self._closed:
            raise JournalClosed()
        loop = asyncio.get_running_loop()
        barrier = _Barrier(loop, loop.create_future(), None)
        self._push(barrier)
        self._wake.set()
        assert barrier.future is not None
        return barrier.future

    def commit_now(self, timeout: float | None = None) -> None:
        """Blocking ``flush``: for start-up, shutdown and tests, never from the event loop."""
        if self._closed:
            raise JournalClosed()
        barrier = _Barrier(None, None, threading.Event())
        self._push(barrier)
        self._wake.set()
        assert barrier.event is not None
        if not barrier.event.wait(timeout):
            raise JournalError(f"journal commit did not finish within {timeout} s")
        if barrier.error is not None:
            raise barrier.error

    @property
    def error(self) -> JournalError | None:
        """Why the journal stopped writing, ``None`` while healthy."""
        return self._error

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._push(_CLOSE)
        self._wake.set()
        self._thread.join()
        self._disconnect()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        pending, wake, linger = self._pending, self._wake, self._linger
        popleft = pending.popleft
        while True:
            if not pending:
                wake.wait(linger)  # sleeps without the GIL
            wake.clear()
            batch: list[Entry | _Barrier | _Close] = []
            while pending and len(batch) < self._max_batch:
                batch.append(popleft())
            if not batch:
                continue
            entries: list[Entry] = []
            barriers: list[_Barrier] = []
            closing = False
            for item in batch:
                if isinstance(item, _Barrier):
                    barriers.append(item)
                elif isinstance(item, _Close):
                    closing = True
                else:
                    entries.append(item)
            if self._error is None and (entries or barriers):
                try:
                    self._write(entries, durable=bool(barriers))
                except Exception as exc:  # any failure here breaks durability: surface it
                    self._error = JournalError(f"journal write failed: {exc}")
                    self._error.__cause__ = exc
                    logger.exception(
                        "journal %s: write failed, journal is now unhealthy", self.where
                    )
            if barriers:
                _resolve(barriers, self._error)
            if closing:
                return


class SqliteJournal(ThreadedJournal):
    """``Journal`` on a SQLite file in WAL mode, with a writer thread (see the module docstring)."""

    def __init__(
        self, path: str | Path, *, linger: float = LINGER, max_batch: int = MAX_BATCH
    ) -> None:
        super().__init__(linger=linger, max_batch=max_batch)
        self.path = Path(path)
        self.where = str(self.path)
        try:
            self._conn = _connect(self.path)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        self._full = False
        self._start()

    def _disconnect(self) -> None:
        self._conn.close()

    def _write(self, entries: list[Entry], *, durable: bool) -> None:
        conn = self._conn
        if not entries and self._synced:
            return  # flushes with nothing new since an fsynced commit: already durable
        groups = batch_statements(entries)
        if durable != self._full:
            conn.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
            self._full = durable
        conn.execute("BEGIN")
        try:
            for sql, rows in groups:
                conn.executemany(sql, rows)
            if not entries:  # a flush with nothing new: commit a write so the WAL gets fsynced
                conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'flushes'")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._synced = durable
        self.committed_batches += 1


def _resolve(barriers: list[_Barrier], error: JournalError | None) -> None:
    # One call_soon_threadsafe per loop for the whole batch: each call writes the loop's
    # self-pipe (a syscall here, a wake-up there), and a batch often holds dozens of flushes.
    waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for barrier in barriers:
        barrier.error = error
        if barrier.event is not None:
            barrier.event.set()
            continue
        loop, future = barrier.loop, barrier.future
        assert loop is not None and future is not None
        futures = waiting.get(loop)
        if futures is None:
            waiting[loop] = [future]
        else:
            futures.append(future)
    for loop, futures in waiting.items():
        try:
            loop.call_soon_threadsafe(_settle, futures, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _settle(futures: list[asyncio.Future[None]], error: JournalError | None) -> None:
    for future in futures:
        if future.done():  # the flushing task was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        conn.close()
        raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL unavailable")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('flushes', '0')")
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
    while version in MIGRATIONS:  # a journal written by earlier code: bring it up to date
        version, step = MIGRATIONS[version]
        conn.executescript(
            f"BEGIN; {SQLITE.migration(step)}"
            f" UPDATE meta SET value = '{version}' WHERE key = 'schema'; COMMIT;"
        )
        logger.info("journal %s: migrated to schema %s", path, version)
    if version != SCHEMA_VERSION:
        conn.close()
        raise sqlite3.DatabaseError(f"journal schema {version}, this code reads {SCHEMA_VERSION}")
    return conn


def load(path: str | Path, *, settled_kept: int | None = None) -> list[TxRecord]:
    """The records of the journal at ``path`` (booking order, attempts and last states).

    Every record that is not settled is loaded; of the settled (finalized) ones only the last
    ``settled_kept`` when it is given (the rest stay on disk: ``lookup`` finds them). A missing
    file is an empty journal. Opening the file replays its WAL, so this is also the read after a
    ``kill -9``.
    """
    where = ""
    params: tuple[object, ...] = ()
    if settled_kept is not None:
        where = (
            "settled = 0 OR rowid IN (SELECT rowid FROM records WHERE settled = 1"
            " ORDER BY rowid DESC LIMIT ?)"
        )
        params = (settled_kept,)
    return _query(Path(path), where, params)


def lookup(
    path: str | Path, *, intent_id: str | None = None, key: str | None = None
) -> TxRecord | None:
    """One record from the journal on disk, by intent id or idempotency key (``None``: none)."""
    if intent_id is not None:
        found = _query(Path(path), "id = ?", (intent_id,))
    elif key is not None:
        found = _query(Path(path), "idem_key = ?", (key,))
    else:
        raise ValueError("lookup needs an intent id or a key")
    return found[0] if found else None


def _query(path: Path, where: str, params: tuple[object, ...]) -> list[TxRecord]:
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            has_schema = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'"
            ).fetchone()
            return read_records(conn, where, params) if has_schema else []
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read journal {path}: {exc}") from exc


def load_bundles(path: str | Path) -> list[tuple[str, bytes]]:
    """The journal's bundles (``broadcaster_sendBundle``) as ``(id, spec)``, oldest first."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            has_table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'bundles'"
            ).fetchone()
            return read_bundles(conn) if has_table else []
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read journal {path}: {exc}") from exc


def open_book(
    path: str | Path, *, settled_kept: int | None = None
) -> tuple[NonceBook, SqliteJournal]:
    """Reload the book from ``path`` and journal its further changes there (start-up).

    ``settled_kept`` bounds how many finalized records come back into memory (see ``load``).
    """
    journal = SqliteJournal(path)  # first: it migrates a journal written by earlier code
    try:
        records = load(path, settled_kept=settled_kept)
    except BaseException:
        journal.close()
        raise
    return NonceBook.restore(records, journal), journal


__all__ = [
    "LINGER",
    "MAX_BATCH",
    "SqliteJournal",
    "ThreadedJournal",
    "load",
    "load_bundles",
    "open_book",
]

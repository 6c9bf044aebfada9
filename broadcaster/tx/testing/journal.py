"""A real SQLite journal whose crash-loss window is on the simulation's clock.

``nonce.journal.SqliteJournal`` commits from a writer thread every ``linger`` of *real* time, so
what a ``kill -9`` loses would depend on the machine's speed. :class:`SimJournal` keeps the
book's entries in memory (the writer's queue) and hands them to a ``SqliteJournal`` only at a
writer tick (``linger`` virtual seconds after the first entry queued since the last commit; no
tick with ``linger=None``) or on ``flush()`` (the manager's durability barrier, ``commit_now``:
committed and fsynced). :meth:`crash` is
``kill -9``: the queue is lost, optionally after a prefix of it made it to disk; the file holds
exactly what a crash at that instant would leave. :func:`reopen` is the restart: ``load`` the
file and ``NonceBook.restore`` it, as ``nonce.journal.open_book`` does, journaling further
changes through a fresh :class:`SimJournal`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from nonce import NonceBook, SqliteJournal, load
from nonce.entries import Entry
from nonce.errors import JournalClosed

__all__ = ["SimJournal", "reopen"]


class SimJournal:
    """Book ``Journal`` and manager ``Durable`` in one (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        loop: asyncio.AbstractEventLoop,
        linger: float | None = 0.002,
    ) -> None:
        self.path = path
        self.loop = loop
        self.linger = linger
        self._tick: asyncio.TimerHandle | None = None
        self._db = SqliteJournal(path, linger=3600.0)
        self._queue: list[Entry] = []
        self.dead = False
        self.flushes = 0
        self.flushes_started = 0
        self.held: asyncio.Event | None = None
        self.appended = 0

    # -- the book's Journal ----------------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        if self.dead:
            return  # a killed process writes nothing
        self.appended += 1
        self._queue.append(entry)
        if self._tick is None and self.linger is not None:
            self._tick = self.loop.call_later(self.linger, self._on_tick)

    def _on_tick(self) -> None:
        self._tick = None
        self.commit()

    # -- the manager's Durable -------------------------------------------------------------------

    async def flush(self) -> None:
        if self.dead:
            raise JournalClosed()  # the process is gone
        self.flushes_started += 1
        while self.held is not None:  # a slow disk: the fsync has not finished yet
            await self.held.wait()
            if self.dead:
                raise JournalClosed()  # killed while the fsync was under way
        self.commit()
        self.flushes += 1

    def begin_flush(self) -> asyncio.Future[None]:
        """``nonce.journal.ThreadedJournal.begin_flush``: the flush started now."""
        return asyncio.ensure_future(self.flush(), loop=self.loop)

    def hold(self) -> None:
        """Every flush from now waits (an fsync that takes its time) until :meth:`release`."""
        if self.held is None:
            self.held = asyncio.Event()

    def release(self) -> None:
        held, self.held = self.held, None
        if held is not None:
            held.set()

    # -- the writer ------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue)

    def commit(self, count: int | None = None) -> None:
        """Write the first ``count`` queued entries (all by default) and wait for the fsync."""
        if self.dead:
            return
        take = len(self._queue) if count is None else min(count, len(self._queue))
        if take:
            batch, self._queue = self._queue[:take], self._queue[take:]
            for entry in batch:
                self._db.append(entry)
        self._db.commit_now(timeout=30)

    def crash(self, keep: int = 0) -> int:
        """``kill -9``: the first ``keep`` queued entries reach the disk, the rest are lost.
        Returns how many were lost."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self.commit(keep)
        lost = len(self._queue)
        self._queue.clear()
        self.dead = True
        self._db.close()
        self.release()  # a flush under way never completes: it raises JournalClosed
        return lost

    def close(self) -> None:
        """Orderly shutdown: everything queued is committed."""
        if not self.dead:
            if self._tick is not None:
                self._tick.cancel()
                self._tick = None
            self.commit()
            self.dead = True
            self._db.close()


def reopen(
    path: Path, *, loop: asyncio.AbstractEventLoop, linger: float | None = 0.002
) -> tuple[NonceBook, SimJournal]:
    """Start-up after a crash or a shutdown: the book as the file has it, and its journal."""
    records = load(path)
    journal = SimJournal(path, loop=loop, linger=linger)
    return NonceBook.restore(records, journal), journal

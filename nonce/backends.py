"""One entry point for both journal backends: a SQLite path or a ``postgresql://`` URL.

``[journal] path`` (SQLite, the embedded default) or ``[journal] url`` (PostgreSQL, for
active/standby): the same contract, the same schema (:data:`nonce.schema.TABLES`), the same
recovery. Callers pass the target and never look at which one it is.
"""

from __future__ import annotations

from pathlib import Path

from nonce import journal as sqlite_journal
from nonce.book import NonceBook
from nonce.journal import ThreadedJournal
from nonce.state import TxRecord

Target = str | Path

__all__ = ["Target", "is_postgres", "load", "load_bundles", "lookup", "open_book", "open_journal"]


def is_postgres(target: Target) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_journal(target: Target, *, epoch: int | None = None) -> ThreadedJournal:
    """A writer on ``target`` (``epoch``: fence every write on it, PostgreSQL only)."""
    if is_postgres(target):
        from nonce.pg_journal import PgJournal

        assert isinstance(target, str)
        return PgJournal(target, epoch=epoch)
    if epoch is not None:
        raise ValueError("a lease epoch needs a PostgreSQL journal")
    return sqlite_journal.SqliteJournal(target)


def open_book(
    target: Target, *, epoch: int | None = None, settled_kept: int | None = None
) -> tuple[NonceBook, ThreadedJournal]:
    if is_postgres(target):
        from nonce import pg_journal

        assert isinstance(target, str)
        return pg_journal.open_book(target, epoch=epoch, settled_kept=settled_kept)
    if epoch is not None:
        raise ValueError("a lease epoch needs a PostgreSQL journal")
    return sqlite_journal.open_book(target, settled_kept=settled_kept)


def load(target: Target, *, settled_kept: int | None = None) -> list[TxRecord]:
    if is_postgres(target):
        from nonce import pg_journal

        assert isinstance(target, str)
        return pg_journal.load(target, settled_kept=settled_kept)
    return sqlite_journal.load(target, settled_kept=settled_kept)


def load_bundles(target: Target) -> list[tuple[str, bytes]]:
    """The journaled ``broadcaster_sendBundle`` bundles, ``(id, spec)``, oldest first."""
    if is_postgres(target):
        from nonce import pg_journal

        assert isinstance(target, str)
        return pg_journal.load_bundles(target)
    return sqlite_journal.load_bundles(target)


def lookup(
    target: Target, *, intent_id: str | None = None, key: str | None = None
) -> TxRecord | None:
    if is_postgres(target):
        from nonce import pg_journal

        assert isinstance(target, str)
        return pg_journal.lookup(target, intent_id=intent_id, key=key)
    return sqlite_journal.lookup(target, intent_id=intent_id, key=key)

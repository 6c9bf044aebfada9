"""The leader lease in PostgreSQL (DESIGN.md §9): one row of ``ha_lease`` (``nonce.schema.LEASE``).

- **Acquire** (a standby, every ``lease_seconds / 4``): in one transaction, read the row ``FOR
  UPDATE``; no row: insert ours at epoch 1; a row whose ``expires_at`` is past (the database's
  clock) *and* that this standby has seen unchanged for a whole ``lease_seconds`` on its own
  monotonic clock: take it, epoch + 1; otherwise it is held (by whom, renewed how long ago: the
  standby says so). The pure decision is :func:`decide`. The second condition is what makes a
  step of the database's clock (NTP, a managed database failing over to a host whose clock is
  ahead) harmless: the row would look expired at once while the leader's fence, on *its*
  monotonic clock, still lets it send for up to ``0.9 x lease_seconds``. A released row
  (``expires_at`` before ``renewed_at``: the holder gave it up after lapsing its fence) is taken
  at once.
- **Renew** (the leader, every ``lease_seconds / 4``): ``expires_at = now + lease_seconds`` only
  where holder, epoch are ours and the row has not expired yet: an expired epoch never comes back,
  so a standby that saw it expired may act on it.
- Every time is the database's (``clock_timestamp()``): instances' clocks never compare. The
  leader's own deadline (:class:`broadcaster.ha.fence.Fence`) is on its monotonic clock, counted
  from *before* it sent the renewal, so it ends before the database's expiry.

A takeover updates the row, so it waits for a journal batch of the old leader in flight (that
batch reads the row ``FOR KEY SHARE``, ``nonce.pg_journal``) and every later batch of the old epoch
fails: fencing on the database side.

:class:`PgLeaseStore` is the blocking adapter (its own connection, re-opened after a failure);
the service calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from nonce.pg_journal import connect, redact

__all__ = ["Grant", "Holder", "LeaseRow", "PgLeaseStore", "decide"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LeaseRow:
    holder: str
    epoch: int
    expires_at: float
    renewed_at: float


@dataclass(frozen=True, slots=True)
class Grant:
    """The lease is ours at ``epoch``; ``previous``: whom we took it from (``None``: first)."""

    epoch: int
    previous: str | None


@dataclass(frozen=True, slots=True)
class Holder:
    """Someone holds the lease; ``age``: seconds since its last renewal (database clock);
    ``ready_in``: at the earliest, seconds until it may be taken (expired on the database's
    clock and seen unchanged for a lease on ours): the standby polls again then, not later."""

    holder: str
    epoch: int
    age: float
    ready_in: float = math.inf


def decide(
    row: LeaseRow | None,
    now: float,
    *,
    seen_for: float = math.inf,
    lease_seconds: float = 0.0,
) -> Literal["insert", "take", "held"]:
    """What a standby does about the lease row it read at database time ``now``, having seen
    this very row (holder, epoch, renewal) for ``seen_for`` seconds of its monotonic clock.
    The wait is the longer of our ``lease_seconds`` and the holder's (the row's
    ``expires_at - renewed_at``): instances configured differently never shorten a fence."""
    if row is None:
        return "insert"
    if row.expires_at < row.renewed_at:
        return "take"  # released by its holder
    if row.expires_at < now and seen_for >= max(lease_seconds, row.expires_at - row.renewed_at):
        return "take"
    return "held"


LOCK_TIMEOUT_MS = 500
_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::float8"


class PgLeaseStore:
    """The lease on a PostgreSQL database (blocking; one connection, reconnected on failure)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        # The row version (holder, epoch, renewed_at) last read, and when (monotonic) it was
        # first read: a lease is taken only once it has stood still for lease_seconds here.
        self._seen: tuple[str, int, float] | None = None
        self._seen_at = 0.0

    def _seen_for(self, row: LeaseRow) -> float:
        """Seconds (monotonic, read after the row) this same row version has been seen."""
        now = time.monotonic()
        version = (row.holder, row.epoch, row.renewed_at)
        if version != self._seen:
            self._seen, self._seen_at = version, now
        return now - self._seen_at

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # A takeover waits for the old leader's journal batch in flight (its FOR KEY SHARE
            # lock), never longer than this: then the poll fails and is tried again.
            self._conn = connect(self.url, settings={"lock_timeout": str(LOCK_TIMEOUT_MS)})
        return self._conn

    def _reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def try_acquire(self, instance: str, lease_seconds: float) -> Grant | Holder:
        """Take the lease if it is free or expired; else who holds it. Raises
        ``psycopg.Error`` when the database cannot be reached (the caller retries)."""
        try:
            conn = self._connection()
            with conn.transaction():
                found = conn.execute(
                    "SELECT holder, epoch, expires_at, renewed_at, " + _NOW
                    + " FROM ha_lease WHERE name = 'leader' FOR UPDATE"
                ).fetchone()  # fmt: skip
                if found is None:
                    now = conn.execute("SELECT " + _NOW).fetchone()[0]  # type: ignore[index]
                    row = None
                else:
                    row, now = LeaseRow(*found[:4]), found[4]
                seen_for = self._seen_for(row) if row is not None else 0.0
                action = decide(row, now, seen_for=seen_for, lease_seconds=lease_seconds)
                if action == "held":
                    assert row is not None
                    lease = max(lease_seconds, row.expires_at - row.renewed_at)
                    ready_in = max(0.0, lease - seen_for, row.expires_at - now)
                    return Holder(row.holder, row.epoch, max(0.0, now - row.renewed_at), ready_in)
                if action == "insert":
                    inserted = conn.execute(
                        "INSERT INTO ha_lease (name, holder, epoch, expires_at, renewed_at)"
                        f" VALUES ('leader', %s, 1, {_NOW} + %s, {_NOW})"
                        " ON CONFLICT DO NOTHING RETURNING epoch",
                        (instance, lease_seconds),
                    ).fetchone()
                    if inserted is None:  # another instance inserted first
                        return Holder("?", 0, 0.0)
                    return Grant(1, None)
                assert row is not None
                conn.execute(
                    f"UPDATE ha_lease SET holder = %s, epoch = epoch + 1,"
                    f" expires_at = {_NOW} + %s, renewed_at = {_NOW} WHERE name = 'leader'",
                    (instance, lease_seconds),
                )
                return Grant(row.epoch + 1, row.holder)
        except psycopg.Error:
            self._reset()
            raise

    def renew(self, instance: str, epoch: int, lease_seconds: float) -> bool:
        """Extend our lease; ``False``: it is not ours any more (expired, or taken)."""
        try:
            conn = self._connection()
            row = conn.execute(
                f"UPDATE ha_lease SET expires_at = {_NOW} + %s, renewed_at = {_NOW}"
                f" WHERE name = 'leader' AND holder = %s AND epoch = %s AND expires_at >= {_NOW}"
                " RETURNING epoch",
                (lease_seconds, instance, epoch),
            ).fetchone()
            return row is not None
        except psycopg.Error:
            self._reset()
            raise

    def release(self, instance: str, epoch: int) -> None:
        """Give the lease up at once (a clean shutdown): a standby need not wait it out."""
        try:
            self._connection().execute(
                f"UPDATE ha_lease SET expires_at = {_NOW} - 1"
                " WHERE name = 'leader' AND holder = %s AND epoch = %s",
                (instance, epoch),
            )
        except psycopg.Error as exc:
            log.warning("lease release on %s failed: %s", redact(self.url), exc)
            self._reset()

    def close(self) -> None:
        self._reset()

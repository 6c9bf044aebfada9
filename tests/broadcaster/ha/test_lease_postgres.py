"""The lease and the journal's fencing on a real PostgreSQL (tests/postgres.py).

Leases here are short (0.3 s) and expiry is waited for by polling the database's own verdict
(``try_acquire`` until it grants), never by sleeping a guessed time.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from broadcaster.ha.lease import Grant, Holder, PgLeaseStore
from nonce.errors import JournalError, StaleEpoch
from nonce.pg_journal import _FENCE, PgJournal, load, open_book
from tests.nonce.factories import ALICE, intent
from tests.postgres import Postgres

pytestmark = pytest.mark.e2e

LEASE = 0.3


def take_over(store: PgLeaseStore, instance: str) -> Grant:
    """Poll until the lease is ours (it expires on the database's clock)."""
    done = threading.Event()
    while not done.wait(0.02):
        answer = store.try_acquire(instance, LEASE)
        if isinstance(answer, Grant):
            return answer
    raise AssertionError("unreachable")


def test_one_leader_a_standby_sees_it_and_takes_over_only_after_expiry(postgres: Postgres) -> None:
    url = postgres.new_database()
    a, b = PgLeaseStore(url), PgLeaseStore(url)
    open_book(url)[1].close()  # the schema
    first = a.try_acquire("a", 60.0)
    assert first == Grant(1, None)
    held = b.try_acquire("b", 60.0)
    assert isinstance(held, Holder) and (held.holder, held.epoch) == ("a", 1)
    assert a.renew("a", 1, LEASE)  # shorten it: expires in 0.3 s
    grant = take_over(b, "b")
    assert grant == Grant(2, "a")
    assert not a.renew("a", 1, LEASE)  # an expired epoch never comes back
    seen = a.try_acquire("a", 60.0)
    assert isinstance(seen, Holder) and (seen.holder, seen.epoch) == ("b", 2)
    a.close()
    b.close()


def test_a_stale_epoch_cannot_write_the_journal(postgres: Postgres) -> None:
    url = postgres.new_database()
    store = PgLeaseStore(url)
    open_book(url)[1].close()
    assert store.try_acquire("a", LEASE) == Grant(1, None)
    book, journal = open_book(url, epoch=1)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    book.accept(intent(id="by-a"), now=1.0)
    journal.commit_now(timeout=10)  # epoch 1 is the lease's: written
    assert isinstance(journal, PgJournal)
    told: list[StaleEpoch] = []
    journal.on_stale = told.append  # the service lapses its fence there

    other = PgLeaseStore(url)
    assert take_over(other, "b").epoch == 2
    book.accept(intent(id="late-a"), now=2.0)
    with pytest.raises(JournalError) as caught:
        journal.commit_now(timeout=10)
    assert isinstance(caught.value.__cause__, StaleEpoch)
    assert [(t.epoch, t.current) for t in told] == [(1, 2)]
    assert journal.error is not None
    journal.close()
    with pytest.raises(JournalError):  # a stale epoch cannot even open the journal
        open_book(url, epoch=1)

    book_b, journal_b = open_book(url, epoch=2)
    assert [r.intent.id for r in book_b.all_records()] == ["by-a"]
    book_b.accept(intent(id="by-b"), now=3.0)
    journal_b.commit_now(timeout=10)
    journal_b.close()
    assert [r.intent.id for r in load(url)] == ["by-a", "by-b"]
    store.close()
    other.close()


def test_the_journal_rides_out_a_database_restart(postgres: Postgres) -> None:
    url = postgres.new_database()
    book, journal = open_book(url)
    assert isinstance(journal, PgJournal)
    book.resync(ALICE, chain_latest=0, chain_pending=0, now=0.0)
    book.accept(intent(id="before"), now=1.0)
    journal.commit_now(timeout=10)
    postgres.restart()  # every connection is cut
    book.accept(intent(id="after"), now=2.0)
    journal.commit_now(timeout=60)  # reconnects and writes the batch again
    assert journal.reconnects >= 1 and journal.error is None
    journal.close()
    assert [r.intent.id for r in load(url)] == ["before", "after"]


def test_a_database_clock_jump_does_not_hand_the_lease_over_while_the_leader_may_still_send(
    postgres: Postgres,
) -> None:
    """The database's clock steps forward (NTP, a managed database's failover to a host whose
    clock is ahead): the row looks expired at once, but the leader's fence (its own monotonic
    clock, ``0.9 x lease_seconds`` from the renewal) still lets it sign and send. A standby
    must not take over before a whole lease has passed on its own clock with the row unchanged."""
    url = postgres.new_database()
    a, b = PgLeaseStore(url), PgLeaseStore(url)
    open_book(url)[1].close()
    assert a.try_acquire("a", 60.0) == Grant(1, None)  # a's fence: valid for 54 s from here
    jump = psycopg.connect(url, autocommit=True)
    jump.execute(  # as if the clock stepped 120 s ahead
        "UPDATE ha_lease SET expires_at = expires_at - 120, renewed_at = renewed_at - 120"
    )
    jump.close()
    for _ in range(5):
        held = b.try_acquire("b", 60.0)
        assert isinstance(held, Holder) and (held.holder, held.epoch) == ("a", 1)
        assert held.ready_in > 30  # a whole lease on b's clock from when b first saw the row
    assert not a.renew("a", 1, 60.0)  # the leader finds out at its next renewal, and exits
    a.close()
    b.close()


def test_a_released_lease_is_taken_at_once(postgres: Postgres) -> None:
    """A clean stop gives the lease up (its fence lapsed first): no need to wait it out."""
    url = postgres.new_database()
    a, b = PgLeaseStore(url), PgLeaseStore(url)
    open_book(url)[1].close()
    assert a.try_acquire("a", 60.0) == Grant(1, None)
    assert isinstance(b.try_acquire("b", 60.0), Holder)
    a.release("a", 1)
    assert b.try_acquire("b", 60.0) == Grant(2, "a")
    a.close()
    b.close()


def test_a_takeover_waits_for_a_fenced_batch_in_flight_and_then_sees_it(postgres: Postgres) -> None:
    """The old leader's batch read the lease FOR SHARE (its fence) and is still writing: the
    standby's takeover cannot pass it (the poll fails after LOCK_TIMEOUT_MS and is retried), and
    what that batch committed is in the journal the new leader reloads."""
    url = postgres.new_database()
    open_book(url)[1].close()
    a, b = PgLeaseStore(url), PgLeaseStore(url)
    assert a.try_acquire("a", LEASE) == Grant(1, None)
    in_flight = psycopg.connect(url)  # a transaction, as the writer's batch
    assert in_flight.execute(_FENCE).fetchone() == (1,)
    # The leader's own renewal does not wait for its journal (a slow batch would fail it)...
    assert a.renew("a", 1, LEASE)
    # ...a takeover does.
    with pytest.raises(psycopg.errors.LockNotAvailable):
        b.try_acquire("b", LEASE)
    in_flight.execute("INSERT INTO meta (key, value) VALUES ('batch-of-a', 'committed')")
    in_flight.commit()
    in_flight.close()
    assert take_over(b, "b") == Grant(2, "a")
    with psycopg.connect(url) as reader:
        assert reader.execute("SELECT value FROM meta WHERE key = 'batch-of-a'").fetchone() == (
            "committed",
        )
    a.close()
    b.close()


def test_two_standbys_racing_for_a_lapsed_lease_make_one_leader(postgres: Postgres) -> None:
    """Two standbys poll the same lapsed lease at once (their ``FOR UPDATE`` reads serialize):
    exactly one takes it, at the next epoch, and the other then sees that one as the holder for
    as long as it renews, never a second grant at any epoch."""
    url = postgres.new_database()
    open_book(url)[1].close()
    a = PgLeaseStore(url)
    assert a.try_acquire("a", LEASE) == Grant(1, None)  # a leads, then stops renewing
    answers: dict[str, list[Grant | Holder]] = {"b": [], "c": []}
    renewed: dict[str, bool] = {}
    won = threading.Event()
    start = threading.Barrier(2)

    def standby(name: str) -> None:
        store = PgLeaseStore(url)
        start.wait()
        after_win = 0
        for _ in range(3000):  # bounded: a minute of polls at most
            if after_win >= 40:  # polls every 20 ms: many leases' worth once someone won
                break
            answer = store.try_acquire(name, LEASE)
            answers[name].append(answer)
            if isinstance(answer, Grant):
                renewed[name] = store.renew(name, answer.epoch, 60.0)  # the winner keeps it
                won.set()
            if won.is_set():
                after_win += 1
            threading.Event().wait(0.02)
        store.close()

    threads = [threading.Thread(target=standby, args=(n,)) for n in answers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    grants = [(n, g) for n, seen in answers.items() for g in seen if isinstance(g, Grant)]
    assert len(grants) == 1, grants
    winner, grant = grants[0]
    assert grant == Grant(2, "a") and renewed == {winner: True}
    loser = "c" if winner == "b" else "b"
    after = [h for h in answers[loser] if isinstance(h, Holder) and h.epoch == 2]
    assert after and all(h.holder == winner for h in after)
    assert not a.renew("a", 1, LEASE)
    a.close()

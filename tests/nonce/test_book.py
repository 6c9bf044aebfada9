"""NonceBook: allocation, lookups, the state machine's bookkeeping, reorgs and the journal."""

from __future__ import annotations

import pytest

from nonce.book import NonceBook
from nonce.entries import AttemptAdded, MemoryJournal, RecordOpened, SlotReleased, StateChanged
from nonce.errors import (
    AttemptMismatch,
    DuplicateIdempotencyKey,
    DuplicateIntent,
    InvalidTransition,
    NonceInUse,
    SenderNotSynced,
    UnknownIntent,
)
from nonce.state import AttemptReason, BlockRef, TxRecord, TxState
from tests.nonce.factories import ALICE, BOB, attempt, intent, synced_book

B1 = BlockRef(10, "0x" + "11" * 32)
B2 = BlockRef(11, "0x" + "22" * 32)
B2_SIBLING = BlockRef(11, "0x" + "99" * 32)


def broadcast(book: NonceBook, record: TxRecord, now: float = 1.0) -> bytes:
    a = attempt(record, at=now)
    book.add_attempt(record, a)
    book.transition(record, TxState.SIGNED, reason="signed", now=now)
    book.transition(record, TxState.BROADCAST, reason="sent", now=now)
    return a.hash


def test_reserve_before_resync_is_refused() -> None:
    with pytest.raises(SenderNotSynced):
        NonceBook().reserve(ALICE)


def test_accept_hands_out_consecutive_nonces_per_sender() -> None:
    book = synced_book(start=5)
    a1, a2, b1 = (
        book.accept(intent(), now=0),
        book.accept(intent(), now=0),
        book.accept(intent(BOB), now=0),
    )
    assert (a1.nonce, a2.nonce, b1.nonce) == (5, 6, 5)
    assert book.get(ALICE, 6) is a2
    assert book.peek_next(ALICE) == 7
    assert a1.state is TxState.PENDING


def test_every_lookup_finds_the_record() -> None:
    book = synced_book()
    record = book.accept(intent(key="k1", id="i1"), now=0)
    h1 = broadcast(book, record)
    bumped = attempt(record, reason=AttemptReason.UNDERPRICED)
    book.add_attempt(record, bumped)
    assert book.by_hash(h1) is record
    assert book.by_hash(bumped.hash) is record
    assert book.by_intent("i1") is record
    assert book.find_intent("nope") is None
    assert book.by_key("k1") is record
    assert book.by_hash(b"\x00" * 32) is None
    with pytest.raises(UnknownIntent):
        book.by_intent("nope")


def test_duplicate_id_and_idempotency_key_are_refused_with_the_earlier_record() -> None:
    book = synced_book()
    first = book.accept(intent(id="x", key="same"), now=0)
    with pytest.raises(DuplicateIntent):
        book.accept(intent(id="x"), now=0)
    with pytest.raises(DuplicateIdempotencyKey) as caught:
        book.accept(intent(key="same"), now=0)
    assert caught.value.record is first
    assert book.peek_next(ALICE) == 1  # the refused intents reserved nothing


def test_an_attempt_must_match_the_nonce_and_carry_a_new_hash() -> None:
    book = synced_book()
    r0, r1 = book.accept(intent(), now=0), book.accept(intent(), now=0)
    a = attempt(r0)
    book.add_attempt(r0, a)
    with pytest.raises(AttemptMismatch):
        book.add_attempt(r1, a)  # nonce 0 attempt on the nonce 1 record
    with pytest.raises(AttemptMismatch):
        book.add_attempt(r0, a)  # same hash twice


def test_forbidden_transitions_raise_and_change_nothing() -> None:
    journal = MemoryJournal()
    book = synced_book(journal)
    record = book.accept(intent(), now=0)
    with pytest.raises(InvalidTransition) as caught:
        book.transition(record, TxState.FINALIZED, reason="x", now=1)
    assert (caught.value.old, caught.value.new) == (TxState.PENDING, TxState.FINALIZED)
    assert record.state is TxState.PENDING
    assert journal.of_type(StateChanged) == []


def test_included_needs_a_block_and_one_of_its_own_hashes() -> None:
    book = synced_book()
    record = book.accept(intent(), now=0)
    broadcast(book, record)
    with pytest.raises(AttemptMismatch):
        book.transition(record, TxState.INCLUDED, reason="x", now=1, block=B1, tx_hash=b"x" * 32)


def test_each_change_is_journaled_in_order() -> None:
    journal = MemoryJournal()
    book = synced_book(journal)
    record = book.accept(intent(id="i"), now=0)
    h = broadcast(book, record, now=1)
    book.mark_included(h, B1, now=2)
    kinds = [type(e).__name__ for e in journal.entries]
    assert kinds == ["RecordOpened", "AttemptAdded", "StateChanged", "StateChanged", "StateChanged"]
    opened = journal.of_type(RecordOpened)[0]
    assert (opened.nonce, opened.intent.id) == (0, "i")
    assert journal.of_type(AttemptAdded)[0].attempt.hash == h
    last = journal.of_type(StateChanged)[-1]
    assert (last.old, last.new, last.block, last.included_hash) == (
        TxState.BROADCAST,
        TxState.INCLUDED,
        B1,
        h,
    )


def test_mark_included_ignores_foreign_hashes_and_repeats() -> None:
    journal = MemoryJournal()
    book = synced_book(journal)
    record = book.accept(intent(), now=0)
    h = broadcast(book, record)
    assert book.mark_included(b"\xff" * 32, B1, now=2) is None
    assert book.mark_included(h, B1, now=2) is record
    count = len(journal.entries)
    assert book.mark_included(h, B1, now=3) is record
    assert len(journal.entries) == count
    assert record.block == B1 and record.included_hash == h
    assert book.in_block(B1.hash) == (record,)


def test_a_reorg_returns_the_dropped_records_in_nonce_order_without_block_bodies() -> None:
    book = synced_book()
    records = [book.accept(intent(), now=0) for _ in range(3)] + [book.accept(intent(BOB), now=0)]
    hashes = [broadcast(book, r) for r in records]
    book.mark_included(hashes[2], B2, now=2)
    book.mark_included(hashes[0], B1, now=2)
    book.mark_included(hashes[1], B2, now=2)
    book.mark_included(hashes[3], B1, now=2)
    dropped = book.on_reorg([B2.hash, B1.hash], now=3)
    assert [(r.sender, r.nonce) for r in dropped] == [(ALICE, 0), (ALICE, 1), (ALICE, 2), (BOB, 0)]
    assert all(r.state is TxState.REORGED and r.block is None for r in dropped)
    assert book.in_block(B1.hash) == ()
    assert book.on_reorg([B1.hash], now=4) == []


def test_the_reorg_reaction_resigns_and_the_record_keeps_every_attempt() -> None:
    book = synced_book()
    record = book.accept(intent(), now=0)
    first = broadcast(book, record)
    book.mark_included(first, B1, now=2)
    (dropped,) = book.on_reorg([B1.hash], now=3)
    resigned = attempt(dropped, reason=AttemptReason.REORG, max_fee=40_000_000_000)
    book.add_attempt(dropped, resigned)
    book.transition(dropped, TxState.SIGNED, reason="reorg re-sign", now=3)
    book.transition(dropped, TxState.BROADCAST, reason="sent", now=3)
    assert [a.hash for a in record.attempts] == [first, resigned.hash]
    assert resigned.replaces == first
    # The first bytes won in the new branch after all: the record follows the chain.
    book.mark_included(first, B2_SIBLING, now=4)
    assert record.state is TxState.INCLUDED and record.included_hash == first


def test_pending_counts_follow_the_states() -> None:
    book = synced_book()
    r0, r1 = book.accept(intent(), now=0), book.accept(intent(), now=0)
    assert book.pending_count(ALICE) == 2
    h0 = broadcast(book, r0)
    book.mark_included(h0, B1, now=1)
    assert book.pending_count(ALICE) == 1
    book.on_reorg([B1.hash], now=2)
    assert book.pending_count(ALICE) == 2
    book.transition(r1, TxState.CANCELLED, reason="user", now=2)
    assert book.pending_counts() == {ALICE: 1, BOB: 0}


def test_finalize_settles_and_forgets_the_block() -> None:
    book = synced_book()
    record = book.accept(intent(), now=0)
    h = broadcast(book, record)
    book.mark_included(h, B1, now=1)
    assert book.finalize(B1.hash, now=2) == [record]
    assert record.state is TxState.FINALIZED and record.settled
    assert book.in_block(B1.hash) == ()
    assert book.on_reorg([B1.hash], now=3) == []
    assert book.mark_included(h, B2, now=4) is record and record.block == B1


def test_an_expired_intent_carries_a_noop_that_is_tracked_like_any_transaction() -> None:
    book = synced_book()
    record = book.accept(intent(valid_until_block=10), now=0)
    h = broadcast(book, record)
    book.mark_included(h, B1, now=1)
    (dropped,) = book.on_reorg([B1.hash], now=2)
    book.transition(dropped, TxState.EXPIRED, reason="validUntilBlock 10 passed", now=2)
    noop = attempt(dropped, reason=AttemptReason.EXPIRED_REPLACEMENT)
    book.add_attempt(dropped, noop)
    assert record.covers_nonce and record.has_noop
    book.mark_included(noop.hash, B2, now=3)
    assert record.state is TxState.EXPIRED and record.block == B2  # status stays, slot settles
    (again,) = book.on_reorg([B2.hash], now=4)
    assert again is record and record.state is TxState.EXPIRED and record.block is None
    # The original bytes were mined instead of the noop: the chain is the truth.
    book.mark_included(h, B2_SIBLING, now=5)
    assert record.state is TxState.INCLUDED


def test_explicit_nonce_books_bytes_signed_elsewhere_and_refuses_an_occupied_slot() -> None:
    book = synced_book()
    record = book.accept(intent(), now=0, nonce=3)
    assert record.nonce == 3 and book.peek_next(ALICE) == 4
    with pytest.raises(NonceInUse):
        book.accept(intent(), now=0, nonce=3)
    assert book.gaps(ALICE, chain_latest=0) == [0, 1, 2]


def test_resync_never_hands_out_mined_or_foreign_nonces() -> None:
    book = synced_book()
    assert book.resync(ALICE, chain_latest=4, chain_pending=6, now=0).next == 6
    assert book.accept(intent(), now=0).nonce == 6


def test_a_reorg_does_not_move_next_below_nonces_we_still_hold() -> None:
    book = synced_book()
    for _ in range(3):
        r = book.accept(intent(), now=0)
        book.mark_included(broadcast(book, r), B1, now=1)
    book.on_reorg([B1.hash], now=2)
    result = book.resync(ALICE, chain_latest=0, chain_pending=0, now=2)
    assert (result.old_next, result.next, result.released, result.gaps) == (3, 3, (), ())


def test_resync_moves_next_back_over_top_nonces_never_signed() -> None:
    journal = MemoryJournal()
    book = synced_book(journal)
    signed = book.accept(intent(), now=0)
    broadcast(book, signed)
    unsigned = [book.accept(intent(), now=0) for _ in range(2)]
    for r in unsigned:
        book.transition(r, TxState.FAILED, reason="policy_denied", now=1)
    book.reserve(ALICE)  # reserved, never booked
    result = book.resync(ALICE, chain_latest=0, chain_pending=1, now=2)
    assert (result.old_next, result.next, result.released) == (4, 1, (1, 2))
    assert all(r.released for r in unsigned)
    assert [e.intent_id for e in journal.of_type(SlotReleased)] == [r.intent.id for r in unsigned]
    reused = book.accept(intent(), now=3)
    assert reused.nonce == 1 and book.get(ALICE, 1) is reused
    assert book.find_intent(unsigned[0].intent.id) is unsigned[0]  # still answerable


def test_gaps_are_given_up_nonces_below_a_held_one_and_get_noop_records() -> None:
    book = synced_book()
    rs = [book.accept(intent(), now=0) for _ in range(4)]
    for r in (rs[0], rs[2], rs[3]):
        broadcast(book, r)
    book.transition(rs[1], TxState.CANCELLED, reason="user", now=1)
    assert book.resync(ALICE, chain_latest=0, chain_pending=0, now=1).gaps == (1,)
    assert book.gaps(ALICE, chain_latest=2) == []  # the chain used nonce 1 already
    from nonce.state import noop_intent

    filler = noop_intent("gap-1", ALICE, chain_id=1, max_fee_per_gas=10, tip=1)
    target = book.open_gap_fill(filler, 1, now=2)
    assert target is rs[1]  # the cancelled record carries the noop, its status stays
    book.add_attempt(target, attempt(target, reason=AttemptReason.GAP_FILL))
    assert book.gaps(ALICE, chain_latest=0) == []
    assert target.state is TxState.CANCELLED


def test_a_gap_without_any_record_gets_a_fresh_noop_record() -> None:
    book = synced_book()
    book.accept(intent(), now=0, nonce=2)
    from nonce.state import noop_intent

    filler = noop_intent("gap-0", ALICE, chain_id=1, max_fee_per_gas=10, tip=1)
    record = book.open_gap_fill(filler, 0, now=1)
    assert record.intent.noop and record.nonce == 0 and book.get(ALICE, 0) is record
    assert book.gaps(ALICE, chain_latest=0) == [1]


def test_restore_rebuilds_every_index_without_journaling() -> None:
    book = synced_book()
    r0 = book.accept(intent(key="k"), now=0)
    h0 = broadcast(book, r0)
    book.mark_included(h0, B1, now=1)
    r1 = book.accept(intent(BOB), now=0)
    journal = MemoryJournal()
    again = NonceBook.restore(list(book.all_records()), journal)
    assert journal.entries == []
    assert again.by_hash(h0) is r0 and again.by_key("k") is r0 and again.get(BOB, 0) is r1
    assert again.in_block(B1.hash) == (r0,)
    assert again.peek_next(ALICE) == 1 and again.pending_counts() == {BOB: 1, ALICE: 0}


def test_evict_forgets_a_settled_record_and_its_key_which_the_journal_still_holds() -> None:
    book = synced_book()
    record = book.accept(intent(key="k"), now=0)
    h = broadcast(book, record)
    book.mark_included(h, B1, now=1)
    book.finalize(B1.hash, now=2)
    book.evict(record)
    assert book.by_hash(h) is None and book.get(ALICE, 0) is None
    assert book.find_intent(record.intent.id) is None
    # Nothing of it stays in memory; the tx manager checks the journal for evicted keys.
    assert book.by_key("k") is None

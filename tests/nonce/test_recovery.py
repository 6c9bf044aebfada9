"""Crash recovery plans: each reloaded (sender, nonce) reconciled against chain facts."""

from __future__ import annotations

from nonce.book import NonceBook
from nonce.recovery import (
    ChainFacts,
    FillGap,
    MarkIncluded,
    NonceTaken,
    ReplaceExpired,
    Resend,
    Sign,
    hashes_to_check,
    plan_recovery,
)
from nonce.state import AttemptReason, BlockRef, TxRecord, TxState
from tests.nonce.factories import ALICE, BOB, attempt, intent, synced_book

B1 = BlockRef(10, "0x" + "11" * 32)
B2 = BlockRef(11, "0x" + "22" * 32)


def sign(book: NonceBook, record: TxRecord, *, broadcast: bool = True) -> bytes:
    a = attempt(record)
    book.add_attempt(record, a)
    book.transition(record, TxState.SIGNED, reason="signed", now=1)
    if broadcast:
        book.transition(record, TxState.BROADCAST, reason="sent", now=1)
    return a.hash


def test_mined_nonces_are_matched_by_any_of_their_hashes() -> None:
    book = synced_book()
    r0 = book.accept(intent(), now=0)
    first = sign(book, r0)
    resigned = attempt(r0, reason=AttemptReason.UNDERPRICED)
    book.add_attempt(r0, resigned)
    records = list(book.all_records())
    assert hashes_to_check(records, {ALICE: 1, BOB: 0}) == [first, resigned.hash]
    plan = plan_recovery(records, ChainFacts({ALICE: 1, BOB: 0}, {first: B1}))
    assert plan == [MarkIncluded(r0, first, B1)]


def test_a_journaled_inclusion_that_still_holds_needs_nothing() -> None:
    book = synced_book()
    r0 = book.accept(intent(), now=0)
    h = sign(book, r0)
    book.mark_included(h, B1, now=2)
    assert plan_recovery(list(book.all_records()), ChainFacts({ALICE: 1, BOB: 0}, {h: B1})) == []
    # ... but a different block (reorged and re-mined while we were down) is reported
    moved = plan_recovery(list(book.all_records()), ChainFacts({ALICE: 1, BOB: 0}, {h: B2}))
    assert moved == [MarkIncluded(r0, h, B2)]


def test_pending_nonces_resend_identical_bytes_in_nonce_order() -> None:
    book = synced_book()
    rs = [book.accept(intent(), now=0) for _ in range(3)]
    b0 = book.accept(intent(BOB), now=0)
    for r in (*rs, b0):
        sign(book, r)
    bumped = attempt(rs[1], reason=AttemptReason.UNDERPRICED)
    book.add_attempt(rs[1], bumped)
    plan = plan_recovery(list(book.all_records()), ChainFacts({ALICE: 0, BOB: 0}, {}))
    assert plan == [
        Resend(rs[0], rs[0].attempts[0], was_included=False),
        Resend(rs[1], bumped, was_included=False),  # the latest attempt, byte for byte
        Resend(rs[2], rs[2].attempts[0], was_included=False),
        Resend(b0, b0.attempts[0], was_included=False),
    ]


def test_an_inclusion_reorged_out_while_down_is_resent_as_reorged() -> None:
    book = synced_book()
    r0 = book.accept(intent(), now=0)
    h = sign(book, r0)
    book.mark_included(h, B1, now=2)
    plan = plan_recovery(list(book.all_records()), ChainFacts({ALICE: 0, BOB: 0}, {}))
    assert plan == [Resend(r0, r0.attempts[0], was_included=True)]


def test_acknowledged_but_never_signed_is_signed_or_replaced_when_expired() -> None:
    book = synced_book()
    fresh = book.accept(intent(valid_until_block=100), now=0)
    stale = book.accept(intent(valid_until_block=50), now=0)
    signed_stale = book.accept(intent(valid_until_block=50), now=0)
    sign(book, signed_stale)
    facts = ChainFacts({ALICE: 0, BOB: 0}, {}, head_number=60)
    assert plan_recovery(list(book.all_records()), facts) == [
        Sign(fresh),
        ReplaceExpired(stale),
        ReplaceExpired(signed_stale),
    ]


def test_a_mined_nonce_with_none_of_our_hashes_is_reported() -> None:
    book = synced_book()
    r0 = book.accept(intent(), now=0)
    sign(book, r0)
    plan = plan_recovery(list(book.all_records()), ChainFacts({ALICE: 1, BOB: 0}, {}))
    assert plan == [NonceTaken(r0)]


def test_holes_below_held_nonces_become_gap_fills_and_noops_are_resent() -> None:
    book = synced_book()
    rs = [book.accept(intent(), now=0) for _ in range(4)]
    sign(book, rs[0])
    book.transition(rs[1], TxState.CANCELLED, reason="user", now=1)  # hole, no noop
    sign(book, rs[2])
    book.transition(rs[2], TxState.CANCELLED, reason="user", now=1)
    noop = attempt(rs[2], reason=AttemptReason.CANCEL)
    book.add_attempt(rs[2], noop)
    sign(book, rs[3])
    plan = plan_recovery(list(book.all_records()), ChainFacts({ALICE: 0, BOB: 0}, {}))
    assert plan == [
        Resend(rs[0], rs[0].attempts[0], was_included=False),
        FillGap(ALICE, 1),
        Resend(rs[2], noop, was_included=False),
        Resend(rs[3], rs[3].attempts[0], was_included=False),
    ]


def test_settled_and_released_records_are_left_alone() -> None:
    book = synced_book()
    r0 = book.accept(intent(), now=0)
    h = sign(book, r0)
    book.mark_included(h, B1, now=2)
    book.finalize(B1.hash, now=3)
    r1 = book.accept(intent(), now=0)
    book.transition(r1, TxState.FAILED, reason="policy_denied", now=1)
    book.resync(ALICE, chain_latest=1, chain_pending=1, now=2)
    assert r1.released
    records = list(book.all_records())
    assert hashes_to_check(records, {ALICE: 5, BOB: 0}) == []
    assert plan_recovery(records, ChainFacts({ALICE: 5, BOB: 0}, {})) == []


def test_the_plan_applied_to_the_book_leaves_nothing_to_do() -> None:
    """Executing a plan with the book's own calls converges: a second plan is only resends."""
    book = synced_book()
    mined = book.accept(intent(), now=0)
    mined_hash = sign(book, mined)
    waiting = book.accept(intent(), now=0)
    sign(book, waiting)
    facts = ChainFacts({ALICE: 1, BOB: 0}, {mined_hash: B1})
    for action in plan_recovery(list(book.all_records()), facts):
        if isinstance(action, MarkIncluded):
            book.mark_included(action.tx_hash, action.block, now=5)
        elif isinstance(action, Resend):
            pass  # rebroadcast action.attempt.raw
    assert mined.state is TxState.INCLUDED
    again = plan_recovery(list(book.all_records()), facts)
    assert again == [Resend(waiting, waiting.attempts[0], was_included=False)]


def test_an_attempt_journaled_before_its_signed_state_can_still_be_marked_included() -> None:
    book = synced_book()
    record = book.accept(intent(), now=0)
    a = attempt(record)
    book.add_attempt(record, a)  # crash here: the 'signed' transition never reached the journal
    plan = plan_recovery(list(book.all_records()), ChainFacts({ALICE: 1, BOB: 0}, {a.hash: B1}))
    assert plan == [MarkIncluded(record, a.hash, B1)]
    book.mark_included(a.hash, B1, now=1)
    assert record.state is TxState.INCLUDED and book.pending_count(ALICE) == 0

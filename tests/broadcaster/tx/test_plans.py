"""The tx manager's pure planners, pricing and ledger: state + facts in, actions out."""

from __future__ import annotations

import dataclasses

import pytest

from broadcaster.rpc.error_table import ErrorKind
from broadcaster.tx.ledger import AttemptLedger, Presigned
from broadcaster.tx.plans import (
    Alert,
    Bump,
    CheckInclusion,
    ExpireUnsigned,
    Fail,
    Rebroadcast,
    ReplaceExpired,
    Resign,
    Resync,
    SendPresigned,
    plan_expiry,
    plan_gap_fill,
    plan_nonce_counts,
    plan_nonce_error,
    plan_reorg,
)
from broadcaster.tx.pricing import FeePolicy, replacement
from nonce import AttemptReason, BlockRef, Fees, NonceBook, TxState
from nonce.fees import geth_accepts_replacement
from tests.nonce.factories import ALICE, BOB, attempt, intent

GWEI = 1_000_000_000


def _book() -> NonceBook:
    book = NonceBook()
    for sender in (ALICE, BOB):
        book.resync(sender, chain_latest=0, chain_pending=0, now=0)
    return book


def _included(book: NonceBook, sender: str = ALICE, **kw: object):  # type: ignore[no-untyped-def]
    record = book.accept(intent(sender, **kw), now=0)  # type: ignore[arg-type]
    a = attempt(record)
    book.add_attempt(record, a)
    book.transition(record, TxState.SIGNED, reason="t", now=0)
    book.mark_included(a.hash, BlockRef(5, "0x" + "ab" * 32), now=0)
    book.on_reorg(["0x" + "ab" * 32], now=0)
    return record, a


def _presigned(record, fees: Fees, max_base_fee: int, *, noop: bool = False) -> Presigned:  # type: ignore[no-untyped-def]
    reason = AttemptReason.CANCEL if noop else AttemptReason.REORG
    return Presigned(attempt(record, reason=reason), fees, max_base_fee)


# -- plan_reorg --------------------------------------------------------------------------------


def test_a_dropped_tx_with_a_good_presign_goes_out_presigned() -> None:
    book = _book()
    record, a = _included(book)
    ahead = _presigned(record, Fees(40 * GWEI, 2 * GWEI), max_base_fee=19 * GWEI)
    ledger = {a.hash: ahead}
    actions = plan_reorg(
        [record],
        next_block=6,
        base_fee=10 * GWEI,
        presigned_for=ledger.get,
        take_presigned=ledger.pop,
    )
    assert actions == [SendPresigned(record, ahead.attempt)]
    assert ledger == {}  # taken: sent


def test_a_presign_outgrown_by_the_base_fee_is_spent_and_a_fresh_resign_planned() -> None:
    book = _book()
    record, a = _included(book)
    ahead = _presigned(record, Fees(40 * GWEI, 2 * GWEI), max_base_fee=19 * GWEI)
    taken = {a.hash: ahead}
    actions = plan_reorg(
        [record],
        next_block=6,
        base_fee=21 * GWEI,
        presigned_for=taken.get,
        take_presigned=taken.pop,
    )
    assert actions == [Resign(record, noop=False, reason=AttemptReason.REORG)]
    assert taken == {}  # spent: its fees must still count as the floor (the ledger's job)


def test_an_expired_intent_is_replaced_by_a_noop_never_its_presigned_payload() -> None:
    book = _book()
    record, a = _included(book, valid_until_block=5)
    ahead = _presigned(record, Fees(40 * GWEI, 2 * GWEI), max_base_fee=19 * GWEI)
    ledger = {a.hash: ahead}
    actions = plan_reorg(
        [record], next_block=6, base_fee=1, presigned_for=ledger.get, take_presigned=ledger.pop
    )
    assert actions == [Resign(record, noop=True, reason=AttemptReason.EXPIRED_REPLACEMENT)]
    assert ledger == {}  # the payload's replacement is spent, never sent


def test_later_nonces_of_a_sender_wait_behind_its_first_fresh_resign() -> None:
    book = _book()
    first, _ = _included(book)
    second, a2 = _included(book)
    other, a3 = _included(book, BOB)
    ahead = {
        a2.hash: _presigned(second, Fees(40 * GWEI, 2 * GWEI), 19 * GWEI),
        a3.hash: _presigned(other, Fees(40 * GWEI, 2 * GWEI), 19 * GWEI),
    }
    actions = plan_reorg(
        [first, second, other],
        next_block=6,
        base_fee=1,
        presigned_for=ahead.get,
        take_presigned=lambda h: ahead.pop(h, None),
    )
    assert [type(x) for x in actions] == [Resign, Resign, SendPresigned]
    assert actions[2].record is other
    # The second nonce's good replacement stays in the ledger: its re-sign, after the first
    # nonce's, sends it instead of asking for one more (review of react8).
    assert set(ahead) == {a2.hash}


def test_a_later_nonces_outgrown_presign_is_spent_even_while_it_waits() -> None:
    book = _book()
    first, _ = _included(book)
    second, a2 = _included(book)
    ahead = {a2.hash: _presigned(second, Fees(40 * GWEI, 2 * GWEI), 19 * GWEI)}
    actions = plan_reorg(
        [first, second],
        next_block=6,
        base_fee=21 * GWEI,
        presigned_for=ahead.get,
        take_presigned=lambda h: ahead.pop(h, None),
    )
    assert [type(x) for x in actions] == [Resign, Resign]
    assert ahead == {}


def test_bytes_signed_elsewhere_are_rebroadcast_unchanged() -> None:
    book = _book()
    raw = dataclasses.replace(intent(), external=True)
    record = book.accept(raw, now=0)
    a = attempt(record, reason=AttemptReason.EXTERNAL)
    book.add_attempt(record, a)
    actions = plan_reorg(
        [record],
        next_block=1,
        base_fee=1,
        presigned_for=lambda h: None,
        take_presigned=lambda h: None,
    )
    assert actions == [Rebroadcast(record, a, "reorg_rebroadcast")]


# -- plan_expiry ---------------------------------------------------------------------------------


def test_a_signed_intent_is_not_judged_expired_before_its_last_block_was_scanned() -> None:
    book = _book()
    record = book.accept(intent(valid_until_block=10), now=0)
    book.add_attempt(record, attempt(record))
    book.transition(record, TxState.SIGNED, reason="t", now=0)
    asked: list[int] = []

    def scanned(n: int) -> bool:
        asked.append(n)
        return n == 10

    assert plan_expiry([record], next_block=11, scanned=lambda n: False) == []
    assert plan_expiry([record], next_block=11, scanned=scanned) == [ReplaceExpired(record)]
    assert asked == [10]  # the block that decides is validUntilBlock itself, not the tip
    assert plan_expiry([record], next_block=10, scanned=lambda n: True) == []  # 10 still good


def test_an_unsigned_intent_expires_at_once() -> None:
    book = _book()
    record = book.accept(intent(valid_until_block=3), now=0)
    assert plan_expiry([record], next_block=4, scanned=lambda n: False) == [ExpireUnsigned(record)]


# -- plan_nonce_error ----------------------------------------------------------------------------


def _error(record, a, kind: ErrorKind, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = dict(
        final=True,
        refusals=1,
        endpoints=1,
        bumps=0,
        max_bumps=8,
        first_bump=True,
        first_recheck=True,
        previous_alive=False,
        message="m",
    )
    args.update(kw)
    return plan_nonce_error(record, a, kind, **args)  # type: ignore[arg-type]


def test_txpool_answers_map_to_the_design_reactions() -> None:
    book = _book()
    record = book.accept(intent(), now=0)
    a = attempt(record)
    book.add_attempt(record, a)
    book.transition(record, TxState.SIGNED, reason="t", now=0)
    assert _error(record, a, ErrorKind.UNDERPRICED) == [Bump(record, a)]
    assert _error(record, a, ErrorKind.UNDERPRICED, first_bump=False) == []
    assert _error(record, a, ErrorKind.NONCE_TOO_LOW) == [CheckInclusion(record, a), Resync(ALICE)]
    assert _error(record, a, ErrorKind.NONCE_TOO_HIGH) == [Resync(ALICE)]
    failed = _error(record, a, ErrorKind.INSUFFICIENT_FUNDS)
    assert [type(x) for x in failed] == [Alert, Fail]
    # Not every endpoint refused yet: nothing to conclude.
    assert _error(record, a, ErrorKind.INSUFFICIENT_FUNDS, endpoints=2) == []


def test_insufficient_funds_for_a_bump_keeps_the_earlier_attempt_alive() -> None:
    book = _book()
    record = book.accept(intent(), now=0)
    first = attempt(record)
    book.add_attempt(record, first)
    bumped = attempt(record, reason=AttemptReason.UNDERPRICED, max_fee=40 * GWEI, tip=2 * GWEI)
    book.add_attempt(record, bumped)
    actions = _error(record, bumped, ErrorKind.INSUFFICIENT_FUNDS, previous_alive=True)
    assert [type(x) for x in actions] == [Alert]


def test_answers_about_a_superseded_attempt_do_nothing() -> None:
    book = _book()
    record = book.accept(intent(), now=0)
    old = attempt(record)
    book.add_attempt(record, old)
    book.add_attempt(record, attempt(record, reason=AttemptReason.UNDERPRICED))
    assert _error(record, old, ErrorKind.INSUFFICIENT_FUNDS) == []


# -- nonce counts and gaps -----------------------------------------------------------------------


def test_one_rpcs_pending_jump_is_not_trusted_alone() -> None:
    counts = {"good": (7, 7), "liar": (7, 502)}
    latest, pending, alerts = plan_nonce_counts(counts, held=7, max_gap_fill=4)
    assert (latest, pending) == (7, 7)
    assert [a.kind for a in alerts] == ["nonce_jump"]
    only = plan_nonce_counts({"liar": (7, 502)}, held=7, max_gap_fill=4)
    assert only[:2] == (7, 7)  # one endpoint alone cannot make us skip 495 nonces either
    near = plan_nonce_counts({"good": (7, 9), "liar": (7, 502)}, held=7, max_gap_fill=4)
    assert near[:2] == (7, 9)  # what the honest one says still counts


def test_a_jump_two_endpoints_confirm_is_trusted() -> None:
    counts = {"a": (7, 20), "b": (7, 20), "c": (7, 7)}
    assert plan_nonce_counts(counts, held=7, max_gap_fill=4)[:2] == (7, 20)


def test_gap_fill_is_bounded_and_asks_an_operator_beyond() -> None:
    small = plan_gap_fill(ALICE, [3, 4], max_gap_fill=4)
    assert small.fill == (3, 4) and small.alert is None
    many = plan_gap_fill(ALICE, list(range(10, 505)), max_gap_fill=4)
    assert many.fill == (10, 11, 12, 13)
    assert many.alert is not None and many.alert.kind == "gap_fill_limit"


# -- pricing and the ledger's floor --------------------------------------------------------------


def test_legacy_resigns_rise_ten_percent_not_by_the_1559_rule() -> None:
    legacy = dataclasses.replace(
        intent(max_fee=32 * GWEI, tip=32 * GWEI), tx_type=0, access_list=()
    )
    fees = replacement(legacy, Fees(32 * GWEI, 32 * GWEI), 30 * GWEI, FeePolicy(), noop=False)
    assert fees == Fees(35_200_000_000, 35_200_000_000)


def test_1559_resigns_clear_gethss_rule_and_the_base_fee_headroom() -> None:
    old = Fees(30 * GWEI, GWEI)
    fees = replacement(intent(), old, 20 * GWEI, FeePolicy(), noop=False)
    assert geth_accepts_replacement(old, fees)
    assert fees.max_fee_per_gas >= 2 * 20 * GWEI + fees.max_priority_fee_per_gas


def test_the_floor_counts_every_signature_at_the_nonce_discarded_presigns_included() -> None:
    book = _book()
    record = book.accept(intent(), now=0)
    book.add_attempt(record, attempt(record))  # 30 gwei / 1 gwei
    ledger = AttemptLedger()
    assert ledger.floor(record) == Fees(30 * GWEI, GWEI)
    ledger.signed_fees(ALICE, record.nonce, Fees(33 * GWEI, 1_100_000_000))  # presign, discarded
    assert ledger.floor(record) == Fees(33 * GWEI, 1_100_000_000)
    fees = replacement(record.intent, ledger.floor(record), 1, FeePolicy(), noop=False)
    assert geth_accepts_replacement(Fees(33 * GWEI, 1_100_000_000), fees)
    ledger.forget(record)
    assert ledger.floor(record) == Fees(30 * GWEI, GWEI)  # journaled attempts still count


def test_the_noop_tip_is_priority_fee_wei() -> None:
    fees = replacement(intent(), None, 10 * GWEI, FeePolicy(priority_fee=3 * GWEI), noop=True)
    assert fees == Fees(23 * GWEI, 3 * GWEI)


@pytest.mark.parametrize("cap", [35 * GWEI, 60 * GWEI])
def test_a_cap_clamps_headroom_and_keeps_the_bump(cap: int) -> None:
    old = Fees(30 * GWEI, GWEI)
    fees = replacement(intent(), old, 50 * GWEI, FeePolicy(fee_cap=cap), noop=False)
    assert fees.max_fee_per_gas == cap
    assert geth_accepts_replacement(old, fees)

"""The transition table and the values: every pair of states is either allowed or refused."""

from __future__ import annotations

import itertools

import pytest

from nonce.book import NonceBook
from nonce.entries import MemoryJournal, StateChanged
from nonce.errors import InvalidIntent, InvalidTransition
from nonce.state import (
    TRANSITIONS,
    AttemptReason,
    BlockRef,
    Intent,
    TxRecord,
    TxState,
)
from tests.nonce.factories import ALICE, TARGET, attempt, intent

S = TxState
EXPECTED = {
    (S.PENDING, S.SIGNED), (S.PENDING, S.INCLUDED), (S.PENDING, S.CANCELLED),
    (S.PENDING, S.EXPIRED), (S.PENDING, S.FAILED),
    (S.SIGNED, S.BROADCAST), (S.SIGNED, S.INCLUDED), (S.SIGNED, S.CANCELLED),
    (S.SIGNED, S.EXPIRED), (S.SIGNED, S.FAILED),
    (S.BROADCAST, S.INCLUDED), (S.BROADCAST, S.SIGNED), (S.BROADCAST, S.CANCELLED),
    (S.BROADCAST, S.EXPIRED), (S.BROADCAST, S.FAILED),
    (S.INCLUDED, S.FINALIZED), (S.INCLUDED, S.REORGED),
    (S.REORGED, S.SIGNED), (S.REORGED, S.BROADCAST), (S.REORGED, S.INCLUDED),
    (S.REORGED, S.CANCELLED), (S.REORGED, S.EXPIRED), (S.REORGED, S.FAILED),
    (S.CANCELLED, S.INCLUDED), (S.EXPIRED, S.INCLUDED), (S.FAILED, S.INCLUDED),
}  # fmt: skip
BLOCK = BlockRef(7, "0x" + "77" * 32)


def test_the_table_is_exactly_the_documented_one() -> None:
    allowed = {(old, new) for old, news in TRANSITIONS.items() for new in news}
    assert allowed == EXPECTED
    assert set(TRANSITIONS) == set(TxState)


def test_finalized_is_the_only_state_without_a_way_out() -> None:
    assert [s for s, news in TRANSITIONS.items() if not news] == [S.FINALIZED]


def test_the_api_status_names_are_the_design_ones() -> None:
    assert {s.value for s in TxState} == {
        "pending", "signed", "broadcast", "included", "reorged", "finalized",
        "cancelled", "expired", "failed",
    }  # fmt: skip


def _record_in(state: TxState) -> tuple[NonceBook, TxRecord, bytes]:
    record = TxRecord(intent=intent(), nonce=0, state=state, updated_at=0.0)
    a = attempt(record)
    record.attempts.append(a)
    if state in (S.INCLUDED, S.FINALIZED):
        record.block, record.included_hash = BLOCK, a.hash
        record.settled = state is S.FINALIZED
    journal = MemoryJournal()
    return NonceBook.restore([record], journal), record, a.hash


@pytest.mark.parametrize("old,new", list(itertools.product(TxState, TxState)))
def test_transition_follows_the_table_for_every_pair(old: TxState, new: TxState) -> None:
    book, record, tx_hash = _record_in(old)
    kwargs = {"block": BlockRef(8, "0x" + "88" * 32), "tx_hash": tx_hash}
    if (old, new) in EXPECTED:
        book.transition(record, new, reason="test", now=1.0, **kwargs)
        assert record.state is new and record.state_reason == "test"
        if new is S.INCLUDED:
            assert record.block is not None and record.block.number == 8
            assert book.in_block(record.block.hash) == (record,)
    else:
        with pytest.raises(InvalidTransition):
            book.transition(record, new, reason="test", now=1.0, **kwargs)
        assert record.state is old


def test_leaving_included_for_reorged_drops_the_block() -> None:
    book, record, _ = _record_in(S.INCLUDED)
    book.transition(record, S.REORGED, reason="reorg", now=1.0)
    assert record.block is None and book.in_block(BLOCK.hash) == ()


def test_finalized_through_transition_keeps_the_block_and_settles() -> None:
    _, record, _ = _record_in(S.INCLUDED)
    journal = MemoryJournal()
    book = NonceBook.restore([record], journal)
    book.transition(record, S.FINALIZED, reason="final", now=1.0)
    assert record.block == BLOCK and record.settled
    assert journal.of_type(StateChanged)[0].settled
    assert book.in_block(BLOCK.hash) == ()


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"sender": "0xABC"}, "from"),
        ({"sender": "0x" + "AB" * 20}, "from"),
        ({"to": "0x1234"}, "to"),
        ({"value": -1}, "value"),
        ({"gas": 0}, "gas"),
        ({"max_priority_fee_per_gas": 31_000_000_000}, "maxPriorityFeePerGas"),
        ({"tx_type": 5}, "type"),
        ({"tx_type": 3}, "blobs"),
        ({"tx_type": 4}, "authorizationList"),
        ({"tx_type": 0}, "gasPrice"),
        ({"valid_until_block": -5}, "validUntilBlock"),
        ({"id": ""}, "id"),
    ],
)
def test_an_invalid_intent_names_the_field(changes: dict[str, object], field: str) -> None:
    fields: dict[str, object] = {
        "id": "i", "sender": ALICE, "to": TARGET, "value": 0, "data": b"", "gas": 21_000,
        "max_fee_per_gas": 30_000_000_000, "max_priority_fee_per_gas": 1, "chain_id": 1,
    }  # fmt: skip
    fields.update(changes)
    with pytest.raises(InvalidIntent) as caught:
        Intent(**fields)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_expiry_is_strictly_after_valid_until_block() -> None:
    i = intent(valid_until_block=100)
    assert not i.expired_at(100) and i.expired_at(101)
    assert not intent().expired_at(10**9)


def test_noop_reasons_mark_noop_attempts() -> None:
    record = TxRecord(intent=intent(), nonce=0, state=S.PENDING, updated_at=0.0)
    assert not attempt(record).is_noop
    for reason in ("expired_replacement", "cancel", "gap_fill"):
        assert attempt(record, reason=AttemptReason(reason)).is_noop

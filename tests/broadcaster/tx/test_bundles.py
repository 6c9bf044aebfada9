"""The private-orderflow plans (DESIGN.md 5a): what goes to builders and private RPCs, per head."""

from __future__ import annotations

import uuid

from broadcaster.tx.bundles import (
    PRIVATE_TX_BLOCKS,
    CancelBundle,
    CancelPrivate,
    SendBundle,
    SendPrivate,
    Target,
    plan_cancel,
    plan_head,
    plan_submit,
    replacement_uuid,
)

RAW = b"\x02\xf8raw"
HASH = b"\x11" * 32


def target(**kw: object) -> Target:
    fields: dict[str, object] = {
        "intent_id": "i-1",
        "raw": RAW,
        "tx_hash": HASH,
        "valid_until": None,
    }
    fields.update(kw)
    return Target(**fields)  # type: ignore[arg-type]


def test_the_replacement_uuid_is_a_stable_uuid_of_the_intent_id_and_differs_for_its_noop() -> None:
    first = replacement_uuid("i-1")
    assert first == replacement_uuid("i-1")
    assert uuid.UUID(first).version == 5
    assert first != replacement_uuid("i-2")
    assert replacement_uuid("i-1", noop=True) not in (first, replacement_uuid("i-2"))


def test_a_new_attempt_goes_as_a_bundle_for_the_next_block_and_as_a_private_tx() -> None:
    actions = plan_submit(target(valid_until=120), 100, builders=True, private=True)
    assert actions == [
        SendBundle("i-1", replacement_uuid("i-1"), (RAW,), 101, False),
        SendPrivate("i-1", RAW, 120),
    ]


def test_a_private_tx_without_valid_until_block_gets_the_default_window() -> None:
    (action,) = plan_submit(target(), 100, builders=False, private=True)
    assert action == SendPrivate("i-1", RAW, 100 + PRIVATE_TX_BLOCKS)


def test_nothing_is_sent_for_an_intent_whose_next_block_is_past_valid_until_block() -> None:
    assert plan_submit(target(valid_until=100), 100, builders=True, private=True) == []
    # ... but its noop is not bound by validUntilBlock.
    noop = plan_submit(target(valid_until=100, noop=True), 100, builders=True, private=False)
    assert noop == [SendBundle("i-1", replacement_uuid("i-1", noop=True), (RAW,), 101, False)]


def test_each_new_head_re_targets_a_live_bundle_at_the_next_block_under_the_same_uuid() -> None:
    live = target(valid_until=105)
    first = plan_head([live], 101, builders=True)
    second = plan_head([live], 102, builders=True)
    assert first == [SendBundle("i-1", replacement_uuid("i-1"), (RAW,), 102, True)]
    assert second == [SendBundle("i-1", replacement_uuid("i-1"), (RAW,), 103, True)]


def test_a_mined_bundle_is_not_re_sent() -> None:
    assert plan_head([target(mined=True)], 101, builders=True) == []


def test_a_bundle_whose_next_block_passes_valid_until_block_is_cancelled() -> None:
    assert plan_head([target(valid_until=104)], 103, builders=True) == [
        SendBundle("i-1", replacement_uuid("i-1"), (RAW,), 104, True)
    ]
    assert plan_head([target(valid_until=104)], 104, builders=True) == [
        CancelBundle("i-1", replacement_uuid("i-1"))
    ]


def test_a_given_up_payload_is_cancelled_and_a_given_up_intents_noop_keeps_being_sent() -> None:
    assert plan_head([target(given_up=True)], 101, builders=True) == [
        CancelBundle("i-1", replacement_uuid("i-1"))
    ]
    noop = plan_head([target(given_up=True, noop=True)], 101, builders=True)
    assert noop == [SendBundle("i-1", replacement_uuid("i-1", noop=True), (RAW,), 102, True)]


def test_cancel_cancels_the_payload_bundle_and_every_private_tx_of_the_payload() -> None:
    other = b"\x22" * 32
    actions = plan_cancel(target(noop=True), builders=True, private=True, hashes=(HASH, other))
    assert actions == [
        CancelBundle("i-1", replacement_uuid("i-1")),
        CancelPrivate("i-1", HASH),
        CancelPrivate("i-1", other),
    ]


def test_without_builders_heads_send_nothing() -> None:
    assert plan_head([target()], 101, builders=False) == []

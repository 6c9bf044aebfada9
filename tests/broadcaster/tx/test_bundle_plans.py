"""``broadcaster_sendBundle``'s plans (DESIGN.md 5a), pure: which transactions in which order,
for which block, re-targeted or cancelled per head."""

from __future__ import annotations

import pytest

from broadcaster.tx.bundle_plans import (
    BundleSpec,
    Member,
    bundle_status,
    bundle_txs,
    decode_spec,
    encode_spec,
    plan_bundle_head,
    plan_bundle_submit,
    plan_restore,
    target_block,
)
from broadcaster.tx.bundles import CancelBundle, SendBundle, replacement_uuid

RAW = b"\x02raw-theirs"
SPEC = BundleSpec("bundle-1", ("a", RAW, "b"), reverting=(b"\x11" * 32,))


def test_the_bundle_waits_for_every_member_then_keeps_the_slot_order() -> None:
    assert bundle_txs(SPEC, {"a": Member(b"A")}) is None
    assert bundle_txs(SPEC, {"a": Member(b"A"), "b": Member(None)}) is None
    assert bundle_txs(SPEC, {"a": Member(b"A"), "b": Member(b"B")}) == (b"A", RAW, b"B")
    assert plan_bundle_submit(SPEC, {"a": Member(b"A")}, 100) == []


def test_a_submit_sends_one_bundle_under_the_bundle_uuid_for_the_next_block() -> None:
    members = {"a": Member(b"A"), "b": Member(b"B")}
    (action,) = plan_bundle_submit(SPEC, members, 100)
    assert action == SendBundle(
        "bundle-1", replacement_uuid("bundle-1"), (b"A", RAW, b"B"), 101, False, SPEC.reverting
    )
    assert SPEC.uuid == replacement_uuid("bundle-1") != replacement_uuid("a")


def test_a_reorgs_re_sign_replaces_our_tx_and_keeps_the_raw_one() -> None:
    before = plan_bundle_submit(SPEC, {"a": Member(b"A"), "b": Member(b"B")}, 100)
    after = plan_bundle_submit(SPEC, {"a": Member(b"A2"), "b": Member(b"B")}, 100)
    assert isinstance(before[0], SendBundle) and isinstance(after[0], SendBundle)
    assert after[0].txs == (b"A2", RAW, b"B") and after[0].uuid == before[0].uuid


def test_block_number_and_max_block_number_bound_the_target() -> None:
    spec = BundleSpec("bundle-2", ("a",), first_block=105, max_block=107)
    assert target_block(spec, 100) == 105  # not before blockNumber
    assert target_block(spec, 105) == 106
    assert target_block(spec, 106) == 107
    assert target_block(spec, 107) is None  # past maxBlockNumber
    assert plan_bundle_submit(spec, {"a": Member(b"A")}, 107) == []
    assert plan_bundle_head(spec, {"a": Member(b"A")}, 107) == [CancelBundle("bundle-2", spec.uuid)]


def test_each_head_re_targets_until_it_lands() -> None:
    members = {"a": Member(b"A"), "b": Member(b"B")}
    (action,) = plan_bundle_head(SPEC, members, 120)
    assert isinstance(action, SendBundle) and action.retarget and action.block_number == 121
    # Landed (atomic: one member mined means the bundle did): nothing more, nothing cancelled.
    assert plan_bundle_head(SPEC, {**members, "a": Member(b"A", mined=True)}, 121) == []
    # Not every member signed yet: nothing to send yet.
    assert plan_bundle_head(SPEC, {"a": Member(b"A")}, 121) == []


def test_one_member_given_up_cancels_the_whole_bundle() -> None:
    members = {"a": Member(b"A"), "b": Member(b"B", given_up=True)}
    assert plan_bundle_head(SPEC, members, 120) == [CancelBundle("bundle-1", SPEC.uuid)]


def test_the_bundle_status_follows_its_members() -> None:
    assert bundle_status(["included", "broadcast"]) == "broadcast"
    assert bundle_status(["included", "included"]) == "included"
    assert bundle_status(["finalized", "included"]) == "included"
    assert bundle_status(["finalized", "finalized"]) == "finalized"
    assert bundle_status(["included", "cancelled"]) == "cancelled"
    assert bundle_status(["reorged", "included"]) == "reorged"
    assert bundle_status([]) == "pending"


def test_the_journal_form_round_trips_and_a_bad_row_is_a_clear_error() -> None:
    spec = BundleSpec(
        "bundle-j", ("a", RAW, "b"), first_block=5, max_block=9, reverting=(b"\x01" * 32,)
    )
    assert decode_spec("bundle-j", encode_spec(spec)) == spec
    with pytest.raises(ValueError, match="bundle-j: unreadable journal row"):
        decode_spec("bundle-j", b"{not json")


def test_restore_keeps_live_bundles_and_skips_incomplete_ones() -> None:
    live = BundleSpec("bundle-live", ("a", RAW))
    done = BundleSpec("bundle-done", ("b",))
    refused = BundleSpec("bundle-refused", ("c", "never-booked"))
    rows = [(s.id, encode_spec(s)) for s in (live, done, refused)] + [("bundle-bad", b"?")]
    settled = {"a": False, "b": True, "c": False}
    answerable, restored, dead, problems = plan_restore(rows, settled.get)
    assert answerable == [live, done]
    # a bundle of settled members needs nothing sent; one with a member never booked (a crash
    # between two members' admissions) is live but dead: its booked members are cancelled
    assert restored == [live, refused]
    assert dead == ["bundle-refused"]
    assert len(problems) == 1 and "bundle-bad" in problems[0]

"""Rules v2 (DESIGN.md §3): each consequence the design lists, and liars with sealed headers.

"Sealed" headers (``tests.heads.chain.sealed_header``) are whole Prague headers whose hash is
their real keccak256(rlp(header)): what a liar sends, since a liar computes keccak too. Hash
verification accepts them; what stops them is structure, the re-anchor rule and quarantine.
"""

from __future__ import annotations

from typing import Any

from heads.events import DeepReorg, Event, Extension, NeedAncestor, Quarantine, Rejected, Reorg
from heads.tracker import ChainTracker
from tests.heads.chain import Tree, reorgs, sealed_chain, sealed_header


def moves(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, Extension | Reorg | DeepReorg)]


# -- fork choice consequences --------------------------------------------------------------------


def test_one_reorg_seen_by_a_fast_and_a_late_client_is_one_reorg_event() -> None:
    """The late client replays the same stream 400 ms later: its copy of the abandoned block
    was first seen before the new sibling, so it never flips the tip back."""
    tree = Tree()
    tree.add("a1", "g")
    tree.add("b1", "g")  # the reorg: b1 replaces a1
    tree.add("b2", "b1")
    stream = ["g", "a1", "b1", "b2"]
    tracker = ChainTracker()
    events: list[Event] = []
    for i, label in enumerate(stream):
        events += tracker.on_head("fast", tree[label])
        if i >= 1:  # the late client is one announcement behind
            events += tracker.on_head("late", tree[stream[i - 1]])
    events += tracker.on_head("late", tree["b2"])
    (reorg,) = reorgs(events)
    assert [b.hash for b in reorg.old] == [tree.hash("a1")]
    assert [b.hash for b in reorg.new] == [tree.hash("b1")]
    assert tracker.tip is not None and tracker.tip.hash == tree.hash("b2")


def test_a_late_copy_of_an_abandoned_block_does_not_flip_the_tip_back() -> None:
    tree = Tree()
    tree.add("a1", "g")
    tree.add("b1", "g")
    tracker = ChainTracker()
    tracker.on_head("x", tree["g"])
    tracker.on_head("x", tree["a1"])
    (reorg,) = reorgs(tracker.on_head("x", tree["b1"]))
    assert reorg.new[0].hash == tree.hash("b1")
    assert tracker.on_head("y", tree["a1"]) == []  # seen before b1: b1 stays
    assert tracker.tip is not None and tracker.tip.hash == tree.hash("b1")


def test_first_seen_keeps_the_earlier_block_while_a_client_still_holds_it() -> None:
    tree = Tree()
    tree.add("a1", "g")
    tree.add("b1", "g")
    tracker = ChainTracker(fork_choice="first-seen")
    tracker.on_head("x", tree["g"])
    tracker.on_head("x", tree["a1"])
    assert moves(tracker.on_head("y", tree["b1"])) == []
    assert moves(tracker.on_head("y", tree["a1"])) == []  # y's late copy: a1 stays
    assert tracker.tip is not None and tracker.tip.hash == tree.hash("a1")


def test_a_stale_head_of_a_disconnected_client_is_no_candidate() -> None:
    tree = Tree()
    tree.chain("a", "g", 3)
    tree.chain("b", "g", 2)
    tracker = ChainTracker()
    tracker.on_head("x", tree["g"])
    for label in ("a1", "a2", "a3"):
        tracker.on_head("x", tree[label])
        tracker.on_head("y", tree[label])
    assert tracker.on_disconnect("x") == []  # no recompute on a disconnect
    assert tracker.tip is not None and tracker.tip.hash == tree.hash("a3")
    # y goes down to another branch: x's a3 is no candidate any more, so the tip follows y.
    events = tracker.on_head("y", tree["b2"])  # held: b1 is fetched from y
    (reorg,) = reorgs(events + tracker.on_block("y", tree["b1"]))
    assert reorg.ancestor.hash == tree.hash("g")
    assert [b.hash for b in reorg.new] == [tree.hash("b1"), tree.hash("b2")]


def test_a_late_client_catching_up_after_the_tip_holder_left_does_not_roll_the_tip_back() -> None:
    """Seen live (tests/e2e/test_heads_live.py): the fast client is stopped before the late
    one's copies of the same blocks arrive; those copies are below the tip but no step down
    for the late client itself, so no rollback (a lost connection is not a rollback)."""
    tree = Tree()
    tree.chain("a", "g", 3)
    tracker = ChainTracker()
    for label in ("g", "a1", "a2", "a3"):
        tracker.on_head("fast", tree[label])
    tracker.on_disconnect("fast")
    events: list[Event] = []
    for label in ("g", "a1", "a2", "a3"):
        events += tracker.on_head("late", tree[label])
    assert moves(events) == []
    assert tracker.tip is not None and tracker.tip.hash == tree.hash("a3")


def test_the_same_lower_announcement_does_not_move_the_tip_while_a_higher_client_is_connected() -> (
    None
):
    tree = Tree()
    tree.chain("a", "g", 3)
    tree.chain("b", "g", 2)
    tracker = ChainTracker()
    tracker.on_head("x", tree["g"])
    for label in ("a1", "a2", "a3"):
        tracker.on_head("x", tree[label])
    tracker.on_head("y", tree["b1"])
    assert moves(tracker.on_head("y", tree["b2"])) == []


def test_a_lone_client_announcing_a_lower_block_on_another_branch_moves_the_tip() -> None:
    tree = Tree()
    tree.chain("a", "g", 3)
    tree.add("b1", "g")
    tracker = ChainTracker()
    for label in ("g", "a1", "a2", "a3"):
        tracker.on_head("x", tree[label])
    (reorg,) = reorgs(tracker.on_head("x", tree["b1"]))
    assert reorg.depth == 3 and [b.hash for b in reorg.new] == [tree.hash("b1")]


def test_a_lone_client_announcing_an_ancestor_of_the_tip_rolls_back_to_it() -> None:
    tree = Tree()
    tree.chain("a", "g", 3)
    tracker = ChainTracker()
    for label in ("g", "a1", "a2", "a3"):
        tracker.on_head("x", tree[label])
    (reorg,) = reorgs(tracker.on_head("x", tree["a1"]))
    assert reorg.new == () and [b.hash for b in reorg.old] == [tree.hash("a2"), tree.hash("a3")]


def test_a_reconnected_client_is_a_candidate_again_only_with_what_it_announces_next() -> None:
    tree = Tree()
    tree.chain("a", "g", 2)
    tree.add("b2", "a1")
    tracker = ChainTracker()
    for label in ("g", "a1", "a2"):
        tracker.on_head("x", tree[label])
    tracker.on_head("y", tree["a1"])
    tracker.on_disconnect("x")
    (reorg,) = reorgs(tracker.on_head("y", tree["b2"]))  # x's a2 is stale: b2 wins
    assert reorg.new[0].hash == tree.hash("b2")
    tracker.on_connect("x")
    assert moves(tracker.on_head("y", tree["b2"])) == []  # x's old a2 still is no candidate
    # x announcing a2 again is news (its first line since reconnecting), but b2 is newer.
    assert moves(tracker.on_head("x", tree["a2"])) == []
    assert tracker.tip is not None and tracker.tip.hash == tree.hash("b2")


# -- structure ------------------------------------------------------------------------------------


def test_a_sealed_child_of_the_tip_numbered_a_million_ahead_is_rejected() -> None:
    chain = sealed_chain(5)
    tracker = ChainTracker()
    for header in chain:
        tracker.on_head("honest", header)
    tip = chain[-1]
    forged = sealed_header(4 + 10**6, tip["hash"], salt="liar")
    (rejected,) = tracker.on_head("liar", forged)
    assert isinstance(rejected, Rejected) and rejected.reason == "bad_number"
    assert tracker.tip is not None and tracker.tip.number == 4
    assert tracker.get(forged["hash"]) is None
    nxt = sealed_header(5, tip["hash"])
    (ext,) = tracker.on_head("honest", nxt)
    assert isinstance(ext, Extension) and tracker.tip.number == 5


def test_a_timestamp_below_the_parents_is_rejected_and_an_equal_one_passes() -> None:
    chain = sealed_chain(3)
    tracker = ChainTracker()
    for header in chain:
        tracker.on_head("a", header)
    parent_ts = int(chain[-1]["timestamp"], 16)
    early = sealed_header(3, chain[-1]["hash"], timestamp=parent_ts - 1)
    (rejected,) = tracker.on_head("a", early)
    assert isinstance(rejected, Rejected) and rejected.reason == "bad_timestamp"
    same = sealed_header(3, chain[-1]["hash"], timestamp=parent_ts)  # what anvil_reorg mints
    (ext,) = tracker.on_head("a", same)
    assert isinstance(ext, Extension)


def test_a_held_block_with_an_impossible_number_is_rejected_when_its_parent_arrives() -> None:
    chain = sealed_chain(3)
    tracker = ChainTracker()
    tracker.on_head("a", chain[0])
    lie = sealed_header(9, chain[1]["hash"], salt="x")  # parent is #1: should be #2
    assert tracker.on_head("b", lie) == [NeedAncestor("b", chain[1]["hash"])]
    events = tracker.on_block("b", chain[1])
    assert [(type(e), getattr(e, "reason", None)) for e in events] == [(Rejected, "bad_number")]
    assert tracker.get(lie["hash"]) is None and tracker.stats()["held"] == 0


def test_a_hash_held_in_the_store_cannot_be_claimed_with_another_parent() -> None:
    tree = Tree()
    tree.chain("a", "g", 2)
    tracker = ChainTracker()
    for label in ("g", "a1", "a2"):
        tracker.on_head("x", tree[label])
    forged = dict(tree["a2"], parentHash=tree.hash("g"))
    (rejected,) = tracker.on_head("y", forged)
    assert isinstance(rejected, Rejected) and rejected.reason == "conflict"
    assert tracker.client_head("y") is None


def test_the_base_fee_of_the_tip_comes_only_from_verified_headers() -> None:
    chain = sealed_chain(2)
    tracker = ChainTracker()
    tracker.on_head("a", chain[0])
    tracker.on_head("a", chain[1])
    assert tracker.tip is not None and tracker.tip.base_fee == 7
    lie = dict(sealed_header(2, chain[1]["hash"]), baseFeePerGas="0x1")  # hash no longer fits
    (rejected,) = tracker.on_head("a", lie)
    assert isinstance(rejected, Rejected) and rejected.reason == "hash_mismatch"
    assert tracker.tip.base_fee == 7


# -- re-anchoring ----------------------------------------------------------------------------------


def two_client_tracker(length: int = 10) -> tuple[ChainTracker, list[dict[str, Any]]]:
    chain = sealed_chain(length)
    tracker = ChainTracker(finality_depth=8, clients=2)
    for header in chain:
        tracker.on_head("honest", header)
        tracker.on_head("liar", header)
    return tracker, chain


def test_an_orphan_a_thousand_ahead_from_one_of_two_clients_does_not_re_anchor() -> None:
    tracker, chain = two_client_tracker()
    orphan = sealed_header(9 + 1000, "0x" + "ab" * 32, salt="orphan")
    events = tracker.on_head("liar", orphan)
    assert moves(events) == [] and not any(isinstance(e, NeedAncestor) for e in events)
    assert tracker.tip is not None and tracker.tip.number == 9
    # The honest chain goes on.
    (ext,) = moves(tracker.on_head("honest", sealed_header(10, chain[-1]["hash"])))
    assert isinstance(ext, Extension) and tracker.tip.number == 10
    assert tracker.client_head("liar") is not None
    assert tracker.client_head("liar").number == 9  # type: ignore[union-attr]


def test_a_second_connected_client_announcing_the_far_head_re_anchors() -> None:
    tracker, _ = two_client_tracker()
    far = sealed_header(1009, "0x" + "ab" * 32, salt="far")
    assert moves(tracker.on_head("liar", far)) == []
    (deep,) = moves(tracker.on_head("honest", far))
    assert isinstance(deep, DeepReorg) and deep.reason == "gap"
    assert tracker.tip is not None and tracker.tip.number == 1009


def test_a_descendant_from_the_second_client_re_anchors_on_their_common_block() -> None:
    tracker, _ = two_client_tracker()
    far = sealed_header(1009, "0x" + "ab" * 32, salt="far")
    child = sealed_header(1010, far["hash"], salt="far")
    tracker.on_head("liar", far)
    events = tracker.on_head("honest", child)
    kinds = [type(e) for e in moves(events)]
    assert kinds == [DeepReorg, Extension]
    assert tracker.tip is not None and tracker.tip.hash == child["hash"]


def test_a_disconnected_client_is_no_second_voice_for_a_re_anchor() -> None:
    tracker, _ = two_client_tracker()
    far = sealed_header(1009, "0x" + "ab" * 32, salt="far")
    tracker.on_head("liar", far)
    tracker.on_disconnect("liar")
    assert moves(tracker.on_head("honest", far)) == []


def test_a_lone_configured_client_re_anchors_on_its_own_word() -> None:
    chain = sealed_chain(10)
    tracker = ChainTracker(finality_depth=8, clients=1)
    for header in chain:
        tracker.on_head("only", header)
    far = sealed_header(1009, "0x" + "ab" * 32, salt="far")
    (deep,) = moves(tracker.on_head("only", far))
    assert isinstance(deep, DeepReorg) and tracker.tip is not None and tracker.tip.number == 1009


# -- quarantine and memory ----------------------------------------------------------------------


def test_a_sibling_flood_is_quarantined_and_the_store_stays_bounded() -> None:
    depth = 16
    chain = sealed_chain(20)
    tracker = ChainTracker(finality_depth=depth, clients=2)
    for header in chain:
        tracker.on_head("honest", header)
        tracker.on_head("liar", header)
    tip, parent = chain[-1], chain[-2]
    events: list[Event] = []
    frames = 100_000
    for i in range(frames):
        sibling = {"number": tip["number"], "hash": f"0x{i + 1:064x}", "parentHash": parent["hash"]}
        events += tracker.on_head("liar", sibling)
    assert len(reorgs(events)) <= tracker.trust.quarantine_after
    assert [e for e in events if isinstance(e, Quarantine)] == [
        Quarantine("liar", True, tracker.trust.quarantine_after)
    ]
    assert tracker.tip is not None and tracker.tip.hash == tip["hash"]
    for name, size in tracker.stats().items():
        assert size <= 4 * (depth + 1) + 64, (name, size)
    # A real reorg after the flood is still seen, once.
    sibling = sealed_header(19, parent["hash"], salt="real reorg")
    (reorg,) = reorgs(tracker.on_head("honest", sibling))
    assert [b.hash for b in reorg.old] == [tip["hash"]]
    assert [b.hash for b in reorg.new] == [sibling["hash"]]


def test_a_quarantined_client_is_released_when_another_client_confirms_one_of_its_blocks() -> None:
    tracker = ChainTracker(quarantine_after=2)
    tree = Tree()
    tree.chain("a", "g", 3)
    for label in ("s1", "s2", "s3"):
        tree.add(label, "a2")
    for label in ("g", "a1", "a2", "a3"):
        tracker.on_head("x", tree[label])
        tracker.on_head("y", tree[label])
    events = tracker.on_head("y", tree["s1"]) + tracker.on_head("y", tree["s2"])
    assert Quarantine("y", True, 2) in events
    assert tracker.tip is not None and tracker.tip.hash != tree.hash("s2")
    released = tracker.on_head("x", tree["s2"])
    # s1, no higher than the confirmed s2, stops counting too (heads.trust, Trust._forgive)
    assert Quarantine("y", False, 0) in released


def test_an_honest_fast_client_ahead_of_a_late_one_is_never_quarantined() -> None:
    chain = sealed_chain(300)
    tracker = ChainTracker(finality_depth=16, clients=2)
    events: list[Event] = []
    for i, header in enumerate(chain):
        events += tracker.on_head("fast", header)
        if i >= 3:
            events += tracker.on_head("late", chain[i - 3])
    assert not any(isinstance(e, Quarantine) for e in events)
    assert tracker.tip is not None and tracker.tip.hash == chain[-1]["hash"]


def test_a_held_announcement_after_the_tip_holder_left_does_not_move_the_tip_down() -> None:
    """Seen in the client-chaos suite: the tip holder is cut, a reconnected client's first head
    has a gap (held) while its last connected head is lower. Nobody announced that lower block
    just now, so the tip stays (the cut is no rollback); no flip down and back up."""
    tree = Tree()
    tree.chain("a", "g", 6)
    tracker = ChainTracker()
    for label in ("g", "a1", "a2", "a3"):
        tracker.on_head("x", tree[label])
    tracker.on_head("y", tree["a1"])
    tracker.on_disconnect("x")
    events = tracker.on_head("y", tree["a6"])  # a gap: held, y's head is still a1
    assert moves(events) == [] and NeedAncestor("y", tree.hash("a5")) in events
    assert tracker.tip is not None and tracker.tip.hash == tree.hash("a3")


def test_a_forged_chain_raced_ahead_block_by_block_is_quarantined() -> None:
    """Each forged block is the child of the one before (structure holds, hashes verify): the
    liar runs ahead of the honest client, which never confirms any of it."""
    chain = sealed_chain(10)
    tracker = ChainTracker(finality_depth=64, clients=2)
    for header in chain:
        tracker.on_head("honest", header)
        tracker.on_head("liar", header)
    parent = chain[-1]
    events: list[Event] = []
    for number in range(10, 1010):
        forged = sealed_header(number, parent["hash"], salt="race")
        events += tracker.on_head("liar", forged)
        parent = forged
    assert Quarantine("liar", True, 2) in events
    assert tracker.tip is not None and tracker.tip.hash == chain[-1]["hash"]
    # The fake height reached the tip only while the liar was within the allowed lead.
    assert max(e.tip.number for e in moves(events)) <= 9 + 4 + 1
    (ext,) = moves(tracker.on_head("honest", sealed_header(10, chain[-1]["hash"])))
    assert isinstance(ext, Extension) and tracker.tip.number == 10


def test_an_orphan_from_one_of_two_clients_right_after_start_does_not_re_anchor() -> None:
    chain = sealed_chain(5, start=100)
    tracker = ChainTracker(finality_depth=8, clients=2)
    tracker.on_head("honest", chain[0])
    events: list[Event] = []
    for i in range(50):  # before the liar ever agreed with anything: orphans 1,000+ ahead
        events += tracker.on_head("liar", sealed_header(1100 + i, f"0x{i + 1:064x}", salt="o"))
        events += tracker.on_head("honest", chain[min(i + 1, 4)])
    assert [e for e in events if isinstance(e, DeepReorg)] == []
    assert tracker.tip is not None and tracker.tip.hash == chain[-1]["hash"]

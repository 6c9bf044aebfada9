"""The chain tracker's rules, case by case (DESIGN.md §3)."""

from __future__ import annotations

from heads.events import DeepReorg, Event, Extension, NeedAncestor, Rejected, Reorg
from heads.tracker import ChainTracker
from tests.heads.chain import Tree, block_hash


def tip_changes(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, Extension | Reorg | DeepReorg)]


def hashes(tree: Tree, *labels: str) -> tuple[str, ...]:
    return tuple(tree.hash(label) for label in labels)


def test_first_head_anchors_the_chain_without_a_known_parent() -> None:
    tree = Tree(root="x", root_number=1000)
    tracker = ChainTracker()
    events = tracker.on_head("a", tree["x"])
    # An anchor above genesis asks for its parent: the window below it is filled by hash.
    assert [type(e) for e in events] == [Extension, NeedAncestor]
    assert events[1] == NeedAncestor("a", tree["x"]["parentHash"])
    assert tracker.tip is not None and tracker.tip.number == 1000


def test_the_window_below_the_anchor_is_backfilled_down_to_finality_depth() -> None:
    tree = Tree()
    labels = tree.chain("a", "g", 20)
    tracker = ChainTracker(finality_depth=5)
    events = tracker.on_head("x", tree["a20"])
    asked = [e.hash for e in events if isinstance(e, NeedAncestor)]
    while asked:
        block = next(tree[label] for label in labels if tree.hash(label) == asked[-1])
        events = tracker.on_block("x", block)
        requests = [e.hash for e in events if isinstance(e, NeedAncestor)]
        if not requests:
            break
        asked += requests
    assert asked == list(hashes(tree, "a19", "a18", "a17", "a16", "a15"))
    assert tracker.get(tree.hash("a15")) is not None
    assert tracker.tip and tracker.tip.hash == tree.hash("a20")


def test_a_child_of_the_tip_is_an_extension_not_a_reorg() -> None:
    tree = Tree()
    tree.chain("a", "g", 3)
    tracker = ChainTracker()
    tracker.on_head("a", tree["g"])
    for label in ("a1", "a2", "a3"):
        (event,) = tracker.on_head("a", tree[label])
        assert isinstance(event, Extension)
        assert tuple(b.hash for b in event.added) == hashes(tree, label)
    assert tracker.tip and tracker.tip.hash == tree.hash("a3")


def test_a_same_height_sibling_from_the_only_client_is_a_depth_one_reorg() -> None:
    tree = Tree()
    tree.add("a1", "g")
    tree.add("b1", "g")
    tracker = ChainTracker()
    tracker.on_head("c", tree["g"])
    tracker.on_head("c", tree["a1"])
    (event,) = tracker.on_head("c", tree["b1"])
    assert isinstance(event, Reorg)
    assert event.depth == 1
    assert event.ancestor.hash == tree.hash("g")
    assert tuple(b.hash for b in event.old) == hashes(tree, "a1")
    assert tuple(b.hash for b in event.new) == hashes(tree, "b1")


def test_a_rollback_to_an_ancestor_is_a_reorg_with_nothing_new() -> None:
    tree = Tree()
    tree.chain("a", "g", 3)
    tracker = ChainTracker()
    for label in ("g", "a1", "a2", "a3"):
        tracker.on_head("c", tree[label])
    (event,) = tracker.on_head("c", tree["a1"])
    assert isinstance(event, Reorg)
    assert event.ancestor.hash == tree.hash("a1")
    assert tuple(b.hash for b in event.old) == hashes(tree, "a2", "a3")
    assert event.new == ()
    assert event.depth == 2


def test_a_longer_branch_reorg_lists_old_and_new_blocks_ascending() -> None:
    tree = Tree()
    tree.chain("a", "g", 3)
    tree.chain("b", "g", 4)
    tracker = ChainTracker()
    for label in ("g", "a1", "a2", "a3"):
        tracker.on_head("x", tree[label])
    tracker.on_head("y", tree["b1"])  # lower than the tip: no change yet
    tracker.on_head("y", tree["b2"])
    tracker.on_head("y", tree["b3"])  # same height as a3, announced later: "latest" switches
    (event,) = tip_changes(tracker.on_head("y", tree["b4"]))
    assert isinstance(event, Extension)
    assert tracker.tip and tracker.tip.hash == tree.hash("b4")


def test_equal_heights_switch_to_the_latest_announcement_by_default() -> None:
    tree = Tree()
    tree.add("a1", "g")
    tree.add("b1", "g")
    tracker = ChainTracker()
    tracker.on_head("x", tree["g"])
    tracker.on_head("x", tree["a1"])
    (event,) = tracker.on_head("y", tree["b1"])
    assert isinstance(event, Reorg) and event.new[0].hash == tree.hash("b1")


def test_first_seen_keeps_the_block_seen_earliest_among_equal_heights() -> None:
    tree = Tree()
    tree.add("a1", "g")
    tree.add("b1", "g")
    tracker = ChainTracker(fork_choice="first-seen")
    tracker.on_head("x", tree["g"])
    tracker.on_head("x", tree["a1"])
    assert tracker.on_head("y", tree["b1"]) == []
    assert tracker.tip and tracker.tip.hash == tree.hash("a1")


def test_a_duplicate_announcement_changes_nothing_not_even_recency() -> None:
    tree = Tree()
    tree.add("a1", "g")
    tree.add("b1", "g")
    tracker = ChainTracker()
    tracker.on_head("x", tree["g"])
    tracker.on_head("x", tree["a1"])
    tracker.on_head("y", tree["b1"])  # tip -> b1 (latest)
    assert tracker.on_head("x", tree["a1"]) == []  # x repeats its head: still b1
    assert tracker.tip and tracker.tip.hash == tree.hash("b1")


def test_a_second_client_announcing_the_tip_changes_nothing() -> None:
    tree = Tree()
    tree.add("a1", "g")
    tracker = ChainTracker()
    tracker.on_head("x", tree["g"])
    tracker.on_head("x", tree["a1"])
    assert tracker.on_head("y", tree["a1"]) == []


def test_a_disconnect_does_not_move_the_tip() -> None:
    tree = Tree()
    tree.chain("a", "g", 2)
    tracker = ChainTracker()
    tracker.on_head("x", tree["g"])
    tracker.on_head("y", tree["a1"])
    tracker.on_head("x", tree["a2"])
    assert tracker.on_disconnect("x") == []  # a lost connection is not a rollback
    assert tracker.on_head("y", tree["a1"]) == []  # duplicate of y's head: nothing recomputed
    assert tracker.tip and tracker.tip.hash == tree.hash("a2")


def test_a_gap_asks_the_announcing_client_for_the_parent_by_hash() -> None:
    tree = Tree()
    tree.chain("a", "g", 3)
    tracker = ChainTracker()
    tracker.on_head("x", tree["g"])
    assert tracker.on_head("y", tree["a3"]) == [NeedAncestor("y", tree.hash("a2"))]
    assert tracker.tip and tracker.tip.hash == tree.hash("g")  # held: not a candidate yet
    assert tracker.on_block("y", tree["a2"]) == [NeedAncestor("y", tree.hash("a1"))]
    (event,) = tracker.on_block("y", tree["a1"])
    assert isinstance(event, Extension)
    assert tuple(b.hash for b in event.added) == hashes(tree, "a1", "a2", "a3")
    assert tracker.client_head("y") and tracker.client_head("y").hash == tree.hash("a3")  # type: ignore[union-attr]


def test_a_held_head_does_not_override_a_newer_announcement_when_it_connects() -> None:
    tree = Tree()
    tree.chain("a", "g", 3)
    tree.add("b1", "g")
    tracker = ChainTracker()
    tracker.on_head("x", tree["g"])
    tracker.on_head("y", tree["a3"])  # held
    tracker.on_head("y", tree["b1"])  # connects at once: y's head is b1
    tracker.on_block("y", tree["a2"])
    tracker.on_block("y", tree["a1"])  # a3 connects, but y announced b1 after it
    assert tracker.client_head("y") and tracker.client_head("y").hash == tree.hash("b1")  # type: ignore[union-attr]
    assert tracker.tip and tracker.tip.hash == tree.hash("b1")


def test_flip_flopping_clients_give_one_reorg_per_switch() -> None:
    tree = Tree()
    tree.chain("a", "g", 2)
    tree.chain("b", "g", 2)
    tracker = ChainTracker()
    tracker.on_head("x", tree["g"])
    tracker.on_head("x", tree["a1"])
    tracker.on_head("y", tree["b1"])
    (e1,) = tracker.on_head("x", tree["a2"])
    (e2,) = tracker.on_head("y", tree["b2"])
    assert isinstance(e1, Reorg) and isinstance(e2, Reorg)
    assert e1.depth == 1 and tuple(b.hash for b in e1.new) == hashes(tree, "a1", "a2")
    assert e2.depth == 2 and tuple(b.hash for b in e2.old) == hashes(tree, "a1", "a2")


def test_a_reorg_on_top_of_a_reorg_is_reported_against_the_current_chain() -> None:
    tree = Tree()
    tree.chain("a", "g", 3)
    tree.chain("b", "a1", 3)  # b1 is at height 2
    tree.chain("c", "b1", 3)  # nested fork off the new branch
    tracker = ChainTracker()
    for label in ("g", "a1", "a2", "a3"):
        tracker.on_head("x", tree[label])
    for label in ("b1", "b2"):
        tracker.on_head("x", tree[label])
    (nested,) = tracker.on_head("x", tree["c1"])
    assert isinstance(nested, Reorg)
    assert nested.ancestor.hash == tree.hash("b1")
    assert tuple(b.hash for b in nested.old) == hashes(tree, "b2")


def test_a_reorg_whose_ancestor_left_the_window_is_a_deep_reorg() -> None:
    tree = Tree()
    tree.chain("a", "g", 10)
    tree.chain("b", "g", 10)
    tracker = ChainTracker(finality_depth=4)
    tracker.on_head("x", tree["g"])
    for i in range(1, 11):
        tracker.on_head("x", tree[f"a{i}"])
    for i in range(1, 10):
        tracker.on_block("y", tree[f"b{i}"])  # backfilled data, below the window: ignored
    events = tracker.on_head("y", tree["b10"])
    changes = tip_changes(events)
    assert changes == [] or all(isinstance(e, DeepReorg) for e in changes)
    # b10's ancestry reaches below the window: "never guess" - re-anchor as a deep reorg.
    tracker2 = ChainTracker(finality_depth=4)
    tracker2.on_head("x", tree["g"])
    for i in range(1, 11):
        tracker2.on_head("x", tree[f"a{i}"])
    tracker2.on_head("y", tree["b10"])
    events = []
    for i in range(9, 5, -1):
        events += tracker2.on_block("y", tree[f"b{i}"])
    # Two clients are known, so y's word alone does not re-anchor (DESIGN.md §3, window) ...
    assert [e for e in events if isinstance(e, DeepReorg)] == []
    assert tracker2.tip and tracker2.tip.hash == tree.hash("a10")
    # ... x announcing the same head is the second voice: re-anchor, never guess.
    events = tracker2.on_head("x", tree["b10"])
    (deep,) = [e for e in events if isinstance(e, DeepReorg)]
    assert deep.reason == "ancestor_below_window"
    assert deep.new_tip.hash == tree.hash("b10")
    assert tracker2.tip and tracker2.tip.hash == tree.hash("b10")


def test_a_head_far_beyond_the_window_re_anchors_as_a_gap() -> None:
    tree = Tree()
    tree.chain("a", "g", 100)
    tracker = ChainTracker(finality_depth=8)
    tracker.on_head("x", tree["g"])
    (event,) = tracker.on_head("x", tree["a50"])
    assert isinstance(event, DeepReorg) and event.reason == "gap"
    (ext,) = tracker.on_head("x", tree["a51"])
    assert isinstance(ext, Extension)


def test_a_client_stuck_on_a_stale_fork_below_the_window_is_ignored() -> None:
    tree = Tree()
    tree.chain("a", "g", 20)
    tree.chain("s", "g", 3)
    tracker = ChainTracker(finality_depth=4)
    tracker.on_head("x", tree["g"])
    for i in range(1, 21):
        tracker.on_head("x", tree[f"a{i}"])
    events = tracker.on_head("y", tree["s3"])
    # s3's parent is below the window: no fetch, nothing changes.
    assert tip_changes(events) == []
    assert tracker.tip and tracker.tip.hash == tree.hash("a20")


def test_a_rejected_header_does_not_poison_the_store() -> None:
    tree = Tree()
    tree.add("a1", "g")
    tracker = ChainTracker()
    tracker.on_head("x", tree["g"])
    lie = dict(tree["a1"], number="0x-1")
    (rejected,) = tracker.on_head("x", lie)
    assert isinstance(rejected, Rejected) and rejected.reason == "malformed"
    (event,) = tracker.on_head("x", tree["a1"])
    assert isinstance(event, Extension)


def test_a_header_reusing_a_known_hash_with_another_parent_is_not_taken_as_known() -> None:
    tree = Tree()
    tree.chain("a", "g", 2)
    tracker = ChainTracker()
    for label in ("g", "a1", "a2"):
        tracker.on_head("x", tree[label])
    forged = dict(tree["a2"], parentHash=tree.hash("g"))
    tracker.on_head("y", forged)
    # Bare headers cannot be verified; the forged link must still not rewrite the stored block.
    assert tracker.get(tree.hash("a2")).parent_hash == tree.hash("a1")  # type: ignore[union-attr]


def test_malformed_headers_are_rejected_with_a_reason() -> None:
    tracker = ChainTracker()
    for bad in (
        {},
        {"number": "0x1", "hash": "0x12", "parentHash": "0x" + "00" * 32},
        {"number": "one", "hash": "0x" + "11" * 32, "parentHash": "0x" + "00" * 32},
        {"number": "0x1", "hash": "0x" + "11" * 32, "parentHash": None},
        {"number": [1], "hash": "0x" + "11" * 32, "parentHash": "0x" + "00" * 32},
    ):
        (event,) = tracker.on_head("x", bad)
        assert isinstance(event, Rejected) and event.reason == "malformed", bad
    assert tracker.tip is None


def test_every_internal_map_stays_bounded_by_the_window() -> None:
    tree = Tree()
    depth = 16
    tracker = ChainTracker(finality_depth=depth)
    tracker.on_head("x", tree["g"])
    parent = "g"
    for i in range(1, 3001):
        label = f"m{i}"
        tree.add(label, parent)
        if i % 7 == 0:  # an uncle-style competing block, announced by another client
            tree.add(f"u{i}", parent)
            tracker.on_head("y", tree[f"u{i}"])
        if i % 11 == 0:  # an orphan that never connects
            orphan = {
                "number": hex(i + 1),
                "hash": block_hash(f"o{i}"),
                "parentHash": block_hash(f"z{i}"),
            }
            tracker.on_head("z", orphan)
        tracker.on_head("x", tree[label])
        parent = label
    bound = 4 * (depth + 1) + 8
    for name, size in tracker.stats().items():
        assert size <= bound, (name, size)
    assert tracker.tip and tracker.tip.hash == tree.hash("m3000")


def test_a_fork_just_below_the_anchor_connects_through_the_anchors_parent() -> None:
    tree = Tree()
    tree.chain("a", "g", 3)  # g a1 a2 a3
    tree.chain("f", "a1", 2)  # fork at a1: f1 (height 2), f2 (height 3)
    tracker = ChainTracker()
    tracker.on_head("x", tree["a2"])  # anchors at a2; a1 (its parent) not fetched yet
    tracker.on_head("x", tree["a3"])
    assert tracker.on_head("y", tree["f2"]) == [NeedAncestor("y", tree.hash("f1"))]
    assert tracker.on_block("y", tree["f1"]) == [NeedAncestor("y", tree.hash("a1"))]
    events = tracker.on_block("y", tree["a1"])
    (event,) = tip_changes(events)
    assert isinstance(event, Reorg)
    assert event.ancestor.hash == tree.hash("a1")
    assert tuple(b.hash for b in event.old) == hashes(tree, "a2", "a3")
    assert tuple(b.hash for b in event.new) == hashes(tree, "f1", "f2")


def test_a_missing_ancestor_drops_what_waited_on_it() -> None:
    tree = Tree()
    tree.chain("a", "g", 3)
    tracker = ChainTracker()
    tracker.on_head("x", tree["g"])
    tracker.on_head("y", tree["a3"])
    tracker.on_block("y", tree["a2"])
    assert tracker.stats()["held"] == 2
    tracker.on_missing("y", tree.hash("a1"))
    assert tracker.stats()["held"] == 0

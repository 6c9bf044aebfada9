"""Adversarial review of rules v2 (issue 12): attacks on the pure tracker that once broke it.

Each test is one attack; it fails if the attack succeeds (see the report in the issue).
"""

from __future__ import annotations

from heads.events import DeepReorg, Event, Extension, Quarantine, Rejected, Reorg
from heads.tracker import ChainTracker
from tests.heads.chain import Tree, sealed_chain, sealed_header


def moves(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, Extension | Reorg | DeepReorg)]


def test_two_honest_clients_re_anchor_off_a_liars_far_ahead_start_up_anchor() -> None:
    """Three clients; the liar's orphan 1,000 ahead is the very first line while the liar is the
    only client connected (a lone connected client anchors, heads.startup). The two honest
    clients then agree on the real chain: two voices re-anchor on it, although the liar's fake
    head is higher, and the liar's fake chain never wins back (it has one voice)."""
    chain = sealed_chain(12, start=100)
    tracker = ChainTracker(finality_depth=8, clients=3)
    tracker.on_connect("liar")
    fake = sealed_header(1100, "0x" + "ee" * 32, salt="fake")
    tracker.on_head("liar", fake)
    events: list[Event] = []
    for i, header in enumerate(chain):
        events += tracker.on_head("a", header)
        events += tracker.on_head("b", header)
        fake = sealed_header(1101 + i, fake["hash"], salt="fake")
        events += tracker.on_head("liar", fake)  # the liar keeps its fake chain going
    assert tracker.tip is not None and tracker.tip.hash == chain[-1]["hash"]
    assert len([e for e in events if isinstance(e, DeepReorg)]) == 1  # one re-anchor, no return
    # A real reorg on the honest chain is still seen as one.
    sibling = sealed_header(111, chain[-2]["hash"], salt="reorg")
    after = tracker.on_head("a", sibling)
    after += tracker.on_head("b", sealed_header(112, sibling["hash"], salt="reorg"))
    after += tracker.on_head("liar", sealed_header(1112, fake["hash"], salt="fake"))
    (reorg,) = [e for e in after if isinstance(e, Reorg)]
    assert [b.hash for b in reorg.old] == [chain[-1]["hash"]]
    assert tracker.tip is not None and tracker.tip.number == 112


def test_one_liar_cannot_outvote_an_honest_anchor_with_three_clients() -> None:
    """The majority rule cuts both ways: the liar's far-ahead orphan, and a lower one, stay
    one voice against the honest anchor even when a third client is silent (``b`` agrees on
    the first block, the anchor, and says nothing after it)."""
    chain = sealed_chain(6, start=100)
    tracker = ChainTracker(finality_depth=8, clients=3)
    for name in ("liar", "a", "b"):
        tracker.on_connect(name)
    events: list[Event] = []
    for i, header in enumerate(chain):
        events += tracker.on_head("a", header)
        if i == 0:
            events += tracker.on_head("b", header)
        events += tracker.on_head("liar", sealed_header(2000 + i, f"0x{i + 1:064x}", salt="x"))
        events += tracker.on_head("liar", sealed_header(50 + i, f"0x{i + 7:064x}", salt="y"))
    assert [e for e in events if isinstance(e, DeepReorg)] == []
    assert tracker.tip is not None and tracker.tip.hash == chain[-1]["hash"]


def test_a_quarantined_liar_racing_a_forged_chain_ahead_keeps_memory_bounded() -> None:
    """The forged chain hangs off the real tip, so each forged block connects: stored blocks
    must still be bounded by the window, not by how far the liar races."""
    depth = 8
    chain = sealed_chain(10)
    tracker = ChainTracker(finality_depth=depth, clients=2)
    for header in chain:
        tracker.on_head("honest", header)
        tracker.on_head("liar", header)
    parent = chain[-1]["hash"]
    for number in range(10, 3000):
        forged = sealed_header(number, parent, salt="forged")
        tracker.on_head("liar", forged)
        parent = forged["hash"]
    assert tracker.tip is not None and tracker.tip.number <= 9 + 5
    sizes = tracker.stats()
    assert max(sizes.values()) <= 8 * (depth + 32 + 1), sizes
    (ext,) = moves(tracker.on_head("honest", sealed_header(10, chain[-1]["hash"])))
    assert isinstance(ext, Extension)


def test_a_flood_of_held_orphans_does_not_evict_an_honest_held_head() -> None:
    """The liar fills the held set with orphans (unknown parents) inside the window; the honest
    client's held head, waiting for its backfilled parent, must survive and connect."""
    chain = sealed_chain(12)
    tracker = ChainTracker(finality_depth=8, clients=2)
    for header in chain[:10]:
        tracker.on_head("honest", header)
        tracker.on_head("liar", header)
    tracker.on_head("honest", chain[11])  # held: its parent chain[10] is asked for
    for i in range(500):
        tracker.on_head("liar", sealed_header(10 + i % 8, f"0x{i + 1:064x}", salt="orphan"))
    tracker.on_block("honest", chain[10])
    assert tracker.tip is not None and tracker.tip.hash == chain[11]["hash"]
    assert tracker.stats()["held"] <= 4 * (8 + 1)


def test_a_forged_branch_kept_one_block_ahead_of_the_honest_tip_is_quarantined() -> None:
    """The liar forks two below the tip and always stays one block above the honest client:
    within the run-ahead lead, one self-fork only. Its branch is built alone against the honest
    client's progress; it must be quarantined and the tip end on the honest chain."""
    chain = sealed_chain(30)
    tracker = ChainTracker(finality_depth=64, clients=2)
    for header in chain[:10]:
        tracker.on_head("honest", header)
        tracker.on_head("liar", header)
    events: list[Event] = []
    parent, number = chain[7]["hash"], 8
    for i in range(10, 30):
        while number <= i + 1:
            forged = sealed_header(number, parent, salt="forged")
            events += tracker.on_head("liar", forged)
            parent, number = forged["hash"], number + 1
        events += tracker.on_head("honest", chain[i])
    assert tracker.tip is not None and tracker.tip.hash == chain[29]["hash"]
    assert "liar" in tracker.trust.quarantined
    assert len([e for e in events if isinstance(e, Reorg)]) <= 2  # onto the forgery and back


def test_a_late_copy_of_the_abandoned_tip_above_the_new_branch_does_not_flip_back() -> None:
    """The client-chaos suite's 202 reorgs for 200 (seed 120844030, 200 rounds, replayed from
    its recording): the tip holder ``a`` is gone; ``c`` is at the old tip 20 when
    ``anvil_reorg 10`` re-mines 11'..20' and starts announcing them; ``b``, just connected,
    then delivers its (late) copy of the old 20, higher than ``c`` has got so far. Rules v1
    flipped back to the old chain and forth again: three reorgs for one. One reorg, the
    injected one, with its depth and ancestor."""
    tree = Tree()
    old = tree.chain("o", "g", 20)
    new = tree.chain("n", old[9], 10)  # re-mined 11'..20' on block 10
    tracker = ChainTracker(clients=3)
    for name in ("a", "b", "c"):
        tracker.on_connect(name)
    events: list[Event] = []
    for label in ["g", *old]:
        events += tracker.on_head("a", tree[label])
        if label == "g":  # two clients agree on the anchor (heads.startup); b then drops out
            events += tracker.on_head("b", tree[label])
            tracker.on_disconnect("b")
    tracker.on_disconnect("a")
    tracker.on_disconnect("b")
    events += tracker.on_head("c", tree[old[-1]])
    tracker.on_connect("b")
    for label in new[:7]:  # c announces 11'..17'
        events += tracker.on_head("c", tree[label])
    events += tracker.on_head("b", tree[old[-1]])  # b's late copy of the abandoned 20
    for label in new[7:]:
        events += tracker.on_head("c", tree[label])
    for label in new:
        events += tracker.on_head("b", tree[label])
    (reorg,) = [e for e in events if isinstance(e, Reorg)]
    assert reorg.ancestor.hash == tree.hash(old[9]) and reorg.depth == 10
    assert tracker.tip is not None and tracker.tip.hash == tree.hash(new[-1])
    # The old branch wins again when it really grows (a block first seen after the new
    # branch) and, 10 deep, once a second client is on it (heads6: the one-voice rule; on b's
    # word alone against c's chain it would be a lagging liar's deep fork,
    # test_two_clients_a_lagging_liar_cannot_freeze_the_tip_and_then_fork_it).
    tree.add("o21", old[-1])
    tree.add("o22", "o21")
    grown = tracker.on_head("b", tree["o21"]) + tracker.on_head("b", tree["o22"])
    assert [e for e in grown if isinstance(e, Reorg)] == []
    grown = tracker.on_head("c", tree[old[-1]]) + tracker.on_head("c", tree["o21"])
    (back,) = [e for e in grown if isinstance(e, Reorg)]
    assert tracker.tip.hash == tree.hash("o22") and back.depth == 10


def test_a_client_stepping_sideways_onto_the_tip_turns_the_late_copy_rule_off() -> None:
    """The reference model's counterexample (pinned in ``test_tracker_properties``): the tip
    is ``n1`` after ``a`` reorged down from ``o3``; ``a``'s late copy ``o2`` and ``b``'s late
    copy ``o3`` are skipped (first seen before ``n1``). ``a`` then steps sideways from ``o2``
    to ``n2``, a block on top of the tip: a client stepping down or sideways turns the
    late-copy rule off, so the plain ranking decides and ``b``'s higher ``o3`` wins. The
    one-block-on-top fast path used to take ``n2`` without looking at the other candidates."""
    tree = Tree()
    old = tree.chain("o", "g", 3)
    tree.chain("n", "g", 2)
    tracker = ChainTracker(finality_depth=10_000, clients=2, quarantine_after=10**9)
    tracker.on_head("a", tree["g"])
    tracker.on_head("a", tree["o3"])
    tracker.on_block("a", tree["o2"])
    tracker.on_block("a", tree["o1"])
    assert tracker.tip is not None and tracker.tip.hash == tree.hash("o3")
    tracker.on_head("a", tree["n1"])  # a steps down: the tip follows
    assert tracker.tip.hash == tree.hash("n1")
    assert moves(tracker.on_head("a", tree["o2"])) == []  # late copies: skipped
    assert moves(tracker.on_head("b", tree["o3"])) == []
    (reorg,) = moves(tracker.on_head("a", tree["n2"]))
    assert isinstance(reorg, Reorg) and reorg.tip.hash == tree.hash(old[-1])
    assert reorg.depth == 1 and reorg.ancestor.hash == tree.hash("g")


def test_a_backfill_that_makes_no_live_head_current_leaves_the_tip() -> None:
    """The reference model's counterexample (pinned in ``test_tracker_properties``): ``a``'s
    held ``o5`` is stale after ``a``'s disconnect. After ``a`` is back with ``p1``, the tip is
    ``p1`` while ``b``'s ``p2`` (a child of ``p1``, skipped against the old tip ``q1`` as a
    late copy) waits. Backfilling ``o5``'s ancestry makes no live head current, so the tip is
    not recomputed (the tracker used to recompute on any backfill while something was held)."""
    tree = Tree()
    tree.chain("o", "g", 5)
    tree.chain("p", "g", 2)
    tree.add("q1", "g")
    tracker = ChainTracker(finality_depth=10_000, clients=3, quarantine_after=10**9)
    tracker.on_head("a", tree["g"])
    tracker.on_head("a", tree["o5"])  # held: asks for o4
    tracker.on_head("b", tree["p2"])  # held: asks for p1
    tracker.on_disconnect("a")
    tracker.on_block("a", tree["o4"])
    tracker.on_head("c", tree["q1"])
    assert tracker.tip is not None and tracker.tip.hash == tree.hash("q1")
    tracker.on_block("b", tree["p1"])  # b's p2 connects: a late copy, skipped
    assert tracker.tip.hash == tree.hash("q1")
    tracker.on_block("a", tree["o3"])
    tracker.on_block("a", tree["o2"])
    assert len(moves(tracker.on_head("a", tree["p1"]))) == 1  # the newest sibling at height 1
    assert tracker.tip.hash == tree.hash("p1")
    assert moves(tracker.on_block("a", tree["o1"])) == []  # a's stale o5 connects: no move


def test_a_late_copy_of_the_tip_is_recomputed_like_any_announcement() -> None:
    """The reference model's counterexample (pinned in ``test_tracker_properties``), rule
    ``first-seen``: ``c``'s ``x2`` (first seen before the tip ``y1``) is skipped as a late copy
    while higher than the tip; ``b``'s newer sibling ``z2`` wins. ``a`` then announces ``z2``
    (no duplicate for ``a``): the tip is recomputed (DESIGN.md §3), and ``x2``, no longer above
    the tip, outranks ``z2`` under first-seen. The tracker used to skip a copy of the tip."""
    tree = Tree()
    tree.add("x1", "g")
    tree.add("x2", "x1")
    tree.add("z2", "x1")
    tree.add("y1", "g")
    tracker = ChainTracker(
        finality_depth=10_000, fork_choice="first-seen", clients=3, quarantine_after=10**9
    )
    tracker.on_head("a", tree["g"])
    tracker.on_head("c", tree["x2"])  # held: asks for x1
    tracker.on_head("a", tree["y1"])
    assert moves(tracker.on_block("c", tree["x1"])) == []  # x2 connects: a late copy
    assert tracker.tip is not None and tracker.tip.hash == tree.hash("y1")
    tracker.on_head("b", tree["z2"])
    assert tracker.tip.hash == tree.hash("z2")
    (reorg,) = moves(tracker.on_head("a", tree["z2"]))
    assert isinstance(reorg, Reorg) and reorg.tip.hash == tree.hash("x2") and reorg.depth == 1


def test_an_honest_client_outrunning_a_stuck_but_connected_peer_keeps_the_tip_moving() -> None:
    """A peer stays connected but stops making progress: it re-sends its old head. The pure
    tracker cannot tell it from an honest client outrun by a forged race, so the live subscriber's
    progress watchdog does (no new block for ``watchdog_seconds`` -> ``disconnected``, re-sent old
    heads held back after the reconnect; test_subscriber.py pins that half). Modelled here: the
    stuck peer's ``disconnected`` comes before the honest client is 5 blocks ahead (30 s at
    12 s slots is 2.5 blocks), its reconnect brings nothing; the honest chain stays the tip and
    is never quarantined, and a real new block from the peer confirms it again."""
    chain = sealed_chain(40)
    tracker = ChainTracker(finality_depth=64, clients=2)
    tracker.on_connect("honest")
    tracker.on_connect("stuck")
    events: list[Event] = []
    for i, header in enumerate(chain):
        events += tracker.on_head("honest", header)
        if i < 20:
            events += tracker.on_head("stuck", header)
        elif i < 23:
            events += tracker.on_head("stuck", chain[19])  # its old head, again and again
        if i == 22:  # the watchdog: no new block from it for a period
            events += tracker.on_disconnect("stuck")
            events += tracker.on_connect("stuck")  # it reconnects; its old heads are held back
        assert tracker.tip is not None and tracker.tip.hash == header["hash"], i
    assert [e for e in events if isinstance(e, Quarantine)] == []
    assert [e for e in events if isinstance(e, Reorg | DeepReorg)] == []
    # The peer recovers: its new blocks are the honest chain's, the tip keeps moving with both.
    grown = [sealed_header(40, chain[-1]["hash"])]
    grown.append(sealed_header(41, grown[0]["hash"]))
    for header in chain[20:] + grown:
        events += tracker.on_head("stuck", header)
    for header in grown:
        events += tracker.on_head("honest", header)
    assert tracker.tip is not None and tracker.tip.hash == grown[-1]["hash"]
    assert [e for e in events if isinstance(e, Quarantine)] == []


def test_without_the_watchdogs_disconnect_a_stuck_peer_still_freezes_the_tip() -> None:
    """The limit the adapter covers: the pure core alone quarantines the honest client once it
    is more than 4 blocks ahead of a connected peer re-sending its old head (no clock)."""
    chain = sealed_chain(40)
    tracker = ChainTracker(finality_depth=64, clients=2)
    events: list[Event] = []
    for i, header in enumerate(chain):
        events += tracker.on_head("honest", header)
        events += tracker.on_head("stuck", chain[min(i, 19)])
    assert [(e.client, e.active) for e in events if isinstance(e, Quarantine)][:1] == [
        ("honest", True)
    ]
    assert tracker.tip is not None and tracker.tip.hash != chain[-1]["hash"]


def test_a_liars_bare_backfill_cannot_rewire_an_honest_held_head() -> None:
    """Issue 12, item 4. The honest client's ``a5`` is held (``a4`` unknown). The liar announces
    its own ``x5`` on the same parent, so it is asked for ``a4`` too, and answers first with a
    bare header (unverifiable: number, hash, parentHash only) that puts ``a4`` on ``s3``, the
    sibling ``a3`` replaced. On its word ``a5`` would connect through ``s3`` (a fake reorg of
    ``a3``) and the genuine ``a4`` be refused as a conflict. A bare backfill only wires blocks
    its own client brought or announced; with another client's block waiting on it, it needs
    a second client's agreeing reply. One liar against one honest client: ``a5`` stays held
    (no rewire, no fake reorg, the genuine ``a4`` not refused); a third client's agreeing reply
    connects it as an extension."""
    tree = Tree()
    tree.chain("a", "g", 5)
    tree.add("s3", "a2")
    tracker = ChainTracker(clients=3)
    for label in ("g", "a1", "a2", "s3", "a3"):  # s3, then a reorg to a3
        tracker.on_head("honest", tree[label])
        tracker.on_head("liar", tree[label])
        tracker.on_head("third", tree[label])
    assert tracker.tip is not None and tracker.tip.hash == tree.hash("a3")
    tracker.on_head("honest", tree["a5"])  # held: asks honest for a4
    x5 = {"number": hex(5), "hash": "0x" + "55" * 32, "parentHash": tree.hash("a4")}
    tracker.on_head("liar", x5)  # held on a4 too: asks the liar for a4
    fake_a4 = {"number": hex(4), "hash": tree.hash("a4"), "parentHash": tree.hash("s3")}
    assert tracker.on_block("liar", fake_a4) == []
    assert tracker.get(tree.hash("a4")) is None
    events = tracker.on_block("honest", tree["a4"])
    assert [e for e in events if isinstance(e, Reorg | Rejected)] == []
    assert tracker.tip.hash == tree.hash("a3") and tracker.get(tree.hash("a4")) is None
    tracker.on_head("third", tree["a5"])  # held: the third client is asked for a4 as well
    events = tracker.on_block("third", tree["a4"])
    assert [e for e in events if isinstance(e, Reorg | Rejected)] == []
    # the tip is at 5 (a5, or the liar's x5: its newer sibling on the genuine a4) through a3
    assert tracker.tip is not None and tracker.tip.number == 5
    assert [b.hash for b in tracker.canonical_chain()[-3:-1]] == [tree.hash("a3"), tree.hash("a4")]


def test_a_bare_backfill_still_wires_its_own_clients_held_blocks() -> None:
    """Bare headers are all some nodes give: a client's backfill of its own held head's parent
    connects it as before."""
    tree = Tree()
    tree.chain("a", "g", 5)
    tracker = ChainTracker(clients=2)
    for label in ("g", "a1", "a2", "a3"):
        tracker.on_head("x", tree[label])
        tracker.on_head("y", tree[label])
    tracker.on_head("x", tree["a5"])
    tracker.on_head("y", tree["a5"])  # both announced it: either one's bare reply connects it
    tracker.on_block("y", tree["a4"])
    assert tracker.tip is not None and tracker.tip.hash == tree.hash("a5")

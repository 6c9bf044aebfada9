"""Client-chaos findings (issue 12), pinned offline: honest bursts are no run ahead.

``tests/fixtures/chaos/client-chaos-seed10070258.jsonl.gz`` is the tracker's feed of the
client-chaos suite (``RELIABILITY_SEED=10070258``, 12 rounds, ``RELIABILITY_CHAOS_RECORD``) that
reported 13 reorgs for 12 injected: after ``anvil_reorg 9`` the fast client ``b`` announced the
whole re-mined branch 28'..36' in one burst while ``c`` was still at 28'; from 33' on ``b`` was
more than four blocks ahead of every other client, so its blocks counted as a forged race, ``b``
was quarantined and the tip fell back to ``c``'s 28' (a reorg with nothing new, DESIGN.md §3's
"several unconfirmed blocks" read on a burst), then forward again when ``c`` caught up.
"""

from __future__ import annotations

from pathlib import Path

from heads.events import DeepReorg, Event, Extension, Quarantine, Reorg
from heads.recording import iter_recording
from heads.tracker import ChainTracker
from tests.heads.chain import Tree, sealed_chain, sealed_header

CHAOS = Path(__file__).resolve().parents[1] / "fixtures" / "chaos"

# What anvil_reorg injected in that run (depth, ancestor number, ancestor hash prefix), in order.
INJECTED_SEED_10070258 = [
    (10, 18, "0xbc5242b9"),
    (6, 24, "0x137bcd6a"),
    (10, 21, "0x271282cd"),
    (1, 31, "0xd5fe3be7"),
    (9, 27, "0x5fafa37c"),
    (3, 34, "0xe1df5818"),
    (6, 34, "0xe1df5818"),
    (2, 39, "0x1b8834e2"),
    (5, 39, "0x1b8834e2"),
    (6, 45, "0x62ef2c08"),
    (2, 52, "0x153ea14a"),
    (9, 47, "0x959dc71f"),
]


def moves(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, Extension | Reorg | DeepReorg)]


def replay_chaos(name: str) -> tuple[list[Event], ChainTracker]:
    tracker = ChainTracker(finality_depth=64, clients=3)
    events: list[Event] = []
    for line in iter_recording(CHAOS / name):
        if line.kind == "head":
            assert line.header is not None
            events += tracker.on_head(line.client, line.header)
        elif line.kind == "block":
            assert line.header is not None
            events += tracker.on_block(line.client, line.header)
        elif line.event == "disconnected":
            events += tracker.on_disconnect(line.client)
        elif line.event == "connected":
            events += tracker.on_connect(line.client)
    return events, tracker


def test_the_chaos_recording_replays_to_exactly_the_injected_reorgs() -> None:
    events, tracker = replay_chaos("client-chaos-seed10070258.jsonl.gz")
    reorgs = [e for e in events if isinstance(e, Reorg)]
    got = [(r.depth, r.ancestor.number, r.ancestor.hash[:10]) for r in reorgs]
    assert got == INJECTED_SEED_10070258
    assert all(r.new for r in reorgs), "a reorg onto an ancestor: the tip fell back"
    assert [e for e in events if isinstance(e, DeepReorg)] == []
    assert tracker.tip is not None and tracker.tip.ref() == {
        "number": 62,
        "hash": "0xbef5a29e2e85606d696923edf4b0fb0aacb4f7cafda97d64b7c05bbd23943fc5",
    }
    # The burst quarantines nobody; the one quarantine left is b's second reorg while its only
    # other connected peer (a) was stalled and c cut: no other client could confirm anything.
    assert [(e.client, e.active) for e in events if isinstance(e, Quarantine)] == [
        ("b", True),
        ("b", False),
    ]


def test_a_reorg_burst_from_the_fast_client_is_no_run_ahead() -> None:
    """The recording's pattern, minimal: ``b`` and ``c`` at 36; ``anvil_reorg 9`` re-mines
    28'..36'; ``b`` announces all of it before ``c`` gets past 28'. Climbing back up to the
    height it stood at before its own reorg is not running ahead: one reorg, no quarantine, no
    fall back; ``c``'s late copies change nothing."""
    tree = Tree()
    old = tree.chain("o", "g", 36)
    new = tree.chain("n", old[26], 9)  # n1..n9 = 28'..36' on block 27
    tracker = ChainTracker(clients=3)
    for name in ("a", "b", "c"):
        tracker.on_connect(name)
    tracker.on_disconnect("a")
    events: list[Event] = []
    for label in ["g", *old]:
        events += tracker.on_head("b", tree[label])
        events += tracker.on_head("c", tree[label])
    events += tracker.on_head("b", tree[new[0]])
    events += tracker.on_head("c", tree[new[0]])
    for label in new[1:]:
        events += tracker.on_head("b", tree[label])
        assert tracker.tip is not None and tracker.tip.hash == tree.hash(label)
    for label in new[1:]:
        events += tracker.on_head("c", tree[label])
    assert [e for e in events if isinstance(e, Quarantine)] == []
    (reorg,) = [e for e in events if isinstance(e, Reorg)]
    assert reorg.depth == 9 and reorg.ancestor.hash == tree.hash(old[26])
    assert tracker.tip is not None and tracker.tip.hash == tree.hash(new[-1])


def test_a_burst_past_the_height_before_the_reorg_is_a_run_ahead_again() -> None:
    """The allowance ends at the height the client stood at: a client that steps down and
    then runs more than the lead above it, with nobody confirming, is quarantined."""
    tree = Tree()
    old = tree.chain("o", "g", 10)
    new = tree.chain("n", old[7], 12)  # 9'..20' on block 8
    tracker = ChainTracker(clients=2)
    for label in ["g", *old]:
        tracker.on_head("b", tree[label])
        tracker.on_head("c", tree[label])
    events: list[Event] = []
    for label in new:
        events += tracker.on_head("b", tree[label])
    assert ("b", True) in [(e.client, e.active) for e in events if isinstance(e, Quarantine)]
    # c never followed: the tip stays within the lead of c's chain's height
    assert tracker.tip is not None and tracker.tip.number <= 10 + 4 + 1


def test_a_liar_stepping_down_from_its_forged_race_gains_no_allowance() -> None:
    """The racing liar (``test_a_forged_chain_raced_ahead_block_by_block_is_quarantined``) that
    steps down from its unconfirmed forged head and races again: the height of a forged,
    unconfirmed head earns nothing, so it stays quarantined and the tip honest."""
    chain = sealed_chain(10)
    tracker = ChainTracker(finality_depth=64, clients=2)
    for header in chain:
        tracker.on_head("honest", header)
        tracker.on_head("liar", header)
    events: list[Event] = []
    parent = chain[-1]
    for number in range(10, 40):
        forged = sealed_header(number, parent["hash"], salt="race")
        events += tracker.on_head("liar", forged)
        parent = forged
    assert "liar" in tracker.trust.quarantined
    parent = chain[-1]
    for number in range(10, 40):  # a second forged race from the honest tip
        forged = sealed_header(number, parent["hash"], salt="again")
        events += tracker.on_head("liar", forged)
        parent = forged
    assert "liar" in tracker.trust.quarantined
    assert tracker.tip is not None and tracker.tip.hash == chain[-1]["hash"]
    assert max(e.tip.number for e in moves(events)) <= 9 + 4 + 1
    (ext,) = moves(tracker.on_head("honest", sealed_header(10, chain[-1]["hash"])))
    assert isinstance(ext, Extension) and tracker.tip.number == 10


def test_a_confirmed_reorg_forgives_the_clients_older_unconfirmed_reorg_blocks() -> None:
    """The client-chaos suite's other false alarm (seed 10070258, 200 rounds: 12 honest
    quarantines): while its peer was silent, ``x`` announced a reorg (8') that the next reorg
    replaced before any peer saw it, so 8' is never confirmed. Once the peer confirms ``x``'s
    later reorg block, the older one stops counting: the reorg after that quarantines nobody.
    (It used to stay one self-fork short of quarantine for a whole window.)"""
    tree = Tree()
    old = tree.chain("o", "g", 10)
    tree.chain("p", old[6], 3)  # 8'..10' on block 7: x's first reorg, never seen by y
    second = tree.chain("q", old[6], 4)  # 8''..11'': the reorg that replaced it
    third = tree.chain("r", second[1], 3)  # 10'''..12''': the next reorg
    tracker = ChainTracker(clients=2)
    for label in ["g", *old]:
        tracker.on_head("x", tree[label])
        tracker.on_head("y", tree[label])
    events: list[Event] = []
    for label in ("p1", "p2", "p3", *second):  # y is silent meanwhile
        events += tracker.on_head("x", tree[label])
    for label in second:
        events += tracker.on_head("y", tree[label])
    assert tracker.trust.unconfirmed.get("x") == 0
    for label in third:
        events += tracker.on_head("x", tree[label])
    assert "x" not in tracker.trust.quarantined
    assert tracker.tip is not None and tracker.tip.hash == tree.hash(third[-1])
    for label in third:
        events += tracker.on_head("y", tree[label])
    assert [e.active for e in events if isinstance(e, Quarantine)] in ([], [True, False])


def test_a_just_reconnected_client_delivering_the_burst_is_no_run_ahead() -> None:
    """The same burst from a client that did not reorg itself (seed 155200544, 200 rounds, 201
    for 200): ``a`` was cut on the old chain at 10; ``b`` follows it to 20, reorgs to 12'; ``a``
    comes back and delivers 12'..20' while ``b`` is at 13'. ``a`` never stood at 20, but the
    chain did: heights where the store holds a confirmed-or-never-suspect block of another
    branch are no run ahead. One reorg, no quarantine, no fall back."""
    tree = Tree()
    old = tree.chain("o", "g", 20)
    new = tree.chain("n", old[10], 9)  # 12'..20' on block 11
    tracker = ChainTracker(clients=2)
    events: list[Event] = []
    for label in ["g", *old[:10]]:
        events += tracker.on_head("a", tree[label])
        events += tracker.on_head("b", tree[label])
    tracker.on_disconnect("a")
    for label in old[10:]:
        events += tracker.on_head("b", tree[label])
    events += tracker.on_head("b", tree[new[0]])
    events += tracker.on_head("b", tree[new[1]])
    tracker.on_connect("a")
    for label in new:
        events += tracker.on_head("a", tree[label])
        if label not in new[:2]:  # b already announced 12' and 13'
            assert tracker.tip is not None and tracker.tip.hash == tree.hash(label)
    for label in new[2:]:
        events += tracker.on_head("b", tree[label])
    assert [e for e in events if isinstance(e, Quarantine)] == []
    (reorg,) = [e for e in events if isinstance(e, Reorg)]
    assert reorg.depth == 9 and reorg.ancestor.hash == tree.hash(old[10])

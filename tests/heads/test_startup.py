"""The first tip needs two agreeing clients while two are connected (heads.startup, issue 12).

DESIGN.md §3: with two or more clients configured, no re-anchor on one client's word. The
start-up anchor is the same decision: with exactly two clients, a liar whose far-ahead orphan
was the first line used to anchor the chain, and the honest client (one voice against one)
could never re-anchor off it.
"""

from __future__ import annotations

import pytest

from heads.events import DeepReorg, Event, Extension, NeedAncestor, Quarantine, Reorg
from heads.startup import StartupVotes
from heads.tracker import ChainTracker
from tests.heads.chain import sealed_chain, sealed_header


def moves(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, Extension | Reorg | DeepReorg)]


def test_two_clients_a_liars_far_ahead_first_line_never_becomes_the_tip() -> None:
    chain = sealed_chain(12, start=100)
    tracker = ChainTracker(finality_depth=8, clients=2)
    tracker.on_connect("liar")
    tracker.on_connect("honest")
    fake = sealed_header(1100, "0x" + "ee" * 32, salt="fake")
    events = tracker.on_head("liar", fake)
    assert events == [] and tracker.tip is None  # one voice while another client listens
    for i, header in enumerate(chain):
        events += tracker.on_head("honest", header)
        fake = sealed_header(1101 + i, fake["hash"], salt="fake")
        events += tracker.on_head("liar", fake)
    # neither voice alone anchors: no tip, rather than the liar's (or a guess)
    assert tracker.tip is None and moves(events) == []
    assert tracker.stats()["startup"] <= 2 * (8 + 1)  # bounded by the window per client


def test_two_clients_anchor_on_the_first_block_both_announce_and_catch_up() -> None:
    """The honest pair: b lags a by two blocks. The anchor is the first block both announced
    (first seen at a's line); what a announced above it before is dropped, not replayed (one
    voice running ahead), and the window below the anchor is asked for. a's next block is held
    until b brings its parent, then the tip follows: no reorg, no quarantine."""
    chain = sealed_chain(10, start=50)
    tracker = ChainTracker(finality_depth=8, clients=2)
    tracker.on_connect("a")
    tracker.on_connect("b")
    events: list[Event] = []
    for header in chain[:3]:
        events += tracker.on_head("a", header)
    assert tracker.tip is None
    events += tracker.on_head("b", chain[0])
    assert tracker.tip is not None and tracker.tip.hash == chain[0]["hash"]
    assert NeedAncestor("a", chain[0]["parentHash"]) in events
    for i in range(3, 10):
        events += tracker.on_head("a", chain[i])
        events += tracker.on_head("b", chain[i - 2])
    events += tracker.on_head("b", chain[8])
    events += tracker.on_head("b", chain[9])
    assert [e for e in events if isinstance(e, Reorg | DeepReorg | Quarantine)] == []
    assert tracker.tip.hash == chain[-1]["hash"]


def test_an_honest_start_up_burst_before_the_agreement_is_no_run_ahead() -> None:
    """client-chaos seed 1065625295: anvil mined 12 blocks while the clients connected; c
    delivered 2..13 before b delivered 2. Replaying c's burst after the agreement on 2 counted
    it as a run ahead of b: c was quarantined and the tip fell back from 7 to 2 (a reorg onto
    an ancestor, 201 for 200). Dropped instead: b's copies move the tip, block by block."""
    chain = sealed_chain(14)
    tracker = ChainTracker(clients=3)
    for name in ("a", "b", "c"):
        tracker.on_connect(name)
    events: list[Event] = []
    for header in chain[2:]:
        events += tracker.on_head("c", header)
    for header in chain[2:]:
        events += tracker.on_head("b", header)
        assert tracker.tip is not None and tracker.tip.hash == header["hash"]
    for header in chain[2:]:
        events += tracker.on_head("a", header)
    assert [e for e in events if isinstance(e, Reorg | DeepReorg | Quarantine)] == []


def test_a_liar_racing_before_the_agreement_gains_nothing() -> None:
    """Both connected; the liar forges a chain on the real first block before the honest client
    confirms it. Its run ahead is dropped at the agreement (one voice), and what it forges
    after that has a parent the tracker never stored: the tip only ever holds honest blocks."""
    chain = sealed_chain(4, start=10)
    honest = {h["hash"] for h in chain}
    tracker = ChainTracker(finality_depth=64, clients=2)
    tracker.on_connect("liar")
    tracker.on_connect("honest")
    events = tracker.on_head("liar", chain[0])
    parent = chain[0]
    for number in range(11, 40):
        forged = sealed_header(number, parent["hash"], salt="race")
        events += tracker.on_head("liar", forged)
        parent = forged
    assert tracker.tip is None
    events += tracker.on_head("honest", chain[0])
    for header in chain[1:]:
        events += tracker.on_head("honest", header)
        forged = sealed_header(int(parent["number"], 16) + 1, parent["hash"], salt="race")
        events += tracker.on_head("liar", forged)
        parent = forged
    assert tracker.tip is not None and tracker.tip.hash == chain[-1]["hash"]
    assert all(e.tip.hash in honest for e in moves(events))


def test_a_lone_connected_client_anchors_on_its_own_word() -> None:
    """The other configured client is down (or kept out for another chain id): no voice."""
    chain = sealed_chain(3)
    tracker = ChainTracker(clients=2)
    (ext,) = moves(tracker.on_head("a", chain[0]))
    assert isinstance(ext, Extension) and tracker.tip is not None
    assert tracker.tip.hash == chain[0]["hash"]


def test_a_client_disconnecting_before_the_agreement_takes_its_votes_along() -> None:
    chain = sealed_chain(3)
    tracker = ChainTracker(clients=3)
    for name in ("a", "b", "c"):
        tracker.on_connect(name)
    tracker.on_head("a", chain[0])
    tracker.on_disconnect("a")
    assert tracker.on_head("b", chain[0]) == []  # a's stale word does not count
    assert tracker.tip is None
    tracker.on_head("c", chain[0])
    assert tracker.tip is not None and tracker.tip.hash == chain[0]["hash"]


def test_a_same_hash_claimed_with_another_parent_is_no_agreement() -> None:
    chain = sealed_chain(2)
    tracker = ChainTracker(clients=2, verify=False)
    tracker.on_connect("a")
    tracker.on_connect("b")
    tracker.on_head("a", chain[1])
    forged = dict(chain[1], parentHash="0x" + "77" * 32)
    assert tracker.on_head("b", forged) == [] and tracker.tip is None


def test_replay_of_a_recording_with_clients_unknown_anchors_as_before() -> None:
    """``clients=None`` (``broadcaster replay`` without ``--clients``) keeps the first-line
    anchor: committed recordings replay to the same reorgs."""
    chain = sealed_chain(2)
    tracker = ChainTracker()
    tracker.on_connect("a")
    tracker.on_connect("b")
    assert moves(tracker.on_head("a", chain[0]))


def test_startup_votes_are_bounded_per_client() -> None:
    votes = StartupVotes(per_client=3)
    chain = sealed_chain(10)
    tracker = ChainTracker(verify=False)  # only to parse heads
    for header in chain:
        tracker.on_head("x", header)
    for header in chain:
        head = tracker.get(header["hash"])
        assert head is not None
        assert votes.add("a", head, int(header["number"], 16)) is None
    assert len(votes) == 3
    with pytest.raises(ValueError, match="per_client"):
        StartupVotes(per_client=0)


def test_a_connected_client_whose_every_line_was_refused_is_no_voice() -> None:
    """The broken liar of ``test_rpc_faults`` (bad hashes on every header it sends first):
    refused lines are no vote, so the honest client anchors alone, as before."""
    chain = sealed_chain(3)
    tracker = ChainTracker(clients=2)
    tracker.on_connect("honest")
    tracker.on_connect("liar")
    lie = dict(chain[0], timestamp="0x1")  # the hash no longer matches
    assert [e.reason for e in tracker.on_head("liar", lie)] == ["hash_mismatch"]  # type: ignore[union-attr]
    (ext,) = moves(tracker.on_head("honest", chain[0]))
    assert isinstance(ext, Extension) and tracker.tip is not None


def test_three_clients_a_liar_and_an_honest_one_wait_for_the_slow_honest_one() -> None:
    """Start-up with three clients connected, one slow: the liar's forged lines and the honest
    client's real ones never agree, so there is no tip (not the liar's) until the slow honest
    client announces a block the first one did; then the real chain is followed and the
    liar's forged chain, racing on, never becomes the tip."""
    chain = sealed_chain(6, start=100)
    tracker = ChainTracker(finality_depth=8, clients=3)
    for name in ("liar", "a", "slow"):
        tracker.on_connect(name)
    fake = sealed_header(5000, "0x" + "ab" * 32, salt="fake")
    tracker.on_head("liar", fake)
    for header in chain[:3]:
        tracker.on_head("a", header)
        fake = sealed_header(int(fake["number"], 16) + 1, fake["hash"], salt="fake")
        tracker.on_head("liar", fake)
    assert tracker.tip is None
    for header in chain[2:]:
        tracker.on_head("slow", header)
        fake = sealed_header(int(fake["number"], 16) + 1, fake["hash"], salt="fake")
        tracker.on_head("liar", fake)
    for header in chain[3:]:
        tracker.on_head("a", header)
    assert tracker.tip is not None and tracker.tip.hash == chain[-1]["hash"]

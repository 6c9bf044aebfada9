"""Adversarial review of the one-voice rule (heads6, docs/chain-tracking.md *One voice*).

Each test is one attack on the rule's exemptions or its liveness; it fails if the attack works.
"""

from __future__ import annotations

import pytest

from heads.events import Event, Quarantine
from heads.tracker import ChainTracker
from tests.heads.chain import Tree, reorgs, sealed_chain, sealed_header


def test_two_clients_a_liar_in_sync_cannot_fork_ten_deep_by_retracting_the_honest_chain() -> None:
    """Two clients, both relay the honest chain to 114 (12 s slots, ``stall_seconds=30`` as the
    service runs it). The liar then forks from 104 and races its forged branch to 115 in one
    burst. It "stood on" the dropped branch itself (it relayed it), so the retraction exemption
    of one voice against one let the tip follow it 10 deep, against an honest peer that is
    announcing on time. With the clock it is held; the honest chain goes on and is followed."""
    chain = sealed_chain(15, start=100)
    tracker = ChainTracker(finality_depth=32, clients=2, stall_seconds=30.0)
    now = 0.0
    for header in chain:
        now += 12.0
        tracker.on_head("honest", header, now)
        tracker.on_head("liar", header, now + 0.1)
    events: list[Event] = []
    parent = chain[4]["hash"]
    for number in range(105, 116):
        forged = sealed_header(number, parent, salt="forged")
        events += tracker.on_head("liar", forged, now + 0.5)
        parent = forged["hash"]
    assert reorgs(events) == []
    assert tracker.tip is not None and tracker.tip.hash == chain[-1]["hash"]
    nxt = sealed_header(115, chain[-1]["hash"], salt="honest")
    events = tracker.on_head("honest", nxt, now + 12.0)
    assert reorgs(events) == [] and tracker.tip.hash == nxt["hash"]
    forged = sealed_header(116, parent, salt="forged")
    events = tracker.on_head("liar", forged, now + 12.5)  # still one voice against a live one
    assert reorgs(events) == [] and tracker.tip.hash == nxt["hash"]
    assert [e for e in events if isinstance(e, Quarantine)] == []


def test_two_clients_an_honest_retraction_past_a_stalled_peer_still_moves_the_tip() -> None:
    """The case the retraction exemption exists for (client-chaos seed 10070258), with a clock:
    the fast client reorgs 10 deep while its only peer sits on the old chain without a new
    block for more than ``stall_seconds``: the tip follows at once, one reorg."""
    chain = sealed_chain(15, start=100)
    tracker = ChainTracker(finality_depth=32, clients=2, stall_seconds=30.0)
    now = 0.0
    for header in chain:
        now += 12.0
        tracker.on_head("fast", header, now)
        tracker.on_head("peer", header, now + 0.1)
    now += 31.0  # the peer brought nothing new since
    events: list[Event] = []
    parent = chain[4]["hash"]
    for number in range(105, 116):
        block = sealed_header(number, parent, salt="reorg")
        events += tracker.on_head("fast", block, now)
        parent = block["hash"]
    (reorg,) = reorgs(events)
    assert reorg.depth == 10 and tracker.tip is not None and tracker.tip.hash == parent


@pytest.mark.parametrize("clients", [2, 3])
@pytest.mark.parametrize("to", ["ancestor", "lower sibling"])
def test_a_clients_lower_block_moves_the_tip_when_no_connected_client_is_higher(
    clients: int, to: str
) -> None:
    """DESIGN.md §3: "a single client that announces a lower block on another branch, or an
    ancestor of the tip, moves the tip when no connected client is higher". ``a`` runs to 10
    while the others stay at 7, then announces 8 (the ancestor) or 8' on 7: nobody is higher
    than 8, so the tip must move. The others stand below the fork and vouch for no dropped
    block, so the one-voice rule does not apply (it held this while a peer sat below the
    fork, "undecided", until the review)."""
    tree = Tree()
    chain = tree.chain("m", "g", 10)
    tree.add("x8", "m7")
    others = ["b", "c"][: clients - 1]
    tracker = ChainTracker(finality_depth=32, clients=clients)
    for label in chain[:7]:
        for name in ("a", *others):
            tracker.on_head(name, tree[label])
    for label in chain[7:]:
        tracker.on_head("a", tree[label])
    target = "m8" if to == "ancestor" else "x8"
    events = tracker.on_head("a", tree[target])
    assert tracker.tip is not None and tracker.tip.hash == tree.hash(target)
    assert len(reorgs(events)) == 1


def test_a_liar_cycling_through_old_blocks_is_no_progressing_peer_that_freezes_the_tip() -> None:
    """Three clients, ``b`` down. The liar stopped at m10 and, while the honest ``a`` goes on,
    re-announces m9 and m10 in turn: every line is "a block other than its head", which the
    stall rule took for progress. So ``a``, running more than the lead past a "progressing"
    peer, was quarantined and the tip froze at x5 while ``a`` went on to x11. Progress is a new
    height (the subscriber's watchdog likewise wants a block not announced before)."""
    tree = Tree()
    chain = tree.chain("m", "g", 20)
    branch = tree.chain("x", "m15", 11)
    tracker = ChainTracker(finality_depth=32, clients=3, stall_seconds=30.0)
    now = 0.0
    for i, label in enumerate(chain):
        now += 12.0
        tracker.on_head("a", tree[label], now)
        tracker.on_head("b", tree[label], now)
        if i < 10:
            tracker.on_head("liar", tree[label], now)
    tracker.on_disconnect("b")
    events: list[Event] = []
    for label in branch[:5]:  # a real 5-deep reorg on a, the liar long silent: it moves
        events += tracker.on_head("a", tree[label], now + 1.0)
    assert [r.depth for r in reorgs(events)] == [5]
    for k in range(20):
        now += 6.0
        tracker.on_head("liar", tree["m9" if k % 2 == 0 else "m10"], now)
    for label in branch[5:]:
        now += 12.0
        events += tracker.on_head("a", tree[label], now)
        tracker.on_head("liar", tree["m9" if now % 24 else "m10"], now + 1.0)
    assert tracker.trust.quarantined == set()
    assert tracker.tip is not None and tracker.tip.hash == tree.hash(branch[-1])


@pytest.mark.parametrize("clients", [2, 3])
def test_a_liars_two_deep_self_fork_flood_above_a_lagging_peer_is_quarantined(clients: int) -> None:
    """The price of letting a lower block move the tip when the others lag (DESIGN.md §3): a
    2-deep self-fork that contradicts no other client is not suspect, so a liar above a
    lagging peer could flip the tip once per two frames unquarantined (issue 12: a sibling
    flood of 100,000 frames made 100,000 reorgs). Only one such fork per confirmation by
    another client is free: the liar's second is suspect, its third quarantines it, and the
    reorgs stop; the store stays bounded by the window."""
    chain = sealed_chain(11, start=0)
    tracker = ChainTracker(finality_depth=32, clients=clients)
    others = ["b", "c"][: clients - 1]
    for header in chain[:9]:  # everybody at 8
        for name in ("liar", *others):
            tracker.on_head(name, header)
    for header in chain[9:]:
        tracker.on_head("liar", header)  # the liar at 10, the others lag at 8
    events: list[Event] = []
    for k in range(1000):
        low = sealed_header(9, chain[8]["hash"], salt=f"flood {k}")  # 9^k on 8: drops 9, 10
        events += tracker.on_head("liar", low)
        events += tracker.on_head("liar", sealed_header(10, low["hash"], salt=f"flood {k}"))
    assert "liar" in tracker.trust.quarantined
    assert [e.active for e in events if isinstance(e, Quarantine)] == [True]
    assert [r.depth for r in reorgs(events)] == [2, 2]  # the free one, the suspect one
    assert len(tracker._blocks) <= 32 * 4
    # The honest chain goes on (b and c relay 9 and 10 of the real chain, then 11): the tip
    # stays on the liar's last move until the honest chain outgrows it, then follows it.
    after: list[Event] = []
    for header in chain[9:]:
        for name in others:
            after += tracker.on_head(name, header)
    top = sealed_header(11, chain[10]["hash"], salt="honest")
    for name in others:
        after += tracker.on_head(name, top)
    assert tracker.tip is not None and tracker.tip.hash == top["hash"]
    assert [r.depth for r in reorgs(after)] == [2]
    assert "liar" in tracker.trust.quarantined

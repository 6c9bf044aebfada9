"""Adversarial review of the one-voice rule (heads6, docs/chain-tracking.md *One voice*).

Each test is one attack on the rule's exemptions or its liveness; it fails if the attack works.
"""

from __future__ import annotations

from heads.events import Event, Quarantine, Reorg
from heads.tracker import ChainTracker
from tests.heads.chain import sealed_chain, sealed_header


def reorgs(events: list[Event]) -> list[Reorg]:
    return [e for e in events if isinstance(e, Reorg)]


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

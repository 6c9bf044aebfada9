"""Review of liar8 (branch rev-liar8): attacks on the one-chain release and the *vouched*
clients it leaves (``Trust.vouched``), the no-fall-back hold of ``_choose_tip`` and the
branch-below-a-vouched-run rule (``Suspicion._under_a_vouched_run``). Pure core, two clients,
no clock, hash-consistent forgeries (``sealed_chain``/``sealed_header``)."""

from __future__ import annotations

from typing import Any

import pytest

from heads.events import Event, Reorg
from heads.tracker import ChainTracker
from tests.heads.chain import sealed_chain, sealed_header


def _both_on(start: list[dict[str, Any]]) -> ChainTracker:
    tracker = ChainTracker(finality_depth=32, clients=2)
    for h in start:
        tracker.on_head("honest", h, 0.0)
        tracker.on_head("liar", h, 0.0)
    return tracker


def _reorgs(events: list[Event]) -> list[Reorg]:
    return [e for e in events if isinstance(e, Reorg)]


def _vouched_once(stall: int) -> tuple[ChainTracker, list[dict[str, Any]], list[Event]]:
    """The honest node stalls for ``stall`` heights (no clock) while the liar relays the real
    chain, then catches up in a burst: its copies confirm the liar's run ahead and the one-chain
    release vouches for the liar. Then both relay the real chain in step for 100 heights."""
    real = sealed_chain(300, start=100)
    tracker = _both_on(real[:6])
    events: list[Event] = []
    for k in range(6, 6 + stall):
        events += tracker.on_head("liar", real[k], 0.0)
    for k in range(6, 6 + stall):
        events += tracker.on_head("honest", real[k], 0.0)
    for k in range(6 + stall, 120):
        events += tracker.on_head("liar", real[k], 0.0)
        events += tracker.on_head("honest", real[k], 0.0)
    return tracker, real, events


@pytest.mark.parametrize("stall", [8, 12])
@pytest.mark.parametrize("lead", [1, 2, 3])
def test_a_liar_vouched_once_long_ago_does_not_take_the_tip_with_a_forged_race(
    stall: int, lead: int
) -> None:
    """The liar was vouched once (the honest node stalled ``stall`` heights, about a minute, and
    caught up); 100 heights later, everything long confirmed, it races a forged chain ``lead``
    blocks above the healthy honest head (within the run-ahead lead). On liar8 ``vouched``
    never ended (only an all-confirmed release *while quarantined* cleared it), so the honest
    blocks, a branch under the vouched liar's run, were suspect, the liar's forged blocks were
    never contested, and the tip followed the forged race for all 130 heights (``main``: 2).
    Wanted: as on ``main``, the forged race is the tip for at most 2 heights."""
    tracker, real, events = _vouched_once(stall)
    assert tracker.tip is not None and tracker.tip.hash == real[119]["hash"]
    on_real = {h["hash"] for h in real}
    forged = 0
    prev = real[119]
    top = 119
    for k in range(120, 250):
        events += tracker.on_head("honest", real[k], 0.0)
        while top < k + lead:
            h = sealed_header(int(prev["number"], 16) + 1, prev["hash"], salt=f"F{top}")
            events += tracker.on_head("liar", h, 0.0)
            prev = h
            top += 1
        assert tracker.tip is not None
        forged += tracker.tip.hash not in on_real
    assert forged <= 2, forged
    assert tracker.tip is not None and tracker.tip.hash == real[249]["hash"]


def _uncles_under_a_late_peer(lag: int, period: int) -> tuple[int, int, list[int]]:
    """The real chain has a depth-1 reorg every ``period`` heights (the honest node announces
    the uncle, then the canonical block at the same height: mainnet's reorgs); the other client
    relays every announcement ``lag`` announcements late. Returns the real reorg count, the
    reorg events the tracker emitted and their depths."""
    real = sealed_chain(200, start=100)
    announced: list[dict[str, Any]] = []
    for k in range(6, 200):
        if k > 10 and k % period == 0:
            announced.append(
                sealed_header(int(real[k]["number"], 16), real[k - 1]["hash"], salt=f"u{k}")
            )
        announced.append(real[k])
    tracker = _both_on(real[:6])
    events: list[Event] = []
    for i, h in enumerate(announced):
        events += tracker.on_head("honest", h, 0.0)
        if i >= lag:
            events += tracker.on_head("liar", announced[i - lag], 0.0)
    reorgs = _reorgs(events)
    return len(announced) - 194, len(reorgs), [r.depth for r in reorgs]


@pytest.mark.parametrize("lag", [2, 3])
@pytest.mark.parametrize("period", [10, 25])
def test_real_uncles_under_a_peer_within_the_lead_are_counted_once(lag: int, period: int) -> None:
    real, emitted, depths = _uncles_under_a_late_peer(lag, period)
    assert emitted == real and set(depths) == {1}, (real, emitted, depths)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "open (liar8's one-chain release): a real depth-1 reorg seen by the vouched honest"
        " client while its peer relays 6+ blocks late is counted twice, once as a fall back"
        " lag-1 deep. The tip is on the honest client's unconfirmed uncle (released by the late"
        " copies), the honest client steps sideways to the canonical block (suspect, a"
        " self-fork, it is quarantined again) and no longer stands on the tip, so the"
        " no-fall-back hold is off and the tip falls back to the late peer's head (Reorg of"
        " depth 5, new empty), then takes the peer's late copy of the reorg (depth 1): 37 reorg"
        " events for 18 real ones at lag 6-8 every 10 heights (main: 19, the tip lag behind"
        " throughout). Holding the tip there instead (the hold without _stands_on) is what"
        " d5bd643 removed: without a clock the honest uncle is the mirror of a vouched liar"
        " forging one block on its head and stepping back to the real chain"
        " (test_a_liar_relaying_ahead_of_a_late_peer_and_forging_on_top_is_bounded)"
    ),
)
@pytest.mark.parametrize("lag", [6, 8])
@pytest.mark.parametrize("period", [10, 25])
def test_real_uncles_under_a_peer_relaying_far_behind_are_counted_once(
    lag: int, period: int
) -> None:
    """As above with the peer 6-8 behind: one fall back when the honest client is first
    quarantined for running ahead (as on ``main``) is allowed, no more, and no deeper reorg."""
    real, emitted, depths = _uncles_under_a_late_peer(lag, period)
    assert emitted <= real + 1, (real, emitted, depths)
    assert depths.count(1) == real and len([d for d in depths if d > 1]) <= 1, depths

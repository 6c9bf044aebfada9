"""Review of liar8 (branch rev-liar8): attacks on the one-chain release and the *vouched*
clients it leaves (``Trust.vouched``), the no-fall-back hold of ``_choose_tip`` and the
branch-below-a-vouched-run rule (``Suspicion._under_a_vouched_run``). Pure core, two clients,
no clock, hash-consistent forgeries (``sealed_chain``/``sealed_header``)."""

from __future__ import annotations

from typing import Any

import pytest

from heads.events import Event
from heads.tracker import ChainTracker
from tests.heads.chain import both_on, reorgs, sealed_chain, sealed_header


def _vouched_once(stall: int) -> tuple[ChainTracker, list[dict[str, Any]], list[Event]]:
    """The honest node stalls for ``stall`` heights (no clock) while the liar relays the real
    chain, then catches up in a burst: its copies confirm the liar's run ahead and the one-chain
    release vouches for the liar. Then both relay the real chain in step for 100 heights."""
    real = sealed_chain(300, start=100)
    tracker = both_on(real[:6])
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
    tracker = both_on(real[:6])
    events: list[Event] = []
    for i, h in enumerate(announced):
        events += tracker.on_head("honest", h, 0.0)
        if i >= lag:
            events += tracker.on_head("liar", announced[i - lag], 0.0)
    found = reorgs(events)
    return len(announced) - 194, len(found), [r.depth for r in found]


@pytest.mark.xfail(
    strict=True,
    reason=(
        "open (issue #12 as on main): with real uncles more often than the peer's lag (every"
        " 10 heights, 16 late) the honest client always has an unconfirmed uncle off the chain"
        " it stands on (the peer has not relayed it yet), so the one-chain release never"
        " applies and the tip follows the late copies, 14 blocks behind on average"
    ),
)
def test_the_tip_is_not_held_back_by_a_late_peer_when_uncles_are_frequent() -> None:
    real = sealed_chain(200, start=100)
    announced: list[dict[str, Any]] = []
    for k in range(6, 200):
        if k > 10 and k % 10 == 0:
            u = sealed_header(int(real[k]["number"], 16), real[k - 1]["hash"], salt=f"u{k}")
            announced.append(u)
        announced.append(real[k])
    tracker = both_on(real[:6])
    behind = 0
    for i, h in enumerate(announced):
        tracker.on_head("honest", h, 0.0)
        if i >= 16:
            tracker.on_head("liar", announced[i - 16], 0.0)
        assert tracker.tip is not None
        behind += int(h["number"], 16) - tracker.tip.number
    assert behind <= 2 * len(announced), behind / len(announced)


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


def _real_reorg_under_a_late_peer(lag: int, depth: int) -> tuple[list[tuple[int, int]], bool]:
    """``test_a_real_reorg_under_a_liar_relaying_far_behind_is_followed``'s chain (the honest
    node reorgs ``depth`` deep onto a branch one longer; the peer relays everything ``lag``
    late, then catches up). Returns the (depth, new blocks) of each reorg and whether the tip
    ends on the honest head."""
    base = sealed_chain(40, start=100)
    prev = base[-1 - depth]
    branch = []
    for i in range(depth + 21):
        h = sealed_header(int(prev["number"], 16) + 1, prev["hash"], salt=f"R{i}")
        branch.append(h)
        prev = h
    announced = base + branch
    tracker = both_on(announced[:6])
    events: list[Event] = []
    for k in range(6, len(announced)):
        events += tracker.on_head("honest", announced[k], 0.0)
        if k - lag >= 6:
            events += tracker.on_head("liar", announced[k - lag], 0.0)
    for h in announced[len(announced) - lag :]:
        events += tracker.on_head("liar", h, 0.0)
    found = [(r.depth, len(r.new)) for r in reorgs(events)]
    return found, tracker.tip is not None and tracker.tip.hash == announced[-1]["hash"]


@pytest.mark.parametrize(("lag", "depth"), [(6, 2), (16, 2), (16, 3)])
def test_a_real_reorg_under_a_late_peer_is_one_reorg_event(lag: int, depth: int) -> None:
    """One fall back when the honest client is first quarantined for running ahead (as on
    ``main``), then the real reorg, once, at its real depth."""
    reorgs, on_head = _real_reorg_under_a_late_peer(lag, depth)
    assert on_head
    assert reorgs[1:] == [(depth, 1)], reorgs


@pytest.mark.xfail(
    strict=True,
    reason=(
        "open (liar8): as test_real_uncles_under_a_peer_relaying_far_behind_are_counted_once."
        " Depth 1: the honest client steps sideways off the tip it holds (its unconfirmed"
        " block), the no-fall-back hold is off, the tip falls back 5 to the late peer's head"
        " first: [(5,0), (5,0), (1,1)] (main: [(5,0), (1,1)]). Depth 3 at lag 6: the real"
        " reorg is followed, then the tip falls back 4 onto the late peer's copy of the new"
        " branch: [(5,0), (3,1), (4,0)]"
    ),
)
@pytest.mark.parametrize(("lag", "depth"), [(6, 1), (16, 1), (6, 3)])
def test_a_real_shallow_reorg_under_a_late_peer_is_one_reorg_event(lag: int, depth: int) -> None:
    reorgs, on_head = _real_reorg_under_a_late_peer(lag, depth)
    assert on_head
    assert reorgs[1:] == [(depth, 1)], reorgs


@pytest.mark.parametrize("lag", [6, 16])
@pytest.mark.parametrize("who", ["honest", "liar"])
def test_a_vouched_client_or_its_late_peer_reconnecting_keeps_the_tip(lag: int, who: str) -> None:
    """The liar relays the real chain ``lag`` late (the honest client vouched); ``who``
    disconnects for 12 heights and reconnects (the honest node on the real head, the liar
    still ``lag`` late). No rollback on the disconnect, the tip on the real chain throughout,
    at most 2 reorgs, the tip on the honest head at the end."""
    real = sealed_chain(200, start=100)
    on_real = {h["hash"] for h in real}
    tracker = both_on(real[:6])
    events: list[Event] = []
    for k in range(6, 190):
        away = 80 <= k < 92
        if away and k == 80:
            events += tracker.on_disconnect(who)
        if not (away and who == "honest"):
            events += tracker.on_head("honest", real[k], 0.0)
        if k - lag >= 6 and not (away and who == "liar"):
            events += tracker.on_head("liar", real[k - lag], 0.0)
        assert tracker.tip is not None and tracker.tip.hash in on_real
    assert len(reorgs(events)) <= 2, [(r.depth, len(r.new)) for r in reorgs(events)]
    assert tracker.tip is not None and tracker.tip.hash == real[189]["hash"]


@pytest.mark.parametrize("lag", [6, 16])
def test_a_late_liar_flooding_siblings_under_a_vouched_client_stays_bounded(lag: int) -> None:
    """The liar relays the real chain ``lag`` late and at every height floods 6 forged siblings
    of its late head: the trust maps (unconfirmed, abandoned, ran-ahead) stay bounded by the
    window, the tip on the real chain, on the honest head at the end."""
    real = sealed_chain(260, start=100)
    on_real = {h["hash"] for h in real}
    tracker = both_on(real[:6])
    for k in range(6, 250):
        tracker.on_head("honest", real[k], 0.0)
        if k - lag >= 6:
            late = real[k - lag]
            for i in range(6):
                parent = real[k - lag - 1]
                h = sealed_header(int(late["number"], 16), parent["hash"], salt=f"s{k}.{i}")
                tracker.on_head("liar", h, 0.0)
            tracker.on_head("liar", late, 0.0)
        assert tracker.tip is not None and tracker.tip.hash in on_real
        sizes = tracker.stats()
        assert max(sizes.values()) <= 8 * (32 + 32 + 1), sizes
    assert tracker.trust.vouched <= {"honest"} and tracker.trust.vouching <= {"honest"}
    assert tracker.tip is not None and tracker.tip.hash == real[249]["hash"]


@pytest.mark.parametrize("fork", [False, True])
@pytest.mark.parametrize("lags", [(-2, 8), (-1, 16), (-3, 5, 8), (0, 31)])
def test_a_liar_alternating_early_and_late_and_forking_at_each_switch_is_bounded(
    lags: tuple[int, ...], fork: bool
) -> None:
    """The liar cycles its lag through ``lags`` every 10 heights (negative: early, within the
    lead, relaying before the honest block), and with ``fork`` forges a 3-block branch off its
    head's parent at each switch before relaying on. ``main``: 8-12 reorgs without forks, 3
    with. Here: at most 3 reorgs, the tip forged for at most 1 height, at the end on the
    honest head or above it on the real chain."""
    real = sealed_chain(270, start=100)
    on_real = {h["hash"] for h in real}
    tracker = both_on(real[:10])
    events: list[Event] = []
    relayed = 9
    forged = 0
    for k in range(10, 250):
        lag = lags[(k // 10) % len(lags)]
        if lag >= 0:
            events += tracker.on_head("honest", real[k], 0.0)
        while relayed < k - lag:
            relayed += 1
            events += tracker.on_head("liar", real[relayed], 0.0)
        if lag < 0:
            events += tracker.on_head("honest", real[k], 0.0)
        if fork and k % 10 == 0:
            prev = real[relayed - 1]
            for i in range(3):
                h = sealed_header(int(prev["number"], 16) + 1, prev["hash"], salt=f"f{k}.{i}")
                events += tracker.on_head("liar", h, 0.0)
                prev = h
            events += tracker.on_head("liar", real[relayed], 0.0)
        assert tracker.tip is not None
        forged += tracker.tip.hash not in on_real
    assert len(reorgs(events)) <= 3, len(reorgs(events))
    assert forged <= 1, forged
    while relayed < 249:
        relayed += 1
        tracker.on_head("liar", real[relayed], 0.0)
    assert tracker.tip is not None and tracker.tip.hash in on_real
    assert tracker.tip.number >= 349  # the honest head (or the early liar's real block)


@pytest.mark.parametrize(("lag", "back"), [(2, 4), (3, 8), (6, 8)])
def test_an_honest_client_stepping_down_below_a_lagging_peer_moves_the_tip(
    lag: int, back: int
) -> None:
    real = sealed_chain(200, start=100)
    tracker = both_on(real[:6])
    for k in range(6, 100):
        tracker.on_head("honest", real[k], 0.0)
        if k - lag >= 6:
            tracker.on_head("liar", real[k - lag], 0.0)
    assert tracker.tip is not None and tracker.tip.hash == real[99]["hash"]
    tracker.on_head("honest", real[99 - back], 0.0)  # a rewind below the peer's head
    peer = tracker.client_head("liar")
    assert peer is not None and tracker.tip is not None
    assert tracker.tip.hash in {peer.hash, real[99 - back]["hash"]}, tracker.tip.number


@pytest.mark.parametrize("lag", [6, 16])
@pytest.mark.parametrize("ahead", [0, 1])
def test_a_late_liar_jumping_to_a_forged_sibling_of_the_honest_head_is_kept_out(
    lag: int, ahead: int
) -> None:
    """The liar relays the real chain ``lag`` late (the honest client vouched, quarantined
    again at each of its blocks), then jumps to a forged sibling of the honest head and races a
    forged chain level with it (``ahead`` 0) or one above, for 100 heights, then relays the
    real chain on time. While the honest client is quarantined the liar's branch is contested
    by nobody (a suspect's word contests nothing): ``main`` had the tip on it for all 100
    heights. Here the branch is below the vouched run: at most 2 heights forged, 4 reorgs."""
    real = sealed_chain(260, start=100)
    on_real = {h["hash"] for h in real}
    tracker = both_on(real[:6])
    events: list[Event] = []
    forged = 0
    prev: dict[str, Any] | None = None
    for k in range(6, 250):
        events += tracker.on_head("honest", real[k], 0.0)
        if 100 <= k < 200:
            if prev is None:
                prev = real[k - 1]
            while int(prev["number"], 16) < k + 100 + ahead:
                number = int(prev["number"], 16) + 1
                prev = sealed_header(number, prev["hash"], salt=f"S{k}.{number}")
                events += tracker.on_head("liar", prev, 0.0)
        elif k >= 200:
            events += tracker.on_head("liar", real[k], 0.0)
        elif k - lag >= 6:
            events += tracker.on_head("liar", real[k - lag], 0.0)
        assert tracker.tip is not None
        forged += tracker.tip.hash not in on_real
    assert forged <= 2, forged
    assert len(reorgs(events)) <= 4, len(reorgs(events))
    assert tracker.tip is not None and tracker.tip.hash == real[249]["hash"]


@pytest.mark.xfail(
    strict=True,
    reason=(
        "open (on main too, not the one-chain release's): a liar in step with a healthy honest"
        " node that forks off the tip's parent in one burst to 4-8 above the honest head and"
        " keeps its forged chain that far ahead holds the tip on the forged chain for all 130"
        " heights (1 reorg, the liar quarantined): the way back is one voice against one deeper"
        " than the lead (held), the honest chain never catches up with the race"
    ),
)
@pytest.mark.parametrize("lead", [4, 6, 8])
def test_a_liar_in_step_bursting_a_forged_race_ahead_does_not_keep_the_tip(lead: int) -> None:
    real = sealed_chain(300, start=100)
    on_real = {h["hash"] for h in real}
    tracker = both_on(real[:120])
    forged = 0
    prev = real[119]
    top = 119
    for k in range(120, 250):
        tracker.on_head("honest", real[k], 0.0)
        while top < k + lead:
            h = sealed_header(int(prev["number"], 16) + 1, prev["hash"], salt=f"B{top}")
            tracker.on_head("liar", h, 0.0)
            prev = h
            top += 1
        assert tracker.tip is not None
        forged += tracker.tip.hash not in on_real
    assert forged <= 2 * lead, forged

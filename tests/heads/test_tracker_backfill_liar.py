"""Adversarial review, round 2 (issue 12): a liar's forged chain delivered through backfill.

A liar announces one block far ahead of the honest tip and, asked for its missing parent,
serves self-consistent (hash-verified) forged ancestors down to the honest tip. Its one
announcement alone is below the quarantine threshold; the backfilled blocks must count too,
or the tip jumps onto the forged chain.
"""

from __future__ import annotations

from typing import Any

from heads.events import Event, NeedAncestor, Reorg
from heads.tracker import ChainTracker
from tests.heads.chain import sealed_chain, sealed_header


def forged_above(parent: str, start: int, count: int) -> list[dict[str, Any]]:
    chain = []
    for number in range(start, start + count):
        header = sealed_header(number, parent, salt="forged")
        chain.append(header)
        parent = header["hash"]
    return chain


def serve_backfill(
    tracker: ChainTracker, client: str, events: list[Event], by_hash: dict[str, dict[str, Any]]
) -> list[Event]:
    """Answer every ``NeedAncestor`` addressed to ``client`` from ``by_hash``, as a node would."""
    out: list[Event] = list(events)
    pending = [e for e in events if isinstance(e, NeedAncestor) and e.client == client]
    while pending:
        ask = pending.pop()
        header = by_hash.get(ask.hash)
        if header is None:
            continue
        got = tracker.on_block(client, header)
        out += got
        pending += [e for e in got if isinstance(e, NeedAncestor) and e.client == client]
    return out


def test_a_far_ahead_announcement_backfilled_with_forged_ancestors_does_not_move_the_tip() -> None:
    chain = sealed_chain(10, start=100)
    tracker = ChainTracker(finality_depth=64, clients=2)
    for header in chain:
        tracker.on_head("honest", header)
        tracker.on_head("liar", header)
    tip = chain[-1]
    assert tracker.tip is not None and tracker.tip.hash == tip["hash"]
    forged = forged_above(tip["hash"], 110, 40)  # 110..149 on the honest tip
    by_hash = {h["hash"]: h for h in forged}
    events = serve_backfill(tracker, "liar", tracker.on_head("liar", forged[-1]), by_hash)
    assert tracker.tip is not None and tracker.tip.hash == tip["hash"], tracker.tip
    assert "liar" in tracker.trust.quarantined
    # The honest chain goes on and is followed; a real reorg is still seen.
    parent = tip["hash"]
    for number in (110, 111):
        header = sealed_header(number, parent, salt="honest")
        events += tracker.on_head("honest", header)
        parent = header["hash"]
    assert tracker.tip is not None and tracker.tip.hash == parent


def test_an_honest_client_backfilling_a_short_gap_is_not_quarantined() -> None:
    """The counter-property: a client that missed two blocks (a reconnect) and backfills them
    while its peer is as high is no run ahead."""
    chain = sealed_chain(14, start=100)
    tracker = ChainTracker(finality_depth=64, clients=2)
    for header in chain[:10]:
        tracker.on_head("a", header)
        tracker.on_head("b", header)
    for header in chain[10:13]:
        tracker.on_head("a", header)
    tracker.on_disconnect("b")
    by_hash = {h["hash"]: h for h in chain}
    events = serve_backfill(tracker, "b", tracker.on_head("b", chain[13]), by_hash)
    assert tracker.trust.quarantined == set()
    assert tracker.tip is not None and tracker.tip.hash == chain[13]["hash"], events


def liar_fuzz(seed: int, steps: int = 120) -> None:
    """One honest client, one liar picking at random among: a sibling of its own head (a fake
    reorg, which sets its ``_peak``), a forged child, a forged block far ahead backfilled with
    forged ancestors, a reconnect, a copy of the honest head. The tip never runs more than
    the lead allowance above the honest head, and once the liar stops, a few honest blocks
    put the tip back on the honest chain."""
    import random

    rng = random.Random(seed)
    tracker = ChainTracker(finality_depth=32, clients=2)
    honest = sealed_chain(3, start=100)
    for header in honest:
        tracker.on_head("honest", header)
        tracker.on_head("liar", header)
    liar_head = honest[-1]
    forged: dict[str, dict[str, Any]] = {}

    def grow_honest() -> None:
        header = sealed_header(int(honest[-1]["number"], 16) + 1, honest[-1]["hash"], salt="h")
        honest.append(header)
        tracker.on_head("honest", header)

    for n in range(1, steps + 1):
        action = rng.choice(["sibling", "child", "jump", "reconnect", "copy", "honest"])
        number = int(liar_head["number"], 16)
        if action == "sibling":
            parent = forged.get(liar_head["parentHash"]) or next(
                (h for h in honest if h["hash"] == liar_head["parentHash"]), None
            )
            if parent is not None:
                liar_head = sealed_header(number, parent["hash"], salt=f"s{n}")
                forged[liar_head["hash"]] = liar_head
                tracker.on_head("liar", liar_head)
        elif action == "child":
            liar_head = sealed_header(number + 1, liar_head["hash"], salt=f"c{n}")
            forged[liar_head["hash"]] = liar_head
            tracker.on_head("liar", liar_head)
        elif action == "jump":
            chain = [liar_head]
            for k in range(rng.randint(2, 20)):
                chain.append(sealed_header(number + 1 + k, chain[-1]["hash"], salt=f"j{n}"))
            for header in chain[1:]:
                forged[header["hash"]] = header
            liar_head = chain[-1]
            serve_backfill(tracker, "liar", tracker.on_head("liar", liar_head), forged)
        elif action == "reconnect":
            tracker.on_disconnect("liar")
            tracker.on_connect("liar")
        elif action == "copy":
            liar_head = honest[-1]
            tracker.on_head("liar", liar_head)
        else:
            grow_honest()
        tip = tracker.tip
        assert tip is not None
        top = int(honest[-1]["number"], 16)
        assert tip.number <= top + 5, (seed, n, action, tip.number, top)
    for _ in range(8):
        grow_honest()
    assert tracker.tip is not None and tracker.tip.hash == honest[-1]["hash"], seed


def test_a_liar_mixing_fake_reorgs_races_and_backfills_never_runs_the_tip_ahead() -> None:
    for seed in range(40):
        liar_fuzz(seed)


def test_a_lone_fast_clients_reorg_does_not_roll_the_tip_back_to_a_slow_peers_stale_head() -> None:
    """client-chaos seed 202 (12 rounds), replayed from its recording: b is down, c is slow and
    still at 33, a alone goes on to 38 (its last block more than the lead above c: suspect)
    and then reorgs (37' on 36, a self-fork). Counted suspect, a was quarantined and the tip
    fell back to c's stale head 33 (a reorg of depth 5 to nowhere, then another when c caught
    up: 13 reorgs for 12). Held by the one-voice rule, DESIGN.md §3 was broken ("a lower
    block ... moves the tip when no connected client is higher"). c stands below the fork and
    vouches for no dropped block: plain fork choice moves the tip to 37' at once (one reorg),
    the self-fork is not suspect, and c catching up onto 37' is no further reorg."""
    chain = sealed_chain(40, start=0)
    tracker = ChainTracker(finality_depth=64, clients=3)
    for header in chain[:34]:
        for name in ("a", "b", "c"):
            tracker.on_head(name, header)
    tracker.on_disconnect("b")
    events: list[Event] = []
    for header in chain[34:39]:
        events += tracker.on_head("a", header)
    sibling = sealed_header(37, chain[36]["hash"], salt="reorg")
    events += tracker.on_head("a", sibling)
    (reorg,) = [e for e in events if isinstance(e, Reorg)]
    assert reorg.ancestor.hash == chain[36]["hash"] and reorg.depth == 2  # 38 -> 37', not 33
    assert [h.hash for h in reorg.new] == [sibling["hash"]]
    assert tracker.tip is not None and tracker.tip.hash == sibling["hash"]
    assert tracker.trust.quarantined == set()
    after: list[Event] = []
    for header in [*chain[34:37], sibling]:  # c catches up, onto the new branch
        after += tracker.on_head("c", header)
    assert [e for e in after if isinstance(e, Reorg)] == []
    assert tracker.tip is not None and tracker.tip.hash == sibling["hash"]
    assert tracker.trust.quarantined == set()


def test_two_clients_a_lagging_liar_cannot_freeze_the_tip_and_then_fork_it() -> None:
    """A liar that stops announcing (a laggard at 104) while the honest client goes on to 114,
    then forks from its low head and races to one block above the honest tip.

    Changed (heads6): the announcements carry ``now`` (12 s slots) and the tracker has
    ``stall_seconds=30`` (the subscriber's watchdog period). Without a clock the honest run is
    the very same input as the forged race of
    ``test_a_forged_chain_raced_ahead_block_by_block_is_quarantined`` (one client 10 blocks
    past a silent peer), whose required outcome is the opposite (fall back to the silent
    peer): no clockless rule can pass both. With it, the silent liar is no peer to run ahead
    of, the honest client stays trusted, and the liar's 10-deep fork is one voice against the
    chain the other client built, held by the one-voice rule."""
    chain = sealed_chain(20, start=100)
    tracker = ChainTracker(finality_depth=32, clients=2, stall_seconds=30.0)
    now = 0.0
    for header in chain[:5]:
        now += 12.0
        tracker.on_head("honest", header, now)
        tracker.on_head("liar", header, now)
    for header in chain[5:15]:  # the liar stays at 104: a laggard
        now += 12.0
        tracker.on_head("honest", header, now)
    assert tracker.trust.quarantined == set()
    assert tracker.tip is not None and tracker.tip.hash == chain[14]["hash"]
    parent = chain[4]["hash"]
    for number in range(105, 116):  # then forks from its low head, one block above the tip
        forged = sealed_header(number, parent, salt="forged")
        tracker.on_head("liar", forged, now + 1.0)
        parent = forged["hash"]
    assert tracker.tip is not None and tracker.tip.hash == chain[14]["hash"]
    # The honest chain goes on and is followed.
    header = sealed_header(115, chain[14]["hash"], salt="honest")
    tracker.on_head("honest", header, now + 12.0)
    assert tracker.tip is not None and tracker.tip.hash == header["hash"]


def test_without_a_clock_the_lagging_liar_still_gets_the_honest_client_quarantined() -> None:
    """The core's limit, pinned: the same input without ``now`` cannot be told from a forged
    race ahead of a silent peer, so the honest client is quarantined (the live subscriber's
    watchdog, or ``stall_seconds`` with ``now``, is what tells them apart)."""
    chain = sealed_chain(20, start=100)
    tracker = ChainTracker(finality_depth=32, clients=2)
    for header in chain[:5]:
        tracker.on_head("honest", header)
        tracker.on_head("liar", header)
    for header in chain[5:15]:
        tracker.on_head("honest", header)
    assert "honest" in tracker.trust.quarantined


def test_three_clients_one_liar_cannot_reorg_the_tip_deep_with_a_quick_forged_branch() -> None:
    chain = sealed_chain(20, start=100)
    tracker = ChainTracker(finality_depth=32, clients=3)
    for header in chain[:5]:
        for name in ("a", "b", "liar"):
            tracker.on_head(name, header)
    for header in chain[5:15]:
        tracker.on_head("a", header)
        tracker.on_head("b", header)
    parent = chain[4]["hash"]
    for number in range(105, 118):
        forged = sealed_header(number, parent, salt="forged")
        tracker.on_head("liar", forged)
        parent = forged["hash"]
    assert tracker.tip is not None and tracker.tip.hash == chain[14]["hash"]


def deep_liar_fuzz(seed: int, steps: int = 150) -> None:
    """Two honest clients on one chain (``h1`` fast, ``h2`` lagging by a random delay) and one
    liar that, at random, copies the honest head or forks from an honest block up to 12 back
    and races its forged branch to the honest height + 0..3 in one burst (every block verifies).
    The one-voice rule, per move: a reorg never drops more than one block of a branch both
    honest clients stand on (the dropped branch's first block is below both their heads);
    once the liar stops, a few honest blocks put the honest chain back."""
    import random

    rng = random.Random(seed)
    tracker = ChainTracker(finality_depth=32, clients=3)
    honest = sealed_chain(1, start=100)
    position = {"h1": 0, "h2": 0}  # index of each honest client's head in ``honest``
    for name in ("h1", "h2", "liar"):
        tracker.on_head(name, honest[0])

    def send(name: str, header: dict[str, Any]) -> None:
        stands = [honest[i]["hash"] for i in range(min(position.values()) + 1)]
        for event in tracker.on_head(name, header):
            if isinstance(event, Reorg) and event.old[0].hash in stands:
                assert event.depth <= 1, (seed, name, event.depth)

    def announce(name: str, upto: int) -> None:
        while position[name] < upto:
            position[name] += 1
            send(name, honest[position[name]])

    def grow(count: int) -> None:
        for _ in range(count):
            number = int(honest[-1]["number"], 16) + 1
            honest.append(sealed_header(number, honest[-1]["hash"], salt="h"))

    for n in range(steps):
        action = rng.choice(["grow", "grow", "lag", "fork", "copy"])
        if action == "grow":
            grow(1)
            announce("h1", len(honest) - 1)
        elif action == "lag":
            announce("h2", min(len(honest) - 1, position["h2"] + rng.randint(1, 3)))
        elif action == "copy":
            send("liar", honest[position["h1"]])
        else:
            low = min(position.values())
            base = rng.randint(max(0, low - 12), low)
            parent = honest[base]["hash"]
            top = int(honest[position["h1"]]["number"], 16) + rng.randint(0, 3)
            for number in range(int(honest[base]["number"], 16) + 1, top + 1):
                forged = sealed_header(number, parent, salt=f"f{seed}.{n}")
                send("liar", forged)
                parent = forged["hash"]
    grow(5)
    announce("h1", len(honest) - 1)
    announce("h2", len(honest) - 1)
    assert tracker.tip is not None and tracker.tip.hash == honest[-1]["hash"], seed


def test_one_liar_of_three_forking_deep_in_random_bursts_never_drops_two_clients_blocks() -> None:
    for seed in range(40):
        deep_liar_fuzz(seed)

"""A recording made live while reorgs are injected replays to the same events."""

from __future__ import annotations

from pathlib import Path

from heads.events import Extension
from heads.recording import Recorder, iter_recording
from tests.e2e.scenarios import reorg_session, summaries, two_client_session
from tests.e2e.support import reorg_summary, replay


async def test_a_live_recording_with_reorgs_replays_to_the_same_events(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl.gz"
    with Recorder(path) as recorder:
        hub, probe = await reorg_session(3, recorder)
    live = summaries(probe)
    assert [s["depth"] for s in live] == [3]
    events, tracker = replay(path)
    assert [reorg_summary(e) for e in events if type(e) is not Extension] == live
    assert tracker.tip == hub.tracker.tip
    heads = sum(1 for line in iter_recording(path) if line.kind == "head")
    assert heads == hub.state("a").heads == 17  # 14 mined + 3 of the new branch


async def test_two_clients_a_cut_a_backfill_and_reorgs_replay_identically(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    with Recorder(path) as recorder:
        hub, probe = await two_client_session(recorder)
    live = summaries(probe)
    assert [(s["event"], s["depth"]) for s in live] == [
        ("reorg", 2),  # b's branch, unseen while cut off and backfilled, is longer
        ("reorg", 3),  # a's 8 at the same height, announced later, wins back
        ("reorg", 2),  # anvil_reorg(2) on a
    ]
    events, tracker = replay(path)
    assert [reorg_summary(e) for e in events if type(e) is not Extension] == live
    assert tracker.tip == hub.tracker.tip
    lines = list(iter_recording(path))
    assert [line.event for line in lines if line.client == "b" and line.kind == "event"][:3] == [
        "connected",
        "disconnected",
        "connected",
    ]
    # b's backfill after the reconnect: its diverged 7, then 6, whose parent is the shared 5.
    # Whichever client the hub anchored on at start-up was also asked for the block below the
    # anchor (genesis), so b may have served one block before the cut: which one is a race.
    b_lines = [line for line in lines if line.client == "b" and line.kind in ("block", "event")]
    reconnected = [i for i, line in enumerate(b_lines) if line.event == "connected"][1]
    after = [int(line.header["number"], 16) for line in b_lines[reconnected:] if line.header]
    before = [int(line.header["number"], 16) for line in b_lines[:reconnected] if line.header]
    assert after == [7, 6]
    assert before in ([], [0])
    assert len(before) + len(after) == hub.state("b").backfill_requests

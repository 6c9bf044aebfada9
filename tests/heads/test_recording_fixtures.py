"""The committed anvil recordings replay, through a fresh tracker, to the reorgs seen live.

The fixtures were made by ``tests/fixtures/make_recordings.py`` against real anvil nodes; the
``.expected.json`` beside each holds what the live hub reported. No network here.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from heads.events import DeepReorg, Event, Extension, NeedAncestor, Rejected, Reorg
from heads.recording import iter_recording
from heads.tracker import ChainTracker
from tests.e2e.support import reorg_summary

RECORDINGS = Path(__file__).resolve().parents[1] / "fixtures" / "recordings"
FIXTURES = sorted(p.name.removesuffix(".jsonl.gz") for p in RECORDINGS.glob("*.jsonl.gz"))


def replay_all(path: Path) -> tuple[list[Event], ChainTracker, int]:
    tracker = ChainTracker(finality_depth=64, fork_choice="latest", verify=True)
    events: list[Event] = []
    heads = 0
    for line in iter_recording(path):
        if line.kind == "head":
            heads += 1
            assert line.header is not None
            events.extend(tracker.on_head(line.client, line.header))
        elif line.kind == "block":
            assert line.header is not None
            events.extend(tracker.on_block(line.client, line.header))
        elif line.event == "disconnected":
            events.extend(tracker.on_disconnect(line.client))
    return events, tracker, heads


def test_every_session_has_a_fixture() -> None:
    assert FIXTURES == [
        "anvil-reorg-depth1",
        "anvil-reorg-depth10",
        "anvil-reorg-depth3",
        "anvil-two-clients-cut",
    ]


@pytest.mark.parametrize("name", FIXTURES)
def test_a_fixture_replays_to_the_events_seen_live(name: str) -> None:
    expected = orjson.loads((RECORDINGS / f"{name}.expected.json").read_bytes())
    events, tracker, heads = replay_all(RECORDINGS / f"{name}.jsonl.gz")
    reorgs = [reorg_summary(e) for e in events if type(e) in (Reorg, DeepReorg)]
    assert reorgs == expected["reorgs"]
    assert heads == expected["heads"]
    assert tracker.tip is not None
    assert tracker.tip.ref() == expected["tip"]
    # real Prague headers from anvil: every one verifies (keccak256(rlp(header)) == hash)
    assert [e for e in events if type(e) is Rejected] == []
    assert all(type(e) in (Extension, Reorg, DeepReorg, NeedAncestor) for e in events)


@pytest.mark.parametrize(
    ("name", "depth"),
    [("anvil-reorg-depth1", 1), ("anvil-reorg-depth3", 3), ("anvil-reorg-depth10", 10)],
)
def test_an_anvil_reorg_session_holds_exactly_one_reorg_of_its_depth(name: str, depth: int) -> None:
    events, tracker, _ = replay_all(RECORDINGS / f"{name}.jsonl.gz")
    (reorg,) = [e for e in events if type(e) is Reorg]
    assert reorg.depth == depth
    assert reorg.ancestor.number == 12 - depth
    assert [h.number for h in reorg.old] == list(range(13 - depth, 13))
    assert [h.number for h in reorg.new] == [13 - depth]  # anvil re-announces from the fork
    assert tracker.tip is not None and tracker.tip.number == 14


def test_the_two_client_session_holds_a_cut_a_backfill_and_three_reorgs() -> None:
    path = RECORDINGS / "anvil-two-clients-cut.jsonl.gz"
    lines = list(iter_recording(path))
    b_events = [line.event for line in lines if line.client == "b" and line.kind == "event"]
    assert b_events[:3] == ["connected", "disconnected", "connected"]
    assert [line.client for line in lines if line.kind == "block"] == ["b", "b"]
    events, _, _ = replay_all(path)
    needs = [e for e in events if type(e) is NeedAncestor]
    # The anchor's own window fill (client a: this recording predates it, so no block line
    # answers it), then the two gap fills of client b after its cut.
    assert [e.client for e in needs] == ["a", "b", "b"]
    reorgs = [e for e in events if type(e) is Reorg]
    assert [(r.client, r.depth) for r in reorgs] == [("b", 2), ("a", 3), ("a", 2)]


def test_a_fixture_replays_identically_twice() -> None:
    path = RECORDINGS / "anvil-two-clients-cut.jsonl.gz"
    assert replay_all(path)[0] == replay_all(path)[0]

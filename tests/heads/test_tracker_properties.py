"""The tracker against a straightforward reference model, on random trees and orders.

The reference keeps every block forever and recomputes everything from scratch after each input:
a client's head is its most recent announcement whose ancestry is all received, the tip is the
best head by (number, recency) or (number, first seen), and a tip move is diffed by walking
parents. Hypothesis draws block trees, several clients, announcement orders with gaps, and the
moments at which backfilled ancestors arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from heads.events import Event, Extension, NeedAncestor, Reorg
from heads.tracker import ChainTracker, ForkChoice
from tests.heads.chain import GENESIS_PARENT, block_hash


@dataclass
class Reference:
    fork_choice: ForkChoice
    parent: dict[str, str] = field(default_factory=dict)
    number: dict[str, int] = field(default_factory=dict)
    received: set[str] = field(default_factory=set)
    first_seen: dict[str, int] = field(default_factory=dict)
    announcements: list[tuple[int, str, str]] = field(default_factory=list)
    anchor: str | None = None
    seq: int = 0

    def _learn(self, hdr: dict[str, Any]) -> str:
        h = hdr["hash"]
        self.parent[h] = hdr["parentHash"]
        self.number[h] = int(hdr["number"], 16)
        self.received.add(h)
        self.first_seen.setdefault(h, self.seq)
        return str(h)

    def connected(self, h: str) -> bool:
        while h != self.anchor:
            if h not in self.received:
                return False
            h = self.parent[h]
        return True

    def head_of(self, client: str) -> tuple[str, int] | None:
        best = None
        for seq, c, h in self.announcements:
            if c == client and self.connected(h) and (best is None or seq > best[1]):
                best = (h, seq)
        return best

    def tip(self) -> str | None:
        best, best_rank = None, None
        for client in {c for _, c, _ in self.announcements}:
            head = self.head_of(client)
            if head is None:
                continue
            h, seq = head
            rank = (self.number[h], seq if self.fork_choice == "latest" else -self.first_seen[h])
            if best_rank is None or rank > best_rank:
                best, best_rank = h, rank
        return best

    def announce(self, client: str, hdr: dict[str, Any]) -> None:
        self.seq += 1
        current = self.head_of(client)
        if current is not None and current[0] == hdr["hash"]:
            return
        h = self._learn(hdr)
        if self.anchor is None:
            self.anchor = h
        self.announcements.append((self.seq, client, h))

    def backfill(self, hdr: dict[str, Any]) -> None:
        self.seq += 1
        self._learn(hdr)

    def path_to(self, h: str, ancestor: str) -> list[str]:
        path = []
        while h != ancestor:
            path.append(h)
            h = self.parent[h]
        path.reverse()
        return path

    def ancestors(self, h: str) -> list[str]:
        chain = [h]
        while h != self.anchor:
            h = self.parent[h]
            chain.append(h)
        return chain

    def diff(self, old: str, new: str) -> tuple[str, list[str], list[str]]:
        old_line = set(self.ancestors(old))
        lca = next(h for h in self.ancestors(new) if h in old_line)
        return lca, self.path_to(old, lca), self.path_to(new, lca)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], int, list[tuple[Any, ...]]]:
    size = draw(st.integers(min_value=2, max_value=24))
    headers = [{"number": "0x0", "hash": block_hash("0"), "parentHash": GENESIS_PARENT}]
    for i in range(1, size):
        p = draw(st.integers(min_value=max(0, i - 5), max_value=i - 1))
        headers.append(
            {
                "number": hex(int(headers[p]["number"], 16) + 1),
                "hash": block_hash(str(i)),
                "parentHash": headers[p]["hash"],
            }
        )
    clients = draw(st.integers(min_value=1, max_value=3))
    steps: list[tuple[Any, ...]] = [("announce", 0, 0)]
    for _ in range(draw(st.integers(min_value=1, max_value=50))):
        if draw(st.integers(0, 3)) == 0:
            steps.append(("deliver", draw(st.integers(0, 1_000))))
        else:
            steps.append(
                ("announce", draw(st.integers(0, clients - 1)), draw(st.integers(0, size - 1)))
            )
    return headers, clients, steps


def check_step(ref: Reference, old_tip: str | None, events: list[Event]) -> None:
    changes = [e for e in events if isinstance(e, Extension | Reorg)]
    new_tip = ref.tip()
    if new_tip == old_tip:
        assert changes == []
        return
    assert len(changes) == 1, changes
    (event,) = changes
    assert event.tip.hash == new_tip
    if old_tip is None:  # the first head anchors the chain
        assert isinstance(event, Extension) and event.old_tip is None
        return
    lca, old, new = ref.diff(old_tip, new_tip)
    if not old:
        assert isinstance(event, Extension)
        assert [b.hash for b in event.added] == new
    else:
        assert isinstance(event, Reorg)
        assert event.ancestor.hash == lca
        assert [b.hash for b in event.old] == old
        assert [b.hash for b in event.new] == new
        assert event.depth == len(old)


@settings(max_examples=400, deadline=None)
@given(scenarios(), st.sampled_from(["latest", "first-seen"]))
def test_tracker_agrees_with_the_reference_model(
    scenario: tuple[list[dict[str, Any]], int, list[tuple[Any, ...]]], fork_choice: ForkChoice
) -> None:
    headers, _, steps = scenario
    by_hash = {h["hash"]: h for h in headers}
    tracker = ChainTracker(finality_depth=10_000, fork_choice=fork_choice)
    ref = Reference(fork_choice)
    pending: list[NeedAncestor] = []

    def run(events: list[Event]) -> None:
        pending.extend(e for e in events if isinstance(e, NeedAncestor))

    for step in steps + [("deliver", 0)] * 200:
        old_tip = ref.tip()
        if step[0] == "announce":
            _, client, index = step
            ref.announce(f"c{client}", headers[index])
            events = tracker.on_head(f"c{client}", headers[index])
        else:
            if not pending:
                continue
            request = pending.pop(step[1] % len(pending))
            hdr = by_hash[request.hash]
            ref.backfill(hdr)
            events = tracker.on_block(request.client, hdr)
        run(events)
        check_step(ref, old_tip, events)
        assert (tracker.tip.hash if tracker.tip else None) == ref.tip()
    assert pending == []

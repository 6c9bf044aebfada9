"""Held announcements, backfill and re-anchoring (DESIGN.md §3, gaps and window).

A head whose parent is unknown is held and its parent asked for by hash; a bare backfill reply
wires another client's held blocks only with a second client's agreement; a chain that cannot
meet ours inside the window is foreign, and re-anchoring on it needs two connected clients
(:mod:`heads.anchor`) when two or more are configured.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from heads.anchor import reanchor_target, supporters
from heads.events import DeepReorg, Event, Head, NeedAncestor
from heads.header import HeaderError, verify_header_hash
from heads.parse import structural_fault
from heads.suspicion import Suspicion
from heads.tracker_state import (
    _HELD_PER_WINDOW_BLOCK,
)

__all__ = ["Backfill"]

log = logging.getLogger("heads.tracker")


class Backfill(Suspicion):
    """Holding, connecting what backfill brings, and the re-anchor decision."""

    def _vouches(self, client: str, block: Head, header: Mapping[str, Any]) -> bool:
        """May ``client``'s backfilled ``block`` connect what waits on it?

        A header with every field of its fork is verified (its hash commits to its parent). A
        bare one (``number``/``hash``/``parentHash`` only) can claim any parent: on one client's
        word it may only wire blocks that client itself brought or announced. Otherwise a liar
        that announces a block on the same missing parent (so it is asked for it too) would
        rewire an honest client's held head onto a branch of its choice, and the genuine parent
        would then be refused as a conflict. A bare block some other client's held block waits
        on connects once a second client's reply agrees with it (same number and parent): two
        honest clients on sibling heads do so at once; one liar's claim never does.
        """
        waiting = self._held_by_parent.get(block.hash)
        if not waiting:
            return True
        try:
            if len(header) > 3 and verify_header_hash(header, block.hash) is True:
                return True
        except HeaderError:
            return False
        owners = self._held_owner
        announcements = self._held_announcements
        if all(
            owners.get(child) == client
            or any(announcer == client for announcer, _ in announcements.get(child, ()))
            for child in waiting
        ):
            return True
        claims = self._bare_claims.pop(block.hash, {})
        claims[client] = (block.number, block.parent_hash)
        claim = claims[client]
        if sum(1 for other in claims.values() if other == claim) >= 2:
            return True
        self._bare_claims[block.hash] = claims
        if len(self._bare_claims) > _HELD_PER_WINDOW_BLOCK * (self.finality_depth + 1):
            del self._bare_claims[next(iter(self._bare_claims))]  # the oldest claim goes
        return False

    def _recompute_after_backfill(self, client: str, connected: list[Head]) -> list[Event]:
        """Recompute the tip only when the backfill made some connected client's held head
        current (DESIGN.md §3). A connect that changed no live head (nothing held, or only a
        head announced before its client's disconnect) leaves the tip alone: under the
        late-copy rule a recompute is not idempotent (a candidate skipped against the old tip
        may extend the new one)."""
        if not self._held_announcements:
            return []
        before = self._live_heads()
        movers = self._adopt_connected(connected)
        if self._live_heads() == before:
            return []
        return self._choose_tip(client, movers)

    def _adopt_connected(self, connected: list[Head]) -> set[str]:
        """Held announcements among ``connected`` become their clients' heads if still newest;
        return the clients whose head went down by it (movers for the recompute that follows,
        see :meth:`_choose_tip`)."""
        if not self._held_announcements:
            return set()
        before: dict[str, tuple[Head, int] | None] = {}
        for block in connected:
            announcements = self._held_announcements.pop(block.hash, None)
            if not announcements:
                continue
            for client, seq in announcements:
                current = self._heads.get(client)
                if (current is None or current[1] < seq) and seq >= self._since.get(client, 0):
                    before.setdefault(client, current)
                    self._set_head(client, block, seq)
        # Judged from where each client stood before this connect, not step by step.
        return {c for c, old in before.items() if self._regressed(c, old, self._heads[c][0])}

    def _hold_announcement(self, client: str, head: Head, seq: int) -> list[Event]:
        assert self._tip is not None
        events: list[Event] = []
        if head.hash in self._held or head.hash in self._foreign:
            stored = self._held.get(head.hash) or self._foreign[head.hash]
            if (stored.number, stored.parent_hash) != (head.number, head.parent_hash):
                return [self._conflict(client, head, stored)]
        elif self._suspect(client, head, self._heads.get(client)):
            self.trust.originate(client, head, events)
        if (
            head.parent_hash in self._foreign
            or head.number > self._tip.number + self.finality_depth
        ):
            # Its chain is already known not to meet ours, or it is too far ahead to check: do
            # not fetch a window's worth of ancestors to find out.
            reason: Literal["ancestor_below_window", "gap"] = (
                "ancestor_below_window" if head.parent_hash in self._foreign else "gap"
            )
            parent = self._foreign.get(head.parent_hash)
            if parent is not None:
                fault = structural_fault(client, head, parent)
                if fault is not None:
                    return [fault]
            self._add_foreign(head, seq)
            self._foreign_heads[client] = (head, seq)
            moved = self._unconnectable(client, reason)
            return events + (moved if moved else self._choose_tip(client, ()))
        events += self._hold(client, head, seq)
        if head.hash not in self._held:
            return events
        self._held_announcements.setdefault(head.hash, []).append((client, seq))
        events += self._request_or_give_up(client, head)
        # Recomputed after every announcement: the client's current head stays the one before
        # (nothing it just announced can win yet, so no move down on it).
        return events + self._choose_tip(client, ())

    def _request_or_give_up(self, client: str, block: Head) -> list[Event]:
        """Ask for the missing parent, unless it lies below the window (then it cannot connect)."""
        assert self._tip is not None
        root = self._held_root(block)
        if root.number - 1 >= self._tip.number - self.finality_depth and root.number > 0:
            return [NeedAncestor(client, root.parent_hash)]
        # The held chain reaches below the window without meeting ours: it never will.
        return self._resolve_foreign_chain(client, root)

    def _resolve_foreign_chain(self, client: str, root: Head) -> list[Event]:
        """Move the held chain above ``root`` out of the held set into the foreign one; its
        announcers' newest heads in it become their foreign heads (re-anchor candidates)."""
        chain = [root, *self._held_above(root.hash)]
        announced: dict[str, tuple[Head, int]] = {}
        for block in chain:
            for announcer, seq in self._held_announcements.pop(block.hash, ()):
                if announcer not in announced or announced[announcer][1] < seq:
                    announced[announcer] = (block, seq)
        for block in chain:
            seen = self._seen.get(block.hash, 0)
            self._forget_held(block)
            self._add_foreign(block, seen)
            self._seen[block.hash] = seen
        for announcer, entry in announced.items():
            current = self._foreign_heads.get(announcer)
            if current is None or current[1] < entry[1]:
                self._foreign_heads[announcer] = entry
        if not announced:
            return []
        return self._unconnectable(client, "ancestor_below_window")

    def _unconnectable(
        self, client: str, reason: Literal["ancestor_below_window", "gap"]
    ) -> list[Event]:
        """A head whose chain cannot meet ours inside the window: re-anchor on it (``DeepReorg``,
        never guess what it dropped) when it would win fork choice and enough clients say so."""
        old_tip = self._tip
        assert old_tip is not None
        claims = {c: e for c, e in self._foreign_heads.items() if c in self._connected}
        target = reanchor_target(
            claims, self._foreign, single=self._single_client(), announcer=client
        )
        if target is None or not (self._would_win(target) or self._outvotes(target, claims)):
            head = self._foreign_heads[client][0] if client in self._foreign_heads else None
            log.warning(
                "client %s is on a chain that does not meet ours within %d blocks (head %s); %s",
                client,
                self.finality_depth,
                None if head is None else f"{head.number} {head.hash}",
                "not re-anchoring on one client's word" if target is None else "not ahead",
            )
            return []
        # Re-anchor: the target becomes a root, every supporting client's chain above it joins.
        self._root_parents.add(target.parent_hash)
        if len(self._root_parents) > 64:  # stale roots of pruned chains: keep the set small
            self._root_parents = {target.parent_hash}
        paths = {c: _path_down(e[0], target, self._foreign) for c, e in claims.items()}
        self._foreign.pop(target.hash, None)
        self._add_to_store(target, self._seen.get(target.hash, self._seq))
        for supporter, path in paths.items():
            if path is None:
                continue
            head, seq = claims[supporter]
            for block in path:
                if block.hash not in self._blocks:
                    self._foreign.pop(block.hash, None)
                    self._add_to_store(block, self._seen.get(block.hash, seq))
            self._set_head(supporter, head, seq)
        self._tip = target
        self._prune()
        events: list[Event] = [DeepReorg(client, old_tip, target, reason)]
        return events + self._choose_tip(client, list(claims))

    def _outvotes(self, target: Head, claims: Mapping[str, tuple[Head, int]]) -> bool:
        """More connected clients on ``target``'s chain (two at least) than on the tip's: their
        word re-anchors even below a higher head. A liar whose far-ahead orphan was the very first
        line (it anchored) would otherwise hold the tip against every honest client, since the
        honest chain never "wins" against its fake height."""
        if self._single_client() or self._tip is None:
            return False
        backers = sum(
            1 for head, _ in claims.values() if _path_down(head, target, self._foreign) is not None
        )
        if backers < 2:
            return False
        others = [h for c, h in self._live_heads().items() if c not in claims]
        return supporters(self._tip, others, self._blocks) < backers


def _path_down(head: Head, target: Head, foreign: Mapping[str, Head]) -> list[Head] | None:
    """The foreign blocks from just above ``target`` up to ``head``, ascending; ``None`` when
    ``head`` does not descend from ``target`` through them."""
    path: list[Head] = []
    block: Head | None = head
    while block is not None and block.number > target.number:
        path.append(block)
        block = foreign.get(block.parent_hash)
        if block is None and path[-1].parent_hash == target.hash:
            block = target
    if block is None or block.hash != target.hash:
        return None
    path.reverse()
    return path

"""The block store and its window (DESIGN.md §3, window and memory).

Connected blocks for ``finality_depth`` heights below the tip, held blocks waiting for their
parent, foreign blocks of chains that do not meet ours, "first seen" sequence numbers; each
bounded whatever clients send (``_PER_HEIGHT`` blocks per height, held and foreign capped at
``_HELD_PER_WINDOW_BLOCK`` per window height), and pruned with the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from heads.events import DeepReorg, Event, Extension, Head, Rejected, Reorg
from heads.parse import structural_fault
from heads.tracker_state import (
    _HELD_PER_WINDOW_BLOCK,
    _PER_HEIGHT,
    _PRUNE_BATCH,
    TrackerState,
)

__all__ = ["Store"]


class Store(TrackerState):
    """Adding, connecting, evicting and pruning blocks; the walk between two tips."""

    def _known(self, header: Mapping[str, Any]) -> Head | None:
        """The stored block if ``header`` repeats one we hold with the same number and parent.

        Such a header carries nothing new for the tracker, so it is not verified again. A header
        that reuses a stored hash with a different number or parent is parsed in full (and
        refused as a ``conflict``).
        """
        try:
            stored = self._blocks.get(header["hash"])
        except (KeyError, TypeError):
            return None
        if stored is None:
            return None
        if header.get("parentHash") == stored.parent_hash and header.get("number") == hex(
            stored.number
        ):
            return stored
        return None

    def _conflict(self, client: str, claim: Head, stored: Head) -> Rejected:
        return Rejected(
            client,
            claim.hash,
            "conflict",
            f"held as #{stored.number} on {stored.parent_hash}, "
            f"claimed as #{claim.number} on {claim.parent_hash}",
        )

    def _add_to_store(self, block: Head, seq: int) -> None:
        if self._foreign:
            # A block that connects is no longer foreign: left in both maps, the foreign prune
            # dropped its first-seen entry while the store held it, and the store's own prune
            # then raised KeyError (review of replay8: a hostile three-client stream).
            self._foreign.pop(block.hash, None)
        self._blocks[block.hash] = block
        self._seen.setdefault(block.hash, seq)
        bucket = self._by_number.get(block.number)
        if bucket is None:
            self._by_number[block.number] = [block.hash]
        else:
            bucket.append(block.hash)
            if len(bucket) > _PER_HEIGHT:
                self._evict(block.number, bucket)

    def _drop(self, block_hash: str) -> None:
        """Forget what the tracker knows about a block leaving every map."""
        self._seen.pop(block_hash, None)
        if self.trust.origin or self.trust.abandoned:
            self.trust.forget(block_hash)

    def _evict(self, number: int, bucket: list[str]) -> None:
        """Too many blocks at one height: drop the oldest that no chain we follow goes through,
        with whatever the store holds above it."""
        protected: set[str] = set()
        tops = [entry[0] for entry in self._heads.values()]
        if self._tip is not None:
            tops.append(self._tip)
        for top in tops:
            block: Head | None = top
            while block is not None and block.number > number:
                block = self._blocks.get(block.parent_hash)
            if block is not None and block.number == number:
                protected.add(block.hash)
        victim = next((h for h in bucket if h not in protected), None)
        if victim is None:
            return
        doomed = {victim}
        height = number
        while doomed:
            layer = self._by_number.get(height)
            if layer is not None:
                layer[:] = [h for h in layer if h not in doomed]
                if not layer:
                    del self._by_number[height]
            for block_hash in doomed:
                del self._blocks[block_hash]
                self._drop(block_hash)
            height += 1
            above = self._by_number.get(height, ())
            doomed = {h for h in above if self._blocks[h].parent_hash in doomed}

    def _connect(self, block: Head, seq: int) -> tuple[list[Head], list[Event]]:
        """Add ``block`` (parent stored) and every held descendant that passes the structural
        checks; return those connected and the ``Rejected`` events of the others."""
        connected = [block]
        rejected: list[Event] = []
        self._add_to_store(block, self._seen.get(block.hash, seq))
        i = 0
        while i < len(connected):
            parent = connected[i]
            children = self._held_by_parent.pop(parent.hash, None)
            i += 1
            if not children:
                continue
            for child_hash in children:
                child = self._held.pop(child_hash, None)
                self._held_owner.pop(child_hash, None)
                if child is None:
                    continue
                fault = structural_fault("-", child, parent)
                if fault is not None:
                    announcers = self._held_announcements.pop(child.hash, [])
                    who = announcers[0][0] if announcers else "-"
                    rejected.append(Rejected(who, child.hash, fault.reason, fault.detail))
                    for above in self._held_above(child.hash):
                        self._forget_held(above)
                    self._drop(child.hash)
                    continue
                self._add_to_store(child, self._seen.get(child.hash, seq))
                connected.append(child)
        return connected, rejected

    def _hold(self, client: str, block: Head, seq: int) -> list[Event]:
        """Keep ``block`` until its parent arrives (checked now if that parent is held)."""
        if block.hash in self._held:
            return []
        parent = self._held.get(block.parent_hash) or self._foreign.get(block.parent_hash)
        if parent is not None:
            fault = structural_fault(client, block, parent)
            if fault is not None:
                return [fault]
        self._held[block.hash] = block
        self._held_owner[block.hash] = client
        self._seen.setdefault(block.hash, seq)
        self._held_by_parent.setdefault(block.parent_hash, []).append(block.hash)
        limit = _HELD_PER_WINDOW_BLOCK * (self.finality_depth + 1)
        if len(self._held) > limit:
            # Evict from the client holding the most (a flood of orphans is one client's), its
            # lowest first: another client's held head waiting for its parent survives.
            owners = self._held_owner
            counts: dict[str, int] = {}
            for owner in owners.values():
                counts[owner] = counts.get(owner, 0) + 1
            top = max(counts, key=lambda c: counts[c])
            mine = [self._held[h] for h, owner in owners.items() if owner == top]
            excess = len(self._held) - limit
            for lowest in sorted(mine, key=lambda b: b.number)[:excess]:
                self._forget_held(lowest)
        return []

    def _on_chain_of(self, block: Head, head: Head) -> bool:
        """Is ``block`` ``head`` itself or one of its ancestors in the store?"""
        blocks = self._blocks
        current: Head | None = head
        while current is not None and current.number > block.number:
            current = blocks.get(current.parent_hash)
        return current is not None and current.hash == block.hash

    def _held_above(self, block_hash: str) -> list[Head]:
        """Every held block that waits (directly or not) on ``block_hash``."""
        found: list[Head] = []
        waiting = [block_hash]
        while waiting:
            for child_hash in self._held_by_parent.get(waiting.pop(), ()):
                child = self._held.get(child_hash)
                if child is not None:
                    found.append(child)
                    waiting.append(child.hash)
        return found

    def _forget_held(self, block: Head) -> None:
        self._held.pop(block.hash, None)
        self._held_owner.pop(block.hash, None)
        self._held_announcements.pop(block.hash, None)
        self._drop(block.hash)
        siblings = self._held_by_parent.get(block.parent_hash)
        if siblings is not None:
            try:
                siblings.remove(block.hash)
            except ValueError:
                pass
            if not siblings:
                del self._held_by_parent[block.parent_hash]

    def _add_foreign(self, block: Head, seq: int) -> None:
        self._foreign[block.hash] = block
        self._seen.setdefault(block.hash, seq)
        limit = _HELD_PER_WINDOW_BLOCK * (self.finality_depth + 1)
        if len(self._foreign) > limit:
            keep = {entry[0].hash for entry in self._foreign_heads.values()}
            lowest = sorted(self._foreign.values(), key=lambda b: b.number)
            for old in [b for b in lowest if b.hash not in keep][: len(self._foreign) - limit]:
                del self._foreign[old.hash]
                self._drop(old.hash)

    def _held_root(self, block: Head) -> Head:
        """The lowest held ancestor of ``block`` (its parent is what to fetch next)."""
        # Follow a held parent only one height down: unverified headers can claim any parent,
        # and a lying client's cycle (A's parent B, B's parent A) would loop here forever.
        held = self._held
        while True:
            parent = held.get(block.parent_hash)
            if parent is None or parent.number != block.number - 1:
                return block
            block = parent

    def _prune(self) -> None:
        """Forget blocks more than ``finality_depth`` below the tip (store, held, foreign)."""
        assert self._tip is not None
        low = self._tip.number - self.finality_depth
        if low < self._pruned_below + _PRUNE_BATCH:
            return
        by_number = self._by_number
        blocks = self._blocks
        seen = self._seen
        origin = self.trust.origin
        heights: Iterable[int]
        if low - self._pruned_below <= len(by_number):
            heights = range(self._pruned_below, low)
        else:  # a jump far ahead (first anchor, gap): walk the index, not the number line
            heights = [n for n in by_number if n < low]
        for number in heights:
            for block_hash in by_number.pop(number, ()):
                del blocks[block_hash]
                del seen[block_hash]
                if origin and block_hash in origin:
                    self.trust.forget(block_hash)
        self._pruned_below = low
        if self.trust.abandoned or self.trust.ahead:
            self.trust.prune_below(low)
        if self._held:
            for block in [b for b in self._held.values() if b.number < low]:
                self._forget_held(block)
        if self._foreign:
            keep = {entry[0].hash for entry in self._foreign_heads.values()}
            for block in [b for b in self._foreign.values() if b.number < low]:
                if block.hash not in keep:
                    del self._foreign[block.hash]
                    self._drop(block.hash)

    def _diff(self, client: str, old_tip: Head, new_tip: Head) -> Event:
        """Walk both branches back to their common ancestor."""
        blocks = self._blocks
        old_path: list[Head] = []
        new_path: list[Head] = []
        a: Head | None = old_tip
        b: Head | None = new_tip
        while a is not None and b is not None and a.number > b.number:
            old_path.append(a)
            a = blocks.get(a.parent_hash)
        while a is not None and b is not None and b.number > a.number:
            new_path.append(b)
            b = blocks.get(b.parent_hash)
        while a is not None and b is not None and a.hash != b.hash:
            old_path.append(a)
            new_path.append(b)
            a = blocks.get(a.parent_hash)
            b = blocks.get(b.parent_hash)
        if a is None or b is None or a.number < old_tip.number - self.finality_depth:
            return DeepReorg(client, old_tip, new_tip, "ancestor_below_window")
        new_path.reverse()
        if not old_path:
            return Extension(client, old_tip, tuple(new_path))
        old_path.reverse()
        return Reorg(client, a, tuple(old_path), tuple(new_path))

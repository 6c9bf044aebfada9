"""Which blocks are canonical right now, and which of ours are deep enough to be final.

A small pure helper for the tx manager: it follows the tracker's events (extensions, reorgs,
re-anchors), answers "is this block still canonical?" (an inclusion scan that raced a reorg must
not mark anything in a dropped block) and reports the blocks holding our transactions once they
are ``finality_depth`` below the tip.
"""

from __future__ import annotations

from heads.events import Extension, Head, Reorg

__all__ = ["CanonicalWindow"]


class CanonicalWindow:
    """Canonical ``number -> hash`` for the last ``finality_depth`` (+ margin) blocks."""

    def __init__(self, finality_depth: int, margin: int = 16) -> None:
        self.finality_depth = finality_depth
        self._keep = finality_depth + margin
        self._by_number: dict[int, str] = {}
        self._numbers: dict[str, int] = {}
        self._held: dict[str, int] = {}  # blocks holding our transactions: hash -> number
        self._scanned: set[str] = set()  # canonical blocks searched for our transactions
        self.tip: Head | None = None

    def _add(self, block: Head) -> None:
        previous = self._by_number.get(block.number)
        if previous is not None:
            self._numbers.pop(previous, None)
            self._scanned.discard(previous)
        self._by_number[block.number] = block.hash
        self._numbers[block.hash] = block.number

    def _set_tip(self, tip: Head) -> None:
        self.tip = tip
        # Heights above a lower tip (a rollback) are no longer canonical.
        for number in [n for n in self._by_number if n > tip.number]:
            self._forget(self._by_number.pop(number))
        low = tip.number - self._keep
        if len(self._by_number) > self._keep + 8:
            for number in [n for n in self._by_number if n < low]:
                self._forget(self._by_number.pop(number))

    def _forget(self, block_hash: str) -> None:
        self._numbers.pop(block_hash, None)
        self._scanned.discard(block_hash)

    def extend(self, event: Extension) -> None:
        for block in event.added:
            self._add(block)
        self._set_tip(event.tip)

    def reorg(self, event: Reorg) -> None:
        for block in event.old:
            if self._by_number.get(block.number) == block.hash:
                del self._by_number[block.number]
            self._forget(block.hash)
            self._held.pop(block.hash, None)
        for block in event.new:
            self._add(block)
        self._set_tip(event.tip)

    def reset(self, tip: Head) -> None:
        """A deep reorg: nothing we knew is known to be canonical any more."""
        self._by_number.clear()
        self._numbers.clear()
        self._held.clear()
        self._scanned.clear()
        self._add(tip)
        self._set_tip(tip)

    def is_canonical(self, block_hash: str) -> bool:
        return block_hash in self._numbers

    def judge(self, number: int, block_hash: str) -> bool | None:
        """Is ``block_hash`` at height ``number`` canonical? ``True``/``False`` inside the window,
        ``False`` above the tip (not ours yet), ``None`` below the window (cannot tell)."""
        if block_hash in self._numbers:
            return True
        tip = self.tip
        if tip is None:
            return None
        if number > tip.number:
            return False
        if number in self._by_number:
            return False
        return None  # below what we have followed: finality or a later recheck settles it

    def orphans(self) -> list[str]:
        """Held blocks the window now shows another block at (their inclusion came from an RPC
        answer about a branch we do not follow, e.g. a lagging node's receipt at a restart);
        each reported once."""
        by_number = self._by_number
        out = [h for h, n in self._held.items() if n in by_number and by_number[n] != h]
        for block_hash in out:
            del self._held[block_hash]
        return out

    def holds_outside(self) -> list[tuple[str, int]]:
        """Held blocks at heights the window has no block for (below where it starts, e.g. an
        inclusion the journal or a receipt gave at a restart): ``(hash, number)``."""
        by_number = self._by_number
        return [(h, n) for h, n in self._held.items() if n not in by_number]

    def drop_hold(self, block_hash: str) -> None:
        self._held.pop(block_hash, None)

    def mark_scanned(self, block_hash: str) -> None:
        """The canonical block ``block_hash`` was searched for our transactions."""
        if block_hash in self._numbers:
            self._scanned.add(block_hash)

    def scanned(self, number: int) -> bool:
        """The canonical block at height ``number`` was searched for our transactions (or it is
        below what we have followed: receipts and finality answer for those)."""
        block_hash = self._by_number.get(number)
        if block_hash is not None:
            return block_hash in self._scanned
        return not self._by_number or number < min(self._by_number)

    def hold(self, block_hash: str, number: int) -> None:
        """``block_hash`` holds one of our transactions: report it when it becomes final."""
        self._held[block_hash] = number

    def final_blocks(self) -> list[str]:
        """Held blocks now at least ``finality_depth`` below the tip (each reported once)."""
        if self.tip is None or not self._held:
            return []
        limit = self.tip.number - self.finality_depth
        final = [h for h, n in self._held.items() if n <= limit]
        for block_hash in final:
            del self._held[block_hash]
        return final

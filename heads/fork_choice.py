"""Fork choice (DESIGN.md §3, rules v2): candidates, ranking, and the tip recompute.

Among the current heads of the connected clients (quarantined ones excluded while another
stands in), the highest; equal heights by "first seen" (``latest`` / ``first-seen``). A lower
candidate wins only on its client's own step down; a late copy of a block the chain left does
not flip it back; a deep move waits for the rules of :mod:`heads.one_voice` and
:mod:`heads.anchor`.
"""

from __future__ import annotations

from collections.abc import Collection

from heads.anchor import supporters
from heads.events import DeepReorg, Event, Extension, Head, Reorg
from heads.one_voice import OneVoice
from heads.tracker_state import (
    _ONE_VOICE_DEPTH,
)

__all__ = ["ForkChoiceRules"]


class ForkChoiceRules(OneVoice):
    """The recompute of the tip (``_choose_tip``) and the ranking it uses."""

    def _regressed(
        self, client: str, current: tuple[Head, int] | None, head: Head
    ) -> tuple[str, ...]:
        """``(client,)`` when ``head`` takes ``client``'s live head down or sideways (no
        higher): only then may it pull the tip below where it is (DESIGN.md §3: a lone client's
        lower block or ancestor moves the tip; a late client catching up, after the tip holder
        left, does not roll it back)."""
        if current is None:
            return ()  # its first head: a client catching up from nowhere never steps down
        # A head from before a disconnect still counts here: a node restarted on an older
        # chain (anvil restarted from genesis) steps down by announcing it.
        if head.hash == current[0].hash:
            return ()  # the same block again (a repeated held announcement): no step at all
        return (client,) if head.number <= current[0].number else ()

    def _excluded(self, client: str) -> bool:
        """Is ``client`` quarantined while another connected client could stand in for it?"""
        quarantined = self.trust.quarantined
        if client not in quarantined:
            return False
        return any(c not in quarantined for c in self._live_heads())

    def _candidates(self) -> list[Head]:
        live = self._live_heads()
        quarantined = self.trust.quarantined
        if not quarantined:
            return list(live.values())
        found = [head for c, head in live.items() if c not in quarantined]
        return found if found else list(live.values())

    def _rank(self, head: Head) -> tuple[int, int]:
        return (head.number, self._sign * self._seen.get(head.hash, 0))

    def _outranks_candidates(self, head: Head, seq: int) -> bool:
        """Would ``head``, first seen at ``seq`` (not stored yet), rank above every candidate?"""
        rank = (head.number, self._sign * seq)
        return all(self._rank(other) < rank for other in self._candidates())

    def _would_win(self, head: Head) -> bool:
        rank = self._rank(head)
        return all(self._rank(other) < rank for other in self._candidates())

    def _choose_tip(self, client: str, movers: Collection[str]) -> list[Event]:
        """Recompute the tip; ``movers`` just took their own heads down or sideways.

        The best candidate wins when it ranks above the tip. A candidate ranking below the tip
        (a lower block, an ancestor, an older sibling) wins only when a mover just made it its
        head (a client that announces a lower block or an ancestor of its own head moves the
        tip when no connected client is higher, DESIGN.md §3), or when the tip is an unconfirmed
        block of a quarantined client. The tip holder's disconnect followed by somebody else's
        line (a late copy, a client catching up, a held head) is no rollback. Nor is a
        re-quarantine of a *vouched* client (``Trust.vouched``: released by the one-chain
        release) that still stands on the tip: a candidate on the tip's own chain below it (the
        late peer's head) does not replace it, a candidate on another branch may (a liar
        jittering its lag around the threshold bought one fall back and one return each time).
        A mover's rewind onto an ancestor of the tip that leaves nobody on the tip lets the
        current heads on the tip's chain above the rewound head rank as they are
        (``_rewound_below``).
        """
        candidates = self._candidates()
        if not candidates:
            return []
        old_tip = self._tip
        if len(candidates) > 1:
            candidates.sort(key=self._rank, reverse=True)
        floor: tuple[int, int] | None = None
        moved: set[str] = set()
        along: str | None = None  # the vouched client whose chain the tip does not fall back on
        rewound: Head | None = None  # a mover's rewind onto the tip's chain, the tip abandoned
        if old_tip is not None:
            floor = self._rank(old_tip)
            for mover in movers:
                entry = self._heads.get(mover)
                if entry is not None and entry[0].hash != old_tip.hash:
                    moved.add(entry[0].hash)
            if self._pending:
                moved |= self._pending_moves() - {old_tip.hash}
            if movers:  # only a step down or sideways can rewind (off the extension path)
                rewound = self._rewound_below(movers, old_tip)
            trust = self.trust
            if trust.quarantined:
                holder = trust.origin.get(old_tip.hash)
                if holder in trust.quarantined:
                    floor = None  # a liar's block: any honest candidate may replace it
                    if holder in trust.vouched and self._stands_on(holder, old_tip):
                        along = holder  # ... but not an ancestor of it (see the docstring)
        for new_tip in candidates:
            if old_tip is not None and new_tip.hash == old_tip.hash:
                return []
            if (
                floor is not None
                and self._rank(new_tip) < floor
                and new_tip.hash not in moved
                and not (
                    rewound is not None
                    and old_tip is not None
                    and new_tip.number > rewound.number
                    and self._below_on_chain(new_tip, old_tip)
                )
            ):
                return []  # nobody just announced it: no rollback on somebody else's line
            if (
                along is not None
                and old_tip is not None
                and new_tip.hash not in moved
                and self._below_on_chain(new_tip, old_tip)
            ):
                return []  # a vouched client quarantined again: no fall back along its chain
            if old_tip is None:
                self._tip = new_tip
                self._prune()
                return [Extension(client, None, (new_tip,))]
            if new_tip.parent_hash == old_tip.hash:  # the common case: one block on top
                event: Event = Extension(client, old_tip, (new_tip,))
            else:
                if (
                    floor is not None
                    and not moved
                    and new_tip.number > old_tip.number
                    and self._left_behind(old_tip, new_tip)
                ):
                    continue  # a late copy of a block the chain already left: no flip back
                event = self._diff(client, old_tip, new_tip)
                if (
                    type(event) is Reorg
                    and event.depth > _ONE_VOICE_DEPTH
                    and self._one_voice(old_tip, event)
                ):
                    if new_tip.hash in moved:
                        self._hold_move(new_tip)
                    continue  # one client's word against a deeper part of the chain: wait
                if (
                    type(event) is DeepReorg
                    and not self._single_client()
                    and supporters(new_tip, self._supporting_heads(), self._blocks) < 2
                ):
                    continue  # a deep move on one client's word: not while others exist
            self._tip = new_tip
            self._prune()
            return [event]
        return []

    def _rewound_below(self, movers: Collection[str], old_tip: Head) -> Head | None:
        """The head a mover just rewound to, when it is an ancestor of ``old_tip`` and no live
        head stands on ``old_tip`` any more (nobody's current head is it or above it on its
        chain). Then the tip is a block every client left, and the highest current head on
        the chain between the two (a lagging peer's) ranks as DESIGN.md §3 says: it wins over
        the mover's lower head. Only along the tip's own chain: a sideways step (an
        ``anvil_reorg`` re-mined branch) leaves a peer's head on the dropped branch no
        candidate below the floor (client-chaos seed 10070258)."""
        for mover in movers:
            entry = self._heads.get(mover)
            if entry is None or not self._below_on_chain(entry[0], old_tip):
                continue
            if any(self._on_chain_of(old_tip, head) for head in self._live_heads().values()):
                return None
            return entry[0]
        return None

    def _stands_on(self, client: str, block: Head) -> bool:
        """Is ``block`` ``client``'s current head or an ancestor of it?"""
        entry = self._heads.get(client)
        return entry is not None and self._on_chain_of(block, entry[0])

    def _below_on_chain(self, block: Head, tip: Head) -> bool:
        """Is ``block`` lower than ``tip`` and on its chain (an ancestor, within the window)?"""
        return block.number < tip.number and self._on_chain_of(block, tip)

    def _left_behind(self, old_tip: Head, new_tip: Head) -> bool:
        """Is ``new_tip`` on another branch and first seen before the first block of the tip's
        own branch? Then the chain already left it: a late client's copy of a block a reorg
        dropped, higher than the new branch has got so far (the client-chaos suite's 202 for
        200: a client just connected delivered the abandoned tip while the fast client was
        still announcing the re-mined blocks below it). The branch it is on wins again only
        with a block first seen after that (it really grew). An extension is never left
        behind, and the rule is off when a client just stepped down (the plain ranking then
        decides)."""
        blocks = self._blocks
        seen = self._seen
        a: Head | None = old_tip
        b: Head | None = new_tip
        branch_seen: int | None = None  # when the tip's branch was first seen (its earliest)
        while a is not None and b is not None and a.hash != b.hash:
            if a.number >= b.number:
                when = seen.get(a.hash, 0)
                branch_seen = when if branch_seen is None else min(branch_seen, when)
                a = blocks.get(a.parent_hash)
            else:
                b = blocks.get(b.parent_hash)
        if a is None or b is None or branch_seen is None:
            return False
        return seen.get(new_tip.hash, 0) < branch_seen

    def _supporting_heads(self) -> list[Head]:
        return list(self._live_heads().values())

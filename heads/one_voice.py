"""The one-voice reorg rule (docs/chain-tracking.md, *One voice*; DESIGN.md §3 is silent on
deep-but-in-window reorgs, this is our rule).

With two or more clients configured, a reorg that drops more than ``_ONE_VOICE_DEPTH`` (1)
blocks of the tip's chain, on the word of a client that contradicts another connected client
(another live head stands on the branch it drops), waits for a second connected client on the
new branch, except one voice against one (a single other client stands on the dropped branch
and nobody is undecided: within the run-ahead lead, or taken back by the client that stood on
it itself). When nobody else stands on the dropped branch (the others lag at or below the
fork) the plain ranking decides at once (DESIGN.md §3). Depth-1 reorgs (mainnet's,
post-merge) move the tip at once. Deviating from pure fork choice only against another
client's announced blocks is DESIGN.md §3's trust clause: a client whose blocks no other
connected client confirms stops being a candidate.
"""

from __future__ import annotations

from collections.abc import Mapping

from heads.events import Event, Head, Reorg
from heads.store import Store
from heads.tracker_state import (
    _LEAD,
    _ONE_VOICE_DEPTH,
)

__all__ = ["OneVoice"]


class OneVoice(Store):
    """Whether a deep reorg may move the tip on the word of the clients behind it."""

    def _one_voice(
        self, old_tip: Head, reorg: Reorg, instead: tuple[str, Head] | None = None
    ) -> bool:
        """Must ``reorg`` (deeper than ``_ONE_VOICE_DEPTH``) wait for a second client?

        With two or more clients configured and another connected client that could confirm
        or contradict it, a reorg that drops more than one block of the tip's chain needs two
        connected clients whose live heads are on the new branch (its first block or a
        descendant; for a fall back onto the ancestor itself, the ancestor or another branch
        from it): a liar's forged branch 10 deep inside the window, raced to the honest height
        + 3 in one burst, has no suspect block, and moved the tip on its word alone. Not
        held: a lone connected client (a lone client is never frozen), a single configured
        client, a reorg nobody else contradicts (no other live head on the dropped branch),
        one voice against one (see below).
        """
        if self._single_client():
            return False
        live = self._live_heads()
        if instead is not None:
            live[instead[0]] = instead[1]  # judged as if the client's new head were in place
        if len(live) < 2:
            return False
        # A quarantined client's tip is no exception: its chain below its unconfirmed blocks
        # may be one another client stands on (an honest client quarantined for outrunning a
        # lagging peer: falling back onto a liar's forged branch 18 deep, found by the deep
        # liar fuzz), and within the lead the fall back of a forged race is one voice against
        # one anyway.
        new_voices, old_voices, undecided = self._branch_voices(reorg, live)
        if new_voices >= 2:
            return False
        if old_voices == 0:
            # Nobody else stands on the dropped branch: the reorging client contradicts no
            # other connected client, and DESIGN.md §3 has the plain ranking decide ("a single
            # client that announces a lower block on another branch, or an ancestor of the
            # tip, moves the tip when no connected client is higher"). Peers below the fork
            # (lagging, client-chaos seed 202) or on a third branch vouch for nothing dropped.
            return False
        if old_voices == 1 and not undecided:
            # One voice against one, nobody else to ask (no connected client below the fork
            # still to choose): another single client holds the branch it drops, no
            # deeper than a client may run ahead unsuspected. Held, two clients that disagree
            # would freeze the tip (a liar's forged blocks within the lead, then the honest
            # chain outgrowing them). Deeper, it is one client's word against a chain the
            # other built in the open (a lagging liar forking 10 deep below the honest tip).
            if reorg.depth <= _LEAD + 1:
                return False
            # Deeper, it is one client's word against a chain the other built in the open (a
            # lagging liar forking 10 deep below the honest tip), unless a client on the new
            # branch takes back a branch it stood on itself: anvil_reorg 10 announced by the
            # fast client while its only peer sits stalled on the old chain (client-chaos seed
            # 10070258: held, two injected reorgs were counted as one, 3 s late). With a clock,
            # only while that peer is stalled: a liar that relayed the honest chain has "stood
            # on" it too, and its 10-deep fork raced past a progressing honest peer is no
            # retraction (review of heads6: the tip followed it 10 deep with two clients).
            return not (self._retracted(reorg, live) and self._old_voice_stalled(reorg, live))
        return True  # one client's word against two

    def _branch_voices(self, reorg: Reorg, live: Mapping[str, Head]) -> tuple[int, int, int]:
        """How many live heads are on ``reorg``'s new branch, how many on the branch it drops
        (its first block or a descendant), and how many are undecided (at or below the
        ancestor, on its chain, and not stalled)."""
        blocks = self._blocks
        ancestor = reorg.ancestor
        first = reorg.new[0] if reorg.new else None
        dropped = reorg.old[0].hash
        stalled_before = self._stalled_before()
        new_voices = old_voices = undecided = 0
        for client, head in live.items():
            if head.number <= ancestor.number:
                if first is None and head.hash == ancestor.hash:
                    new_voices += 1
                    continue
                if stalled_before is not None and (
                    self._progress.get(client, stalled_before) < stalled_before
                ):
                    continue
                block: Head | None = ancestor
                while block is not None and block.number > head.number:
                    block = blocks.get(block.parent_hash)
                undecided += block is not None and block.hash == head.hash
                continue
            block = head
            while block is not None and block.number > ancestor.number + 1:
                block = blocks.get(block.parent_hash)
            if block is None or block.number != ancestor.number + 1:
                continue
            if block.hash == dropped:
                old_voices += 1
            elif first is not None:
                new_voices += block.hash == first.hash
            else:
                new_voices += block.parent_hash == ancestor.hash
        return new_voices, old_voices, undecided

    def _retracted(self, reorg: Reorg, live: Mapping[str, Head]) -> bool:
        """Does a client whose live head is on ``reorg``'s new branch take back a branch it
        stood on itself (its head before its latest step down was the dropped branch's first
        block or a descendant)?"""
        blocks = self._blocks
        dropped = reorg.old[0]
        if not reorg.new:
            return False  # a fall back onto the ancestor: nobody is on a new branch
        first = reorg.new[0]
        for client, head in live.items():
            left = self._left.get(client)
            if left is None or left.number < dropped.number or head.number < first.number:
                continue
            on_new: Head | None = head
            while on_new is not None and on_new.number > first.number:
                on_new = blocks.get(on_new.parent_hash)
            if on_new is None or on_new.hash != first.hash:
                continue
            block: Head | None = left
            while block is not None and block.number > dropped.number:
                block = blocks.get(block.parent_hash)
            if block is not None and block.hash == dropped.hash:
                return True
        return False

    def _old_voice_stalled(self, reorg: Reorg, live: Mapping[str, Head]) -> bool:
        """Without a clock, True (no way to tell). With one: has every live client on the
        branch ``reorg`` drops brought nothing new for ``stall_seconds``?"""
        stalled_before = self._stalled_before()
        if stalled_before is None:
            return True
        blocks = self._blocks
        dropped = reorg.old[0]
        for client, head in live.items():
            block: Head | None = head
            while block is not None and block.number > dropped.number:
                block = blocks.get(block.parent_hash)
            on_dropped = block is not None and block.hash == dropped.hash
            if on_dropped and self._progress.get(client, stalled_before) >= stalled_before:
                return False
        return True

    def _held_by_one_voice(self, client: str, head: Head) -> bool:
        """Would the one-voice rule hold the tip's move to ``client``'s new ``head`` (parent
        stored, itself not yet)? A new block has no second voice yet."""
        tip = self._tip
        if tip is None or head.parent_hash == tip.hash or head.parent_hash not in self._blocks:
            return False
        event = self._diff(client, tip, head)
        if type(event) is not Reorg or event.depth <= _ONE_VOICE_DEPTH:
            return False
        return self._one_voice(tip, event, (client, head))

    def _free_fork(self, client: str, head: Head) -> bool:
        """Is ``client``'s self-fork to ``head`` (parent stored, itself not yet) a reorg deeper
        than ``_ONE_VOICE_DEPTH`` that contradicts no other connected client (nobody else's
        live head on the branch it drops), and the client's first such since another client
        confirmed its previous one? Then it is not suspect: it is plain fork choice
        (DESIGN.md §3, a lower block moves the tip when no connected client is higher), and
        counting it quarantined an honest fast client whose reorg came while its only peer
        lagged; the tip fell back to that peer's stale head (client-chaos seed 202). Once per
        confirmation: a liar repeating 2-deep self-forks above a lagging peer is suspect from
        its second one on, and quarantined as a sibling flood is."""
        tip = self._tip
        if tip is None or head.parent_hash == tip.hash or head.parent_hash not in self._blocks:
            return False
        event = self._diff(client, tip, head)
        if type(event) is not Reorg or event.depth <= _ONE_VOICE_DEPTH:
            return False
        live = self._live_heads()
        live[client] = head
        if self._branch_voices(event, live)[1]:
            return False  # another client stands on the dropped branch: contradicted
        previous = self._free.get(client)
        if previous is not None and not self._confirmed_by_other(client, previous, live):
            return False
        if len(self._free) >= 4 * max(len(self._clients), 1):
            self._free.clear()  # bounded whatever client names arrive
        self._free[client] = head.hash
        return True

    def _confirmed_by_other(self, client: str, block_hash: str, live: Mapping[str, Head]) -> bool:
        """Is another live client's head ``block_hash`` or a descendant of it (a block that
        left the store counts as confirmed: it no longer matters)?"""
        block = self._blocks.get(block_hash)
        if block is None:
            return True
        for other, head in live.items():
            if other != client and self._on_chain_of(block, head):
                return True
        return False

    def _confirm_free(self, client: str, head: Head, events: list[Event]) -> None:
        """``client`` announced the stored ``head``: another client's free self-fork
        (``_free_fork``) that it is or descends from is confirmed. Its owner may fork freely
        once more, and its older unconfirmed blocks stop counting as a confirmed suspect
        block's would (:meth:`heads.trust.Trust.forgive`): they were never confirmed only
        because this block, not suspect, replaced them."""
        blocks = self._blocks
        for owner, block_hash in list(self._free.items()):
            block = blocks.get(block_hash)
            if owner == client or block is None:
                continue
            if self._on_chain_of(block, head):
                del self._free[owner]
                self.trust.forgive(owner, block, blocks, events)

    def _hold_move(self, new_tip: Head) -> None:
        """A client's step onto ``new_tip`` was held by the one-voice rule: remember it, so the
        second client's copy that releases it lets it win although it ranks below the tip."""
        for client, head in self._live_heads().items():
            if head.hash == new_tip.hash:
                self._pending[client] = head.hash
        if len(self._pending) > 4 * max(len(self._clients), 1):
            self._pending.clear()  # bounded whatever clients do (entries are per client anyway)

    def _pending_moves(self) -> set[str]:
        """Held steps still standing: the client's live head is the block it stepped to."""
        live = self._live_heads()
        standing = {
            c: h for c, h in self._pending.items() if live.get(c) is not None and live[c].hash == h
        }
        self._pending = standing
        return set(standing.values())

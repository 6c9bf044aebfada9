"""Which new blocks count towards a client's quarantine (DESIGN.md §3, trust; :mod:`heads.trust`
keeps the counts).

Suspect: a self-fork the one-voice rule does not hold (but a deep one nobody contradicts, once
per confirmation: ``_free_fork``), a run more than ``_LEAD`` blocks ahead
of every other connected, progressing client (climbing back to where the chain stood is no
run), a branch built alone against another client's progress. Backfilled blocks are judged
like announced ones.
"""

from __future__ import annotations

from heads.events import Event, Head
from heads.fork_choice import ForkChoiceRules
from heads.tracker_state import (
    _LEAD,
)

__all__ = ["Suspicion"]


class Suspicion(ForkChoiceRules):
    """Judging announcements and backfilled blocks for :class:`heads.trust.Trust`."""

    def _suspect(self, client: str, head: Head, current: tuple[Head, int] | None) -> bool:
        """Does the new ``head`` count towards ``client``'s quarantine (:mod:`heads.trust`)?

        With another client connected: when it forks itself (no higher than its own head: a
        sibling flood), or when it runs more than ``_LEAD`` blocks ahead of every other connected
        client's head (a forged chain raced ahead block by block). An honest client is ahead of
        the others by one or two blocks at most, and their copies confirm its blocks.
        """
        if len(self._connected) < 2:
            return False
        if current is not None and head.number <= current[0].number:
            # A self-fork deeper than one block cannot move the tip on this client's word (the
            # one-voice rule holds it), so it needs no quarantine: a second client's copy is
            # what lets it win. Counting it quarantined an honest fast client whose reorg of
            # depth 2 came while its only peer lagged (client-chaos seed 202).
            # Nor is one that contradicts no other client, once (``_free_fork``).
            return not (self._held_by_one_voice(client, head) or self._free_fork(client, head))
        if self._contested(client, head):
            return True
        if self.trust.vouching and self._under_a_vouched_run(client, head):
            return True
        if self._runs_ahead(client, head):
            self.trust.ahead.add(head.hash)  # a run ahead: what Trust._release_chain releases
            return True
        return False

    def _runs_ahead(self, client: str, head: Head) -> bool:
        """Is ``head`` more than ``_LEAD`` blocks above every other connected client's live
        head (and no re-covered height, :meth:`_replaces`)? Asked of announcements and of
        backfilled blocks alike: a liar's one far-ahead announcement whose forged ancestors
        it serves by hash down to the tip is a run ahead block by block (:meth:`on_block`)."""
        if len(self._connected) < 2:
            return False
        since = self._since
        heads = self._heads
        near = head.number - _LEAD
        low = self._window_low()  # a head below the window is on a chain we no longer hold
        stalled_before = self._stalled_before()
        behind = False  # some other client has a live head, all of them far below
        for other in self._connected:
            if other != client:
                entry = heads.get(other)
                if entry is None or (since and entry[1] < since.get(other, 0)):
                    continue
                if entry[0].number < low:
                    continue
                if other in self.trust.quarantined:
                    continue  # a quarantined liar idling low is no peer to run ahead of
                if (
                    stalled_before is not None
                    and self._progress.get(other, stalled_before) < stalled_before
                ):
                    # A peer that brought nothing new for ``stall_seconds`` (the subscriber's
                    # progress watchdog, seen by the core) is no peer to run ahead of: an
                    # honest client 5 blocks past a silent laggard is no forged race.
                    continue
                if entry[0].number >= near:
                    return False  # the usual case, found at once: someone is close
                behind = True
        return behind and not self._replaces(client, head)

    def _replaces(self, client: str, head: Head) -> bool:
        """Does ``head`` re-cover a height the chain already held: back up to where ``client``
        stood before its own reorg, or to a height where the store holds a block of another
        branch that is no unconfirmed one? Then it is no run ahead: anvil announces a reorg's
        re-mined branch in one burst, and the client that delivers it (the one that reorged,
        or one just reconnected) is for a moment far above peers still on the old branch
        (client-chaos seeds 10070258 and 155200544). A forged race above the honest tip has
        no such height beyond the lead it was allowed to begin with."""
        if head.number <= self._peak.get(client, -1):
            return True
        origin = self.trust.origin
        return any(
            block_hash != head.hash and block_hash not in origin
            for block_hash in self._by_number.get(head.number, ())
        )

    def _stepped_down(self, client: str, head: Head) -> None:
        """``client`` leaves ``head`` for a block no higher (a reorg): remember the height, so
        its climb back up to it, the re-mined branch arriving in one burst while the other
        clients are still below, is no run ahead (:meth:`_suspect`). Only a head that is no
        unconfirmed block of its own counts: a liar cannot extend its allowance by stepping down
        from a forged height."""
        if head.hash not in self.trust.origin and head.number > self._peak.get(client, -1):
            self._peak[client] = head.number

    def _contested(self, client: str, head: Head) -> bool:
        """Has another connected client, since ``head``'s parent was first seen, announced a
        lower block on another branch, two or more blocks past where the branches part? Then
        ``client`` builds its branch alone against the others' progress: a forged branch kept
        one block ahead of the honest tip (never a self-fork after its first block, never more
        than ``_LEAD`` ahead) is unconfirmed block after block. Propagation skew (a late copy of
        the block a reorg replaced) is one block past the fork, so it does not count."""
        parent_seen = self._seen.get(head.parent_hash)
        if parent_seen is None:
            return False
        blocks = self._blocks
        since = self._since
        for other, (other_head, seq) in self._heads.items():
            if (
                other == client
                or seq <= parent_seen
                or other_head.number >= head.number
                or other_head.hash == head.parent_hash
                or other not in self._connected
                or (since and seq < since.get(other, 0))
                # a suspect's word contests nothing: a liar on a branch of its own would
                # otherwise get the honest client quarantined too, and with every client
                # quarantined all heads are candidates again (its forged height wins)
                or other in self.trust.quarantined
                or other_head.hash in self.trust.origin
            ):
                continue
            ancestor = self._meeting(other_head, blocks.get(head.parent_hash))
            if ancestor is not None and other_head.number - ancestor.number >= 2:
                return True
        return False

    def _under_a_vouched_run(self, client: str, head: Head) -> bool:
        """Does ``head`` start or grow a branch below the head of a connected *vouched* client
        (``Trust.vouched``: its run ahead was confirmed by the one-chain release), parting from
        its chain two or more blocks below that head? The mirror of :meth:`_contested` for a
        peer that is higher: a late liar that forks off its own late head under the honest
        run it has been confirming builds its branch alone against that run. Without it, at a
        lag of 4-5 the fork was within the one-voice lead and won, and the honest client,
        running ahead of the forged chain, was never released (the tip on the forged race for
        as long as it lasted). A copy of a block the vouched client announced is no new block
        and is never judged here."""
        blocks = self._blocks
        for other in self.trust.vouching:  # a run confirmed to its top vouches for nothing
            if other == client or other not in self._connected:
                continue
            entry = self._heads.get(other)
            if entry is None or entry[0].number < head.number:
                continue
            ancestor = self._meeting(entry[0], blocks.get(head.parent_hash))
            if ancestor is not None and entry[0].number - ancestor.number >= 2:
                return True
        return False

    def _meeting(self, a: Head | None, b: Head | None) -> Head | None:
        """The common ancestor of ``a`` and ``b`` in the store; ``None`` where one chain runs out
        of stored blocks first (they do not meet inside the window)."""
        blocks = self._blocks
        while a is not None and b is not None and a.hash != b.hash:
            if a.number >= b.number:
                a = blocks.get(a.parent_hash)
            else:
                b = blocks.get(b.parent_hash)
        return a if b is not None else None

    def _judge_backfill(self, client: str, block: Head, events: list[Event]) -> None:
        """A backfilled block is suspect like an announced one when it runs ahead of every
        other connected client: otherwise a liar announces one forged block far ahead (one
        unconfirmed block, below the quarantine threshold) and serves its forged ancestors
        down to the honest tip by hash, and the whole forged chain connects and wins."""
        if self._runs_ahead(client, block):
            self.trust.ahead.add(block.hash)
            self.trust.originate(client, block, events)

"""Which client's word the tracker takes: confirmation and quarantine (DESIGN.md §3, trust).

A new block a client is the first to announce, while another client is connected, is
*suspect* when the client forks itself with it (no higher than its own current head: a sibling
flood) or runs more than a few blocks ahead of every other connected client with it (a forged
chain raced ahead); the tracker decides (``ChainTracker._suspect``). A suspect block stays
*unconfirmed* until another client announces it or a descendant of it (its parent hash commits
to it). A client with ``quarantine_after`` unconfirmed blocks in the window is *quarantined*:
its heads stop being candidates for the tip until none of its blocks is left unconfirmed (a
confirmation also forgives the branches the confirmed chain replaced: ``_forgive``;
docs/chain-tracking.md, *Quarantine release*), or until another client confirms a block of its
run ahead with everything it left unconfirmed on the one chain above it (``_release_chain``,
*the one-chain release*: a client ahead of a late peer). Blocks leaving the window (or evicted) stop
counting. Quarantine only shuts a client out while another connected client has a head to
stand in for it: a lone client is never frozen.

Pure bookkeeping: the tracker calls it and keeps the maps bounded by its window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from heads.events import Event, Head, Quarantine

__all__ = ["Trust"]

_NONE: Final = 1 << 62  # "no unconfirmed block": above every height


class Trust:
    """Unconfirmed blocks by origin, per-client counts and the quarantined set."""

    def __init__(self, quarantine_after: int = 2) -> None:
        if quarantine_after < 1:
            raise ValueError(f"quarantine_after must be >= 1, got {quarantine_after}")
        self.quarantine_after = quarantine_after
        self.origin: dict[str, str] = {}  # unconfirmed block hash -> the client that brought it
        self.unconfirmed: dict[str, int] = {}
        self.quarantined: set[str] = set()
        self.quarantines = 0  # how many times a client was quarantined
        # Clients released by a confirmation of their one chain with blocks of it still
        # unconfirmed above (:meth:`_release_chain`): while one of them is quarantined again,
        # the tip does not fall back along that chain (``ChainTracker._choose_tip``).
        self.vouched: set[str] = set()
        # Of those, the ones with blocks of that run still unconfirmed (a run confirmed to its
        # top vouches for nothing): a branch below one of their heads is suspect
        # (``ChainTracker._under_a_vouched_run``). Unlike ``vouched``, it ends when the client
        # has nothing left unconfirmed (:meth:`_unvouch`).
        self.vouching: set[str] = set()
        # Unconfirmed blocks a confirmation forgave as replaced (``_forgive``), by hash, with
        # the client that brought them, until they leave the window: a client with one left
        # is not released by :meth:`_release_chain` (it abandoned a block it ran ahead with).
        self.abandoned: dict[str, tuple[str, int]] = {}
        # Unconfirmed blocks that were suspect for running ahead (the tracker adds them:
        # ``ChainTracker._runs_ahead``), and of those the ones just confirmed (one confirm).
        self.ahead: set[str] = set()
        self.ahead_confirmed: set[str] = set()
        self.lowest = _NONE  # no unconfirmed block is lower (lazy: may be lower than the least)
        # Each client's current head (the tracker's own map, shared: ``_forgive`` spares the
        # chain a client stands on).
        self.heads: Mapping[str, tuple[Head, int]] = {}
        self.seen: Mapping[str, int] = {}  # when each block was first seen (the tracker's map)

    def originate(self, client: str, block: Head, events: list[Event]) -> None:
        """``client`` brought the suspect ``block`` while another client listens."""
        if block.hash in self.origin:
            return
        self.origin[block.hash] = client
        if block.number < self.lowest:
            self.lowest = block.number
        count = self.unconfirmed.get(client, 0) + 1
        self.unconfirmed[client] = count
        if count >= self.quarantine_after and client not in self.quarantined:
            self.quarantined.add(client)
            self.quarantines += 1
            events.append(Quarantine(client, True, count))

    def confirm(
        self, client: str, block: Head, blocks: Mapping[str, Head], events: list[Event]
    ) -> None:
        """``client`` announced ``block``: it and its ancestors down to the lowest unconfirmed
        height are confirmed where another client brought them (at most a window's walk, and
        none while nothing is unconfirmed)."""
        origin = self.origin
        lowest = self.lowest
        current: Head | None = block
        confirmed: dict[str, Head] = {}  # whose blocks were confirmed, the highest of each
        while current is not None and current.number >= lowest and origin:
            brought_by = origin.get(current.hash)
            if brought_by is not None and brought_by != client:
                del origin[current.hash]
                self.unconfirmed[brought_by] -= 1
                confirmed.setdefault(brought_by, current)
                if current.hash in self.ahead:
                    self.ahead.discard(current.hash)
                    if confirmed[brought_by] is current:
                        self.ahead_confirmed.add(current.hash)
            current = blocks.get(current.parent_hash)
        for brought_by, highest in confirmed.items():
            self._forgive(brought_by, highest, blocks)
        if self.vouching:
            self._unvouch(confirmed)
        self._release(client, events)
        for brought_by, highest in confirmed.items():
            if brought_by in self.quarantined and brought_by != client:
                self._release_chain(brought_by, highest, blocks, events)
        if self.ahead_confirmed:
            self.ahead_confirmed.clear()
        if not origin:
            self.lowest = _NONE

    def forgive(
        self, client: str, block: Head, blocks: Mapping[str, Head], events: list[Event]
    ) -> None:
        """Another client confirmed ``client``'s ``block`` that was never suspect (a free
        self-fork, ``ChainTracker._free_fork``): as :meth:`confirm` does for a suspect one, the
        branches it replaced stop counting (:meth:`_forgive`), and its quarantine ends if
        nothing of it is left unconfirmed."""
        self._forgive(client, block, blocks)
        self._release(None, events)

    def _release(self, announcer: str | None, events: list[Event]) -> None:
        """End the quarantine of every client but ``announcer`` with no unconfirmed block left.

        Not on any confirmation: a liar relaying the real chain ahead of a lagging peer and
        forking off it each round was released by every honest copy of a relayed block, its
        forged branch (above the confirmed height) still unconfirmed, and each round bought
        one forged reorg and one return (41 in 270 frames; review of heads6). Its blocks
        leaving the window stop counting (:meth:`forget`): nobody is quarantined for longer."""
        if not self.quarantined:
            return
        unconfirmed = self.unconfirmed
        for client in sorted(self.quarantined):
            if client != announcer and not unconfirmed.get(client):
                self.quarantined.discard(client)
                self.vouched.discard(client)
                self.vouching.discard(client)
                events.append(Quarantine(client, False, 0))

    def _unvouch(self, clients: Iterable[str]) -> None:
        """A client with nothing left unconfirmed vouches for no branch below it any more
        (:attr:`vouching`). Kept for good, a liar vouched once (its honest peer stalled for a
        minute and caught up) had, a hundred heights later, the honest blocks under its forged
        race judged suspect, its own forged blocks never contested, and the tip followed the
        forged race for good (review of liar8)."""
        unconfirmed = self.unconfirmed
        for client in list(clients):
            if client in self.vouching and not unconfirmed.get(client):
                self.vouching.discard(client)

    def _release_chain(
        self, client: str, confirmed: Head, blocks: Mapping[str, Head], events: list[Event]
    ) -> None:
        """Another client confirmed ``client``'s suspect block ``confirmed``: end its quarantine
        if ``confirmed`` was suspect for running ahead (:attr:`ahead`), it and every block of the
        client still unconfirmed lie on the one chain it stands on (those above ``confirmed``),
        and no block it abandoned is in the window (issue #12; docs/chain-tracking.md, *The
        one-chain release*).

        A client quarantined for running ahead of a late peer (an honest client ahead of a liar
        relaying the real chain 6-31 blocks late) has its run confirmed block by block, but
        always has the last ``lag`` blocks unconfirmed: the all-confirmed release kept it out
        for as long as the liar kept its lag, the tip following the late copies. A confirmed
        run ahead needs real blocks more than the lead ahead of the confirming client: a forged
        race on a real block the liar stepped down onto (a suspect self-fork) is no run ahead,
        and a liar that forged on top of a relayed run and stepped back has an abandoned block
        for a window. The client stays counted (its next block running ahead quarantines it
        again) and is *vouched*: the tip does not fall back along its chain then
        (``ChainTracker._choose_tip``), so a liar jittering its lag around the threshold does
        not flap the tip."""
        entry = self.heads.get(client)
        if entry is None:
            return
        low = confirmed.number
        chain: set[str] = set()
        current: Head | None = entry[0]
        while current is not None and current.number >= low:
            chain.add(current.hash)
            current = blocks.get(current.parent_hash)
        if confirmed.hash not in chain:
            return
        if confirmed.hash not in self.ahead_confirmed:
            return  # a self-fork or a branch built alone: a run ahead is what this releases
        origin = self.origin
        for block_hash, brought_by in origin.items():
            if brought_by == client and block_hash not in chain:
                return
        if any(owner == client for owner, _ in self.abandoned.values()):
            return
        self.quarantined.discard(client)
        self.vouched.add(client)
        self.vouching.add(client)
        events.append(Quarantine(client, False, self.unconfirmed.get(client, 0)))

    def _forgive(self, client: str, confirmed: Head, blocks: Mapping[str, Head]) -> None:
        """Another client confirmed ``client``'s block ``confirmed``: its stored unconfirmed
        blocks that ``confirmed``'s chain replaced stop counting. A client whose blocks are
        confirmed is not one "whose blocks no other client ever confirms" (DESIGN.md §3); an
        honest client's earlier reorg blocks that the chain replaced before any peer saw them
        (it was alone for a moment) never will be, and held one self-fork short of quarantine
        for a window, every later reorg it announced first quarantined it for the few
        milliseconds until its peers caught up (the client-chaos suite: 12 honest quarantines
        in 200 rounds).

        *Replaced* is exact: no higher than ``confirmed``, off the chain the client stands on
        now, and first seen before the block of ``confirmed``'s chain at its height (the chain
        came after it: a reorg away from it). Still counting: blocks above (a forged race in
        progress), the client's own current chain, and a branch forked off a block the
        confirmed chain already had (a liar that relayed the real chain and forked off it:
        the honest copies of the relayed blocks confirm the real chain, not its fork)."""
        if not self.unconfirmed.get(client):
            return
        origin = self.origin
        lowest = self.lowest
        seen = self.seen
        standing: set[str] = set()
        entry = self.heads.get(client)
        current: Head | None = entry[0] if entry is not None else None
        while current is not None and current.number >= lowest:
            standing.add(current.hash)
            current = blocks.get(current.parent_hash)
        chain: dict[int, int] = {}  # height -> when the confirmed chain's block was first seen
        current = confirmed
        while current is not None and current.number >= lowest:
            chain[current.number] = seen.get(current.hash, 0)
            current = blocks.get(current.parent_hash)
        for block_hash in [h for h, c in origin.items() if c == client]:
            stored = blocks.get(block_hash)
            if (
                stored is not None
                and stored.number <= confirmed.number
                and block_hash not in standing
                and seen.get(block_hash, 0) < chain.get(stored.number, 1 << 62)
            ):
                del origin[block_hash]
                self.unconfirmed[client] -= 1
                self.abandoned[block_hash] = (client, stored.number)
                self.ahead.discard(block_hash)
        if self.vouching:
            self._unvouch((client,))

    def prune_below(self, low: int) -> None:
        """The window moved up to ``low``: abandoned blocks below it stop counting, and only
        unconfirmed blocks stay marked as run ahead (bounded by the window)."""
        if self.abandoned:
            self.abandoned = {h: v for h, v in self.abandoned.items() if v[1] >= low}
        if self.ahead:
            self.ahead.intersection_update(self.origin)

    def forget(self, block_hash: str) -> None:
        """The block left the tracker's maps (window, eviction): it no longer counts."""
        brought_by = self.origin.pop(block_hash, None)
        if brought_by is not None:
            self.unconfirmed[brought_by] -= 1
            if self.vouching:
                self._unvouch((brought_by,))
        if self.abandoned:
            self.abandoned.pop(block_hash, None)
        self.ahead.discard(block_hash)
        if not self.origin:
            self.lowest = _NONE

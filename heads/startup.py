"""The first tip on more than one client's word (DESIGN.md §3, window; issue 12).

With two or more clients configured, DESIGN.md §3 lets no single client re-anchor the chain;
the start-up anchor is the same decision, so it needs the same support: while two or more
clients are connected, the chain is anchored on the first block that two of them announce
(same hash, number and parent). Until then their announcements wait here, bounded per client;
once the anchor is chosen they are dropped (one client's run ahead of the other is one voice):
a client that had announced past the anchor counts as just reconnected, its head stale until
it announces again (connected by backfill if need be). A lone
voice still anchors on its own word: a configured client that is down, or kept out for another
chain id, is no voice, nor is a connected one whose every line so far was refused (a broken or
clumsy liar: bad hashes), and a service with one reachable honest node must still run.

Without this, a lying client whose far-ahead orphan was the very first line held the tip
against the only other (honest) client for good: one voice against one, neither can re-anchor.

Pure bookkeeping: the tracker asks it before its first tip and drops it after.
"""

from __future__ import annotations

from heads.events import Head

__all__ = ["StartupVotes"]


class StartupVotes:
    """Announcements before the first tip: per client, newest last, at most ``per_client``."""

    def __init__(self, per_client: int) -> None:
        if per_client < 1:
            raise ValueError(f"per_client must be >= 1, got {per_client}")
        self.per_client = per_client
        # client -> hash -> (block, announcement seq)
        self._by_client: dict[str, dict[str, tuple[Head, int]]] = {}
        self._refused_only: set[str] = set()  # connected clients whose every line was refused

    def add(self, client: str, head: Head, seq: int) -> tuple[str, int] | None:
        """Record ``client``'s announcement; return ``(other client, its seq)`` when another
        client announced the same block before (the two agree on it), else ``None``."""
        key = (head.number, head.parent_hash)
        for other, announced in self._by_client.items():
            if other == client:
                continue
            entry = announced.get(head.hash)
            if entry is not None and (entry[0].number, entry[0].parent_hash) == key:
                return other, entry[1]
        self._refused_only.discard(client)
        mine = self._by_client.setdefault(client, {})
        mine.pop(head.hash, None)
        mine[head.hash] = (head, seq)
        if len(mine) > self.per_client:
            del mine[next(iter(mine))]
        return None

    def refused(self, client: str) -> None:
        """A line of ``client``'s was refused (``Rejected``)."""
        if client not in self._by_client:
            self._refused_only.add(client)

    def voice(self, client: str) -> bool:
        """Does connected ``client`` count as a voice the first tip must wait for? Yes unless
        every line it sent so far was refused."""
        return client in self._by_client or client not in self._refused_only

    def latest(self, client: str) -> Head | None:
        """``client``'s most recent waiting announcement."""
        announced = self._by_client.get(client)
        if not announced:
            return None
        return announced[next(reversed(announced))][0]

    def forget(self, client: str) -> None:
        """``client`` disconnected: what it announced is stale."""
        self._by_client.pop(client, None)
        self._refused_only.discard(client)

    def __len__(self) -> int:
        return sum(len(announced) for announced in self._by_client.values())

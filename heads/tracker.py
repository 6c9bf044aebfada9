"""The canonical-chain tracker: pure, synchronous, no I/O, no clock (DESIGN.md §3, rules v2).

    tracker = ChainTracker(finality_depth=64, fork_choice="latest", clients=2)
    for event in tracker.on_head("a", header):   # a newHeads announcement from client "a"
        ...      # Extension | Reorg | DeepReorg | Rejected | NeedAncestor | Quarantine
    tracker.on_block("a", header)                 # an ancestor fetched by hash (backfill)
    tracker.on_connect("a"); tracker.on_disconnect("a")

Model
-----
* The *store* holds every block whose ancestry is connected, for ``finality_depth`` heights below
  the tip. It is a forest: the first head anchors it without a known parent, and a deep reorg
  re-anchors on a chain that does not meet the old one inside the window.
* A client is *connected* from its first line (head, block, ``on_connect``) until
  ``on_disconnect``. Its *current head* is its most recent announcement whose ancestry is
  connected; an announcement whose parent is unknown is *held*, and the tracker asks the
  announcing client for the parent by hash (``NeedAncestor``).
* Fork choice, recomputed after every announcement and whenever a held head connects, never on
  a disconnect: among the current heads of the connected clients (quarantined ones excluded,
  see :mod:`heads.trust`), the highest ``number``; among equal numbers the block *first seen*
  most recently (``"latest"``) or earliest (``"first-seen"``). "First seen" is the sequence number
  of the first accepted line, of any client, that brought the block: a late copy of a block seen
  before never beats a newer sibling, so propagation skew cannot flip the tip back.
* Every block whose parent is known is checked structurally (``number`` = parent's + 1,
  ``timestamp`` not below the parent's, see :func:`heads.parse.structural_fault`) and a hash
  the tracker holds cannot be re-claimed with another number or parent; with ``verify`` the
  header hash is recomputed. A refused line is a
  ``Rejected`` event and leaves no trace.
* A move of the tip to a descendant is an ``Extension``, anything else a ``Reorg``; a branch
  that does not meet ours inside the window is a ``DeepReorg`` (re-anchor). With two or more
  clients configured, a re-anchor needs two connected clients announcing that head or its
  descendants (:mod:`heads.anchor`).
* Memory is bounded by the window whatever clients send: at most ``_PER_HEIGHT`` blocks per
  height (a flood of siblings evicts the oldest non-canonical ones), held and foreign blocks
  capped, everything pruned with the window.

The common announcement (a child of the tip) is one dict lookup, one structural comparison and
one store insert; a reorg is a walk of ``depth`` steps.

Layout: this module holds the inputs (``on_head``, ``on_block``, connects) and the queries; the
rules are layers of the same class, one module each: :mod:`heads.tracker_state` (the maps),
:mod:`heads.store` (store and window), :mod:`heads.one_voice` (deep reorgs on one client's
word), :mod:`heads.fork_choice` (the tip recompute), :mod:`heads.suspicion` (what counts towards
quarantine), :mod:`heads.backfill` (held heads, backfill, re-anchoring), :mod:`heads.fast_path`
(``on_head_quiet``: the common announcement without events, for replay; pinned to ``on_head``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from heads.events import Event, Extension, Head, NeedAncestor, Rejected
from heads.fast_path import FastPath
from heads.parse import parse_head, structural_fault
from heads.tracker_state import _PER_HEIGHT, _PRUNE_BATCH, ForkChoice

__all__ = ["ChainTracker", "ForkChoice", "parse_head"]


class ChainTracker(FastPath):
    """Tracks the canonical chain across several clients by parent hash. See the module doc.

    ``clients``: how many clients are configured (the re-anchor and one-voice rules depend on
    it); ``None`` counts the clients seen so far (replay of a recording). ``quarantine_after``:
    unconfirmed heads in the window after which a client is quarantined
    (:class:`heads.trust.Trust`). ``stall_seconds``: with ``now`` passed to :meth:`on_head`, a
    client without a new block for that long is no peer to run ahead of and none to wait for.
    """

    @property
    def tip(self) -> Head | None:
        return self._tip

    @property
    def connected(self) -> frozenset[str]:
        return frozenset(self._connected)

    def client_head(self, client: str) -> Head | None:
        entry = self._heads.get(client)
        return entry[0] if entry else None

    def get(self, block_hash: str) -> Head | None:
        """A connected block in the window, by hash."""
        return self._blocks.get(block_hash)

    def canonical_chain(self) -> list[Head]:
        """The canonical chain held in the window, ascending, ending at the tip."""
        chain: list[Head] = []
        block = self._tip
        while block is not None:
            chain.append(block)
            block = self._blocks.get(block.parent_hash)
        chain.reverse()
        return chain

    def stats(self) -> dict[str, int]:
        """Sizes of the internal maps: all bounded by the window (a test checks it)."""
        return {
            "blocks": len(self._blocks),
            "first_seen": len(self._seen),
            "held": len(self._held),
            "held_owners": len(self._held_owner),
            "held_announcements": len(self._held_announcements),
            "foreign": len(self._foreign),
            "unconfirmed": len(self.trust.origin),
            "abandoned": len(self.trust.abandoned),
            "ran_ahead": len(self.trust.ahead),
            "startup": len(self._startup) if self._startup is not None else 0,
            "bare_claims": len(self._bare_claims),
        }

    def on_connect(self, client: str) -> list[Event]:
        """The client's subscription is up: it is connected (its head may be a candidate)."""
        self._connected.add(client)
        self._clients.add(client)
        return []

    def on_disconnect(self, client: str) -> list[Event]:
        """The client is no candidate any more; the tip stays (a lost link is no rollback).

        Its head (still reported by :meth:`client_head`) and its held or unconnectable
        announcements are stale after a reconnect: only what it announces from then on counts.
        """
        self._connected.discard(client)
        self._foreign_heads.pop(client, None)
        self._since[client] = self._seq + 1
        if self._startup is not None:
            self._startup.forget(client)
        return []

    def on_head(
        self, client: str, header: Mapping[str, Any], now: float | None = None
    ) -> list[Event]:
        """A ``newHeads`` announcement from ``client``; ``now`` (seconds, any monotonic clock)
        is used only with ``stall_seconds`` (see :meth:`_runs_ahead`)."""
        if client not in self._connected:
            self.on_connect(client)
        known = self._known(header)
        if known is None:
            parsed = parse_head(client, header, self.verify)
            if type(parsed) is Rejected:
                if self._startup is not None:
                    self._startup.refused(client)
                return [parsed]
            assert type(parsed) is Head
            head = parsed
        else:
            head = known
        self._seq += 1
        seq = self._seq
        current = self._heads.get(client)
        if (
            current is not None
            and current[0].hash == head.hash
            and (not self._since or current[1] >= self._since.get(client, 0))
        ):
            return []  # a duplicate changes nothing
        if now is not None and self.stall_seconds is not None:
            self._now = now
            if head.number > self._highest.get(client, -1) or (
                current is not None and current[1] < self._since.get(client, 0)
            ):
                # Only a new height is progress: a client cycling through blocks it already
                # passed (m9, m10, m9, ...) kept looking alive and, as a progressing peer far
                # below, got the honest client quarantined and the tip frozen (review of heads6).
                # A client's first head after a reconnect is progress too (it was just dropped;
                # counted stalled, its peers' reorgs were judged suspect: client chaos).
                self._highest[client] = head.number
                self._progress[client] = now
        if current is not None and head.number <= current[0].number:
            self._stepped_down(client, current[0])
            self._left[client] = current[0]
        blocks = self._blocks
        trust = self.trust
        if known is not None or head.hash in blocks:
            if known is None:
                stored = blocks[head.hash]
                if (stored.number, stored.parent_hash) != (head.number, head.parent_hash):
                    return [self._conflict(client, head, stored)]
                head = stored
            events: list[Event] = []
            if trust.origin or trust.quarantined:
                trust.confirm(client, head, blocks, events)
            if self._free:
                self._confirm_free(client, head, events)
            self._heads[client] = (head, seq)
            if self._foreign_heads:
                self._foreign_heads.pop(client, None)
            # A late copy of the tip is recomputed too (DESIGN.md §3: after every announcement
            # that is not a duplicate): under the late-copy rule the tip need not be the best
            # candidate (one skipped against the old tip may outrank the new one).
            events += self._choose_tip(client, self._regressed(client, current, head))
            return events
        if self._tip is None:  # the first accepted head anchors the chain
            startup = self._startup
            if startup is not None and any(
                other != client and startup.voice(other) for other in self._connected
            ):
                agreed = startup.add(client, head, seq)
                if agreed is None:
                    return []  # one voice while another client listens: wait for agreement
                return self._anchor_agreed(client, head, seq, *agreed)
            self._startup = None  # a lone voice anchors on its own word
            return self._anchor(client, head, seq)
        tip = self._tip
        if head.parent_hash == tip.hash:
            if head.number != tip.number + 1 or (
                head.timestamp is not None
                and tip.timestamp is not None
                and head.timestamp < tip.timestamp
            ):
                fault = structural_fault(client, head, tip)
                assert fault is not None
                return [fault]
            if (
                not self._held_by_parent
                and (current is None or head.number > current[0].number)
                and (len(self._connected) == 1 or self._outranks_candidates(head, seq))
            ):
                # The common case: one block on top of the tip, its client going up, above
                # every candidate: it wins under either rule unless its client is quarantined.
                # Otherwise the general path decides: a client stepping down or sideways onto
                # it turns the late-copy rule off, and a candidate skipped against an older tip
                # may descend from this one's parent.
                block_hash = head.hash
                blocks[block_hash] = head
                self._seen[block_hash] = seq
                bucket = self._by_number.get(head.number)
                if bucket is None:
                    self._by_number[head.number] = [block_hash]
                else:
                    bucket.append(block_hash)
                    if len(bucket) > _PER_HEIGHT:
                        self._evict(head.number, bucket)
                self._heads[client] = (head, seq)
                if len(self._connected) == 1 and not trust.quarantined:
                    self._tip = head
                    if head.number - self.finality_depth >= self._pruned_below + _PRUNE_BATCH:
                        self._prune()
                    return [Extension(client, tip, (head,))]
                events = []
                if self._suspect(client, head, current):
                    trust.originate(client, head, events)
                if trust.origin or trust.quarantined:
                    trust.confirm(client, tip, blocks, events)
                if self._foreign_heads:
                    self._foreign_heads.pop(client, None)
                if not self._excluded(client):
                    self._tip = head
                    if head.number - self.finality_depth >= self._pruned_below + _PRUNE_BATCH:
                        self._prune()
                    events.append(Extension(client, tip, (head,)))
                    return events
                events += self._choose_tip(client, ())
                return events
        parent = blocks.get(head.parent_hash)
        if parent is not None and head.number <= tip.number + self.finality_depth:
            fault = structural_fault(client, head, parent)
            if fault is not None:
                return [fault]
            events = []
            if self._suspect(client, head, current):
                trust.originate(client, head, events)
            if trust.origin or trust.quarantined:
                trust.confirm(client, parent, blocks, events)
            regressed = self._regressed(client, current, head)
            connected, rejected = self._connect(head, seq)
            events += rejected
            self._set_head(client, head, seq)
            movers = set(regressed) | self._adopt_connected(connected)
            events += self._choose_tip(client, movers)
            return events
        # No parent, or a chain (a quarantined client's forged race) already a window above the
        # tip: not stored, so the store stays bounded by the window whatever a client sends.
        return self._hold_announcement(client, head, seq)

    def on_block(self, client: str, header: Mapping[str, Any]) -> list[Event]:
        """An ancestor fetched by hash after a ``NeedAncestor`` (data, not an announcement).

        A block nothing waits for is ignored: backfill only ever fills what was asked for.
        """
        if client not in self._connected:
            self.on_connect(client)
        if self._known(header) is not None:
            return []
        block = parse_head(client, header, self.verify)
        if type(block) is Rejected:
            return [block]
        assert type(block) is Head
        if block.hash in self._blocks:
            stored = self._blocks[block.hash]
            if (stored.number, stored.parent_hash) != (block.number, block.parent_hash):
                return [self._conflict(client, block, stored)]
            return []
        if block.hash in self._held or block.hash in self._foreign:
            return []
        wanted = block.hash in self._held_by_parent or block.hash in self._root_parents
        if not wanted or self._tip is None:
            return []
        if self.verify and not self._vouches(client, block, header):
            return []  # a bare header wiring another client's held blocks: not on its word
        self._seq += 1
        seq = self._seq
        parent = self._blocks.get(block.parent_hash)
        if parent is not None:
            fault = structural_fault(client, block, parent)
            if fault is not None:
                return [fault]
            suspicion: list[Event] = []
            self._judge_backfill(client, block, suspicion)
            connected, events = self._connect(block, seq)
            events = suspicion + events
            events += self._recompute_after_backfill(client, connected)
            return events
        if block.hash in self._root_parents and block.number >= self._window_low():
            # The parent of a root: store it as the new root, so forks below the anchor connect,
            # and keep filling the window downwards.
            self._root_parents.discard(block.hash)
            self._root_parents.add(block.parent_hash)
            connected, events = self._connect(block, seq)
            events += self._recompute_after_backfill(client, connected)
            if block.number > 0 and block.number - 1 >= self._window_low():
                events.append(NeedAncestor(client, block.parent_hash))
            return events
        events = self._hold(client, block, seq)
        if block.hash not in self._held:
            return events
        self._judge_backfill(client, block, events)
        return events + self._request_or_give_up(client, block)

    def on_missing(self, client: str, block_hash: str) -> list[Event]:
        """``client`` answered ``null`` for an ancestor we asked for: drop what waited on it.

        The held blocks above it cannot connect through this client; they are forgotten (a
        later announcement that needs them asks again).
        """
        for block in self._held_above(block_hash):
            self._forget_held(block)
        return []

    def _anchor(self, client: str, head: Head, seq: int) -> list[Event]:
        self._root_parents.add(head.parent_hash)
        events: list[Event] = []
        connected, rejected = self._connect(head, seq)
        events += rejected
        self._set_head(client, head, seq)
        self._adopt_connected(connected)
        events += self._choose_tip(client, ())
        if head.number > 0:
            # Fill the window below the anchor (by hash, from this client), so a reorg right
            # after start-up finds its common ancestor instead of looking deep.
            events.append(NeedAncestor(client, head.parent_hash))
        return events

    def _anchor_agreed(
        self, client: str, head: Head, seq: int, other: str, first_seq: int
    ) -> list[Event]:
        """Two clients agree on ``head``: anchor on it (first seen at ``other``'s announcement).

        What waited above it is dropped, not replayed: one client's run of announcements ahead
        of the other's is one voice (replayed, an honest client's start-up burst counted as a
        run ahead, was quarantined and the tip fell back: client-chaos seed 1065625295). A
        client that had announced past the anchor counts as just reconnected: its head is stale
        (no candidate, no peer to run ahead of) until it announces again, connected through
        backfill if need be (heads.startup).
        """
        startup = self._startup
        assert startup is not None
        self._startup = None
        events = self._anchor(other, head, first_seq)
        self._set_head(client, head, seq)
        latest = startup.latest(other)
        if latest is not None and latest.hash != head.hash:
            self._since[other] = self._seq + 1
        return events

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
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from heads.anchor import reanchor_target, supporters
from heads.events import DeepReorg, Event, Extension, Head, NeedAncestor, Rejected, Reorg
from heads.header import HeaderError, verify_header_hash
from heads.parse import parse_head, structural_fault
from heads.startup import StartupVotes
from heads.trust import Trust

__all__ = ["ChainTracker", "ForkChoice", "parse_head"]

log = logging.getLogger(__name__)

ForkChoice = Literal["latest", "first-seen"]

# Held (unconnected) and foreign blocks kept at most per window height; beyond it the lowest go.
_HELD_PER_WINDOW_BLOCK: Final = 4
# Blocks a client may run ahead of every other connected client before its heads count as
# unconfirmed (heads.trust): propagation skew is a block or two.
_LEAD: Final = 4
# Blocks of the tip's chain one client's word may drop while another connected client could
# confirm or contradict it (the one-voice reorg rule, docs/chain-tracking.md): mainnet reorgs
# after the merge are one block deep, and the fastest client's depth-1 reorg must move the tip at
# once (the reaction is measured from its frame).
_ONE_VOICE_DEPTH: Final = 1
# Blocks stored at one height at most: a flood of siblings evicts the oldest non-canonical ones.
_PER_HEIGHT: Final = 8
# The store is pruned in batches of this many heights: up to this many blocks beyond the window
# are kept, and the window rule is enforced explicitly when diffing (see ``_diff``).
_PRUNE_BATCH: Final = 32


class ChainTracker:
    """Tracks the canonical chain across several clients by parent hash. See the module doc.

    ``clients``: how many clients are configured (the re-anchor rule depends on it); ``None``
    counts the clients seen so far (replay of a recording). ``quarantine_after``: unconfirmed
    heads in the window after which a client is quarantined (:class:`heads.trust.Trust`).
    """

    def __init__(
        self,
        *,
        finality_depth: int = 64,
        fork_choice: ForkChoice = "latest",
        verify: bool = True,
        clients: int | None = None,
        quarantine_after: int = 2,
        stall_seconds: float | None = None,
    ) -> None:
        if finality_depth < 1:
            raise ValueError(f"finality_depth must be >= 1, got {finality_depth}")
        if fork_choice not in ("latest", "first-seen"):
            raise ValueError(f'fork_choice must be "latest" or "first-seen", got {fork_choice!r}')
        self.finality_depth = finality_depth
        self.fork_choice: ForkChoice = fork_choice
        self._sign = 1 if fork_choice == "latest" else -1
        self.verify = verify
        self.configured_clients = clients
        if stall_seconds is not None and stall_seconds <= 0:
            raise ValueError(f"stall_seconds must be > 0 or None, got {stall_seconds}")
        self.stall_seconds = stall_seconds
        # With ``stall_seconds`` and a ``now`` passed in: when each client last announced a
        # block other than its head (progress), and the latest ``now`` seen.
        self._progress: dict[str, float] = {}
        self._now: float | None = None
        self.trust = Trust(quarantine_after)
        self._tip: Head | None = None
        # The store: connected blocks in the window, and an index by height for pruning.
        self._blocks: dict[str, Head] = {}
        self._by_number: dict[int, list[str]] = {}
        self._pruned_below = 0  # every height below this has been pruned from the store
        # When each stored, held or foreign block was first seen (sequence of the line).
        self._seen: dict[str, int] = {}
        # Held blocks whose parent is unknown, indexed by that parent.
        self._held: dict[str, Head] = {}
        self._held_by_parent: dict[str, list[str]] = {}
        self._held_owner: dict[str, str] = {}  # the client whose line brought each held block
        # Announcements of held blocks: hash -> [(client, announcement seq)].
        self._held_announcements: dict[str, list[tuple[str, int]]] = {}
        # Parent hashes of stored roots (the anchor, re-anchored heads): a backfilled block with
        # such a hash extends the store downwards (a fork just below the anchor is found).
        self._root_parents: set[str] = set()
        # Blocks on chains proven not to meet ours inside the window (not fetched again), and
        # each client's latest such head (what a re-anchor needs two connected clients for).
        self._foreign: dict[str, Head] = {}
        self._foreign_heads: dict[str, tuple[Head, int]] = {}
        # Each client's current head and the sequence number of its announcement.
        self._heads: dict[str, tuple[Head, int]] = {}
        self._connected: set[str] = set()
        self._clients: set[str] = set()
        # Announcements before this sequence number are from before the client's last disconnect.
        self._since: dict[str, int] = {}
        # Each client's height before its latest step down or sideways, when its head there
        # was no unconfirmed block of its own: climbing back to it is no run ahead (_suspect).
        self._peak: dict[str, int] = {}
        # A client's step down or sideways that the one-voice rule held (client -> its head
        # then): it still counts as a step when a second client's announcement releases it.
        self._pending: dict[str, str] = {}
        # Each client's head before its latest step down or sideways: the branch it took back
        # itself (the one-voice rule lets a client retract its own branch against one other).
        self._left: dict[str, Head] = {}
        # Bare backfill replies waiting for a second client's agreement: hash -> client ->
        # (number, parent) (``_vouches``); bounded like the held set.
        self._bare_claims: dict[str, dict[str, tuple[int, str]]] = {}
        # Before the first tip, with two or more clients configured: announcements waiting for
        # two clients to agree on a block (heads.startup); ``None`` once anchored.
        self._startup: StartupVotes | None = (
            StartupVotes(finality_depth + 1) if clients is not None and clients >= 2 else None
        )
        self._seq = 0

    # -- queries --------------------------------------------------------------------------------

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
            "startup": len(self._startup) if self._startup is not None else 0,
            "bare_claims": len(self._bare_claims),
        }

    # -- inputs ---------------------------------------------------------------------------------

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
            if trust.origin:
                trust.confirm(client, head, blocks, events)
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
                if trust.origin:
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
            if trust.origin:
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

    def _judge_backfill(self, client: str, block: Head, events: list[Event]) -> None:
        """A backfilled block is suspect like an announced one when it runs ahead of every
        other connected client: otherwise a liar announces one forged block far ahead (one
        unconfirmed block, below the quarantine threshold) and serves its forged ancestors
        down to the honest tip by hash, and the whole forged chain connects and wins."""
        if self._runs_ahead(client, block):
            self.trust.originate(client, block, events)

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

    def on_missing(self, client: str, block_hash: str) -> list[Event]:
        """``client`` answered ``null`` for an ancestor we asked for: drop what waited on it.

        The held blocks above it cannot connect through this client; they are forgotten (a
        later announcement that needs them asks again).
        """
        for block in self._held_above(block_hash):
            self._forget_held(block)
        return []

    def _window_low(self) -> int:
        return self._tip.number - self.finality_depth if self._tip is not None else 0

    # -- store ----------------------------------------------------------------------------------

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

    def _set_head(self, client: str, head: Head, seq: int) -> None:
        self._heads[client] = (head, seq)
        if self._foreign_heads:
            self._foreign_heads.pop(client, None)

    def _add_to_store(self, block: Head, seq: int) -> None:
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
        if self.trust.origin:
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

    def _single_client(self) -> bool:
        configured = self.configured_clients
        return (configured if configured is not None else len(self._clients)) <= 1

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

    # -- fork choice ----------------------------------------------------------------------------

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
            return not self._held_by_one_voice(client, head)
        if self._contested(client, head):
            return True
        return self._runs_ahead(client, head)

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
            a: Head | None = other_head
            b: Head | None = blocks.get(head.parent_hash)
            while a is not None and b is not None and a.hash != b.hash:
                if a.number >= b.number:
                    a = blocks.get(a.parent_hash)
                else:
                    b = blocks.get(b.parent_hash)
            if a is not None and b is not None and other_head.number - a.number >= 2:
                return True
        return False

    def _live_heads(self) -> dict[str, Head]:
        """The current heads of the connected clients, announced since their last connect."""
        heads = self._heads
        since = self._since
        live = {}
        for client in self._connected:
            entry = heads.get(client)
            if entry is not None and entry[1] >= since.get(client, 0):
                live[client] = entry[0]
        return live

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

    def _choose_tip(self, client: str, movers: Iterable[str]) -> list[Event]:
        """Recompute the tip; ``movers`` just took their own heads down or sideways.

        The best candidate wins when it ranks above the tip. A candidate ranking below the tip
        (a lower block, an ancestor, an older sibling) wins only when a mover just made it its
        head (a client that announces a lower block or an ancestor of its own head moves the
        tip when no connected client is higher, DESIGN.md §3), or when the tip is an unconfirmed
        block of a quarantined client. The tip holder's disconnect followed by somebody else's
        line (a late copy, a client catching up, a held head) is no rollback.
        """
        candidates = self._candidates()
        if not candidates:
            return []
        old_tip = self._tip
        if len(candidates) > 1:
            candidates.sort(key=self._rank, reverse=True)
        floor: tuple[int, int] | None = None
        moved: set[str] = set()
        if old_tip is not None:
            floor = self._rank(old_tip)
            for mover in movers:
                entry = self._heads.get(mover)
                if entry is not None and entry[0].hash != old_tip.hash:
                    moved.add(entry[0].hash)
            if self._pending:
                moved |= self._pending_moves() - {old_tip.hash}
            trust = self.trust
            if trust.quarantined and trust.origin.get(old_tip.hash) in trust.quarantined:
                floor = None  # a liar's block: any honest candidate may replace it
        for new_tip in candidates:
            if old_tip is not None and new_tip.hash == old_tip.hash:
                return []
            if floor is not None and self._rank(new_tip) < floor and new_tip.hash not in moved:
                return []  # nobody just announced it: no rollback on somebody else's line
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
        client, one voice against one (see below).
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
            # 10070258: held, two injected reorgs were counted as one, 3 s late).
            return not self._retracted(reorg, live)
        if old_voices == 0:
            # Nobody stands on the dropped branch: wait only for a peer that has not chosen
            # yet (its head below the fork, on the common chain) and is still making progress;
            # a peer on a third branch or a stalled one would hold it forever.
            return undecided > 0
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

    def _stalled_before(self) -> float | None:
        """With a clock: progress older than this is a stall (``stall_seconds``)."""
        now = self._now
        return None if now is None or self.stall_seconds is None else now - self.stall_seconds

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

    # -- window ---------------------------------------------------------------------------------

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
        if self._held:
            for block in [b for b in self._held.values() if b.number < low]:
                self._forget_held(block)
        if self._foreign:
            keep = {entry[0].hash for entry in self._foreign_heads.values()}
            for block in [b for b in self._foreign.values() if b.number < low]:
                if block.hash not in keep:
                    del self._foreign[block.hash]
                    self._drop(block.hash)


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

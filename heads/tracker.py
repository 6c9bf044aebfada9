"""The canonical-chain tracker: pure, synchronous, no I/O, no clock (DESIGN.md §3).

    tracker = ChainTracker(finality_depth=64, fork_choice="latest")
    for event in tracker.on_head("a", header):   # a newHeads announcement from client "a"
        ...             # Extension | Reorg | DeepReorg | Rejected | NeedAncestor
    tracker.on_block("a", header)                 # an ancestor fetched by hash (backfill)
    tracker.on_disconnect("a")                    # the client's head stays a candidate

Model
-----
* The *store* holds every block whose ancestry is connected, for ``finality_depth`` heights below
  the tip. It is a forest: the first head anchors it without a known parent, and a deep reorg
  re-anchors on a chain that does not meet the old one inside the window.
* Each client has a *current head*: its most recent announcement whose ancestry is connected.
  An announcement whose parent is unknown is *held*, and the tracker asks for the parent by hash
  (``NeedAncestor``) from the client that announced it. When the held chain connects, the head
  becomes the client's current head, unless the client has announced something newer since.
* Fork choice (recomputed after every announcement and whenever a held head connects): the
  highest ``number`` among the clients' current heads; among equal numbers the most recently
  announced (``"latest"``) or the block first seen earliest (``"first-seen"``). A disconnected
  client's head stays a candidate.
* When the tip moves, the tracker walks both branches back to their common ancestor: a move to a
  descendant is an ``Extension``, anything else a ``Reorg``; a walk that leaves the window before
  the branches meet is a ``DeepReorg``.

Every announcement is accounted for in O(depth of the change): one dict lookup for a duplicate or
a plain extension, a walk of ``depth`` steps for a reorg.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from heads.events import DeepReorg, Event, Extension, Head, NeedAncestor, Rejected, Reorg
from heads.header import HeaderError, verify_header_hash

__all__ = ["ChainTracker", "ForkChoice", "parse_head"]

log = logging.getLogger(__name__)

ForkChoice = Literal["latest", "first-seen"]

_HASH_TEXT: Final = re.compile(r"0x[0-9a-f]{64}")
# Held (unconnected) blocks kept at most, per tracker; beyond it the lowest are dropped. Bounds
# memory when a client announces chains that never connect.
_HELD_PER_WINDOW_BLOCK: Final = 4
# The store is pruned in batches of this many heights: up to this many blocks beyond the window
# are kept, and the window rule is enforced explicitly when diffing (see ``_diff``).
_PRUNE_BATCH: Final = 32


_hash_match = _HASH_TEXT.fullmatch


def _is_hash(value: object) -> bool:
    return type(value) is str and _hash_match(value) is not None


def parse_head(client: str, header: Mapping[str, Any], verify: bool) -> Head | Rejected:
    """Extract ``(number, hash, parentHash)`` and, when ``verify``, check the hash (a verified
    header's ``baseFeePerGas`` comes along as ``Head.base_fee``).

    Hashes are normalised to lowercase. A malformed header or one whose recomputed hash differs
    comes back as a :class:`Rejected` event, never as an exception.
    """
    try:
        block_hash = header["hash"]
        parent_hash = header["parentHash"]
        number_text = header["number"]
    except (KeyError, TypeError):
        return Rejected(client, None, "malformed", "missing number, hash or parentHash")
    # Clients send lowercase hex; anything else is normalised (or refused) off the fast path.
    if type(block_hash) is not str or _hash_match(block_hash) is None:
        block_hash = block_hash.lower() if type(block_hash) is str else block_hash
        if not _is_hash(block_hash):
            return Rejected(
                client, None, "malformed", f"hash is not 32 bytes of hex: {block_hash!r:.80}"
            )
    if type(parent_hash) is not str or _hash_match(parent_hash) is None:
        parent_hash = parent_hash.lower() if type(parent_hash) is str else parent_hash
        if not _is_hash(parent_hash):
            return Rejected(client, block_hash, "malformed", f"bad parentHash {parent_hash!r:.80}")
    try:
        if type(number_text) is str and number_text.startswith("0x"):
            number = int(number_text, 16)
        elif type(number_text) is int:
            number = number_text
        else:
            raise ValueError(number_text)
    except ValueError:
        return Rejected(client, block_hash, "malformed", f"bad number {number_text!r:.80}")
    if number < 0:
        return Rejected(client, block_hash, "malformed", f"negative number {number}")
    if verify and len(header) > 3:
        try:
            ok = verify_header_hash(header, block_hash)
        except HeaderError as exc:
            return Rejected(client, block_hash, "malformed", str(exc))
        if ok is False:
            return Rejected(client, block_hash, "hash_mismatch", "keccak256(rlp(header)) != hash")
        if ok:  # the hash covers baseFeePerGas: it is as true as the block (hex, checked above)
            fee = header.get("baseFeePerGas")
            if type(fee) is str:
                return Head(number, block_hash, parent_hash, int(fee, 16))
    return Head(number, block_hash, parent_hash)


class ChainTracker:
    """Tracks the canonical chain across several clients by parent hash. See the module doc."""

    def __init__(
        self,
        *,
        finality_depth: int = 64,
        fork_choice: ForkChoice = "latest",
        verify: bool = True,
    ) -> None:
        if finality_depth < 1:
            raise ValueError(f"finality_depth must be >= 1, got {finality_depth}")
        if fork_choice not in ("latest", "first-seen"):
            raise ValueError(f'fork_choice must be "latest" or "first-seen", got {fork_choice!r}')
        self.finality_depth = finality_depth
        self.fork_choice: ForkChoice = fork_choice
        self._track_first_seen = fork_choice == "first-seen"  # only that rule reads it
        self.verify = verify
        self._tip: Head | None = None
        # The store: connected blocks in the window, and an index by height for pruning.
        self._blocks: dict[str, Head] = {}
        self._by_number: dict[int, list[str]] = {}
        self._pruned_below = 0  # every height below this has been pruned from the store
        # Order in which blocks were first seen (any client, head or backfill): for first-seen.
        self._first_seen: dict[str, int] = {}
        # Held blocks whose parent is unknown, indexed by that parent.
        self._held: dict[str, Head] = {}
        self._held_by_parent: dict[str, list[str]] = {}
        # Announcements of held blocks: hash -> [(client, announcement seq)].
        self._held_announcements: dict[str, list[tuple[str, int]]] = {}
        # Parent hashes of stored roots (the anchor, re-anchored heads): a backfilled block with
        # such a hash extends the store downwards (a fork just below the anchor is found).
        self._root_parents: set[str] = set()
        # Blocks on chains proven not to meet ours inside the window (not fetched again).
        self._foreign: dict[str, Head] = {}
        # Each client's current head and the sequence number of its announcement.
        self._heads: dict[str, tuple[Head, int]] = {}
        self._seq = 0

    # -- queries --------------------------------------------------------------------------------

    @property
    def tip(self) -> Head | None:
        return self._tip

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
            "first_seen": len(self._first_seen),
            "held": len(self._held),
            "held_announcements": len(self._held_announcements),
            "foreign": len(self._foreign),
        }

    # -- inputs ---------------------------------------------------------------------------------

    def on_head(self, client: str, header: Mapping[str, Any]) -> list[Event]:
        """A ``newHeads`` announcement from ``client``."""
        known = self._known(header)
        head = known if known is not None else parse_head(client, header, self.verify)
        if type(head) is Rejected:
            return [head]
        assert type(head) is Head
        self._seq += 1
        seq = self._seq
        current = self._heads.get(client)
        if current is not None and current[0].hash == head.hash:
            return []  # a duplicate changes nothing, not even recency
        if self._track_first_seen:
            self._first_seen.setdefault(head.hash, seq)

        if head.hash in self._blocks:
            self._heads[client] = (head, seq)
            return self._choose_tip(client)
        if self._tip is None:  # the first accepted head anchors the chain
            self._root_parents.add(head.parent_hash)
            self._adopt_connected(self._connect(head))
            self._heads[client] = (head, seq)
            events = self._choose_tip(client)
            if head.number > 0:
                # Fill the window below the anchor (by hash, from this client), so a reorg
                # right after start-up finds its common ancestor instead of looking deep.
                events.append(NeedAncestor(client, head.parent_hash))
            return events
        tip = self._tip
        if head.parent_hash == tip.hash and not self._held_by_parent:
            # The common case: one block on top of the tip. Its number is above every candidate,
            # so it wins under either fork-choice rule without ranking the clients.
            self._add_to_store(head)
            self._heads[client] = (head, seq)
            self._tip = head
            if head.number - self.finality_depth >= self._pruned_below + _PRUNE_BATCH:
                self._prune()
            return [Extension(client, tip, (head,))]
        if head.parent_hash in self._blocks:
            self._adopt_connected(self._connect(head))
            self._heads[client] = (head, seq)
            return self._choose_tip(client)
        return self._hold_announcement(client, head, seq)

    def on_block(self, client: str, header: Mapping[str, Any]) -> list[Event]:
        """An ancestor fetched by hash after a ``NeedAncestor`` (data, not an announcement)."""
        known = self._known(header)
        if known is not None:
            return []
        block = parse_head(client, header, self.verify)
        if type(block) is Rejected:
            return [block]
        assert type(block) is Head
        self._seq += 1
        if self._track_first_seen:
            self._first_seen.setdefault(block.hash, self._seq)
        if block.hash in self._held or block.hash in self._foreign:
            return []
        if self._tip is None:
            self._hold(block)
            return []
        if block.parent_hash in self._blocks:
            connected = self._connect(block)
            self._adopt_connected(connected)
            return self._choose_tip(client)
        if block.hash in self._root_parents and block.number >= self._window_low():
            # The parent of a root: store it as the new root, so forks below the anchor connect,
            # and keep filling the window downwards.
            self._root_parents.discard(block.hash)
            self._root_parents.add(block.parent_hash)
            self._adopt_connected(self._connect(block))
            events = self._choose_tip(client)
            if block.number > 0 and block.number - 1 >= self._window_low():
                events.append(NeedAncestor(client, block.parent_hash))
            return events
        self._hold(block)
        return self._request_or_give_up(client, block)

    def on_missing(self, client: str, block_hash: str) -> list[Event]:
        """``client`` answered ``null`` for an ancestor we asked for: drop what waited on it.

        The held blocks above it cannot connect through this client; they are forgotten (a
        later announcement that needs them asks again).
        """
        waiting = [
            self._held[h] for h in self._held_by_parent.get(block_hash, ()) if h in self._held
        ]
        while waiting:
            block = waiting.pop()
            waiting.extend(
                self._held[h] for h in self._held_by_parent.get(block.hash, ()) if h in self._held
            )
            self._forget_held(block)
        return []

    def _window_low(self) -> int:
        return self._tip.number - self.finality_depth if self._tip is not None else 0

    def on_disconnect(self, client: str) -> list[Event]:
        """A lost connection is not a rollback: the client's head stays a candidate."""
        return []

    # -- store ----------------------------------------------------------------------------------

    def _known(self, header: Mapping[str, Any]) -> Head | None:
        """The stored block if ``header`` repeats one we hold with the same number and parent.

        Such a header carries nothing new for the tracker, so it is not verified again. A header
        that reuses a stored hash with a different number or parent is parsed (and rejected) in
        full.
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

    def _add_to_store(self, block: Head) -> None:
        self._blocks[block.hash] = block
        bucket = self._by_number.get(block.number)
        if bucket is None:
            self._by_number[block.number] = [block.hash]
        else:
            bucket.append(block.hash)

    def _connect(self, block: Head) -> list[Head]:
        """Add ``block`` (parent in the store) and every held descendant; return them all."""
        connected = [block]
        self._add_to_store(block)
        i = 0
        while i < len(connected):
            children = self._held_by_parent.pop(connected[i].hash, None)
            i += 1
            if children:
                for child_hash in children:
                    child = self._held.pop(child_hash, None)
                    if child is not None:
                        self._add_to_store(child)
                        connected.append(child)
        return connected

    def _adopt_connected(self, connected: list[Head]) -> None:
        """Held announcements among ``connected`` become their clients' heads if still newest."""
        if not self._held_announcements:
            return
        for block in connected:
            announcements = self._held_announcements.pop(block.hash, None)
            if not announcements:
                continue
            for client, seq in announcements:
                current = self._heads.get(client)
                if current is None or current[1] < seq:
                    self._heads[client] = (block, seq)

    def _hold(self, block: Head) -> None:
        if block.hash in self._held:
            return
        self._held[block.hash] = block
        self._held_by_parent.setdefault(block.parent_hash, []).append(block.hash)
        limit = _HELD_PER_WINDOW_BLOCK * (self.finality_depth + 1)
        if len(self._held) > limit:
            self._drop_lowest_held(len(self._held) - limit)

    def _drop_lowest_held(self, count: int) -> None:
        for block in sorted(self._held.values(), key=lambda b: b.number)[:count]:
            self._forget_held(block)

    def _forget_held(self, block: Head) -> None:
        self._held.pop(block.hash, None)
        self._held_announcements.pop(block.hash, None)
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
        if (
            head.parent_hash in self._foreign
            or head.number > self._tip.number + self.finality_depth
        ):
            # Its chain is already known not to meet ours, or it is too far ahead to check: do
            # not fetch a window's worth of ancestors to find out.
            reason: Literal["ancestor_below_window", "gap"] = (
                "ancestor_below_window" if head.parent_hash in self._foreign else "gap"
            )
            self._foreign[head.hash] = head
            return self._unconnectable(client, head, seq, reason)
        self._hold(head)
        self._held_announcements.setdefault(head.hash, []).append((client, seq))
        return self._request_or_give_up(client, head)

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
        """Move the held chain above ``root`` out of the held set; re-anchor if it wins."""
        chain = self._connect_detached(root)
        best: tuple[Head, str, int] | None = None
        for block in chain:
            self._foreign[block.hash] = block
            for announcer, seq in self._held_announcements.pop(block.hash, ()):
                if best is None or (block.number, seq) > (best[0].number, best[2]):
                    best = (block, announcer, seq)
        if best is None:
            return []
        head, announcer, seq = best
        return self._unconnectable(announcer, head, seq, "ancestor_below_window")

    def _connect_detached(self, root: Head) -> list[Head]:
        """Take ``root`` and its held descendants out of the held set (not into the store)."""
        chain = [root]
        self._forget_held_keep_announcements(root)
        i = 0
        while i < len(chain):
            for child_hash in self._held_by_parent.pop(chain[i].hash, ()):
                child = self._held.pop(child_hash, None)
                if child is not None:
                    chain.append(child)
            i += 1
        return chain

    def _forget_held_keep_announcements(self, block: Head) -> None:
        announcements = self._held_announcements.get(block.hash)
        self._forget_held(block)
        if announcements is not None:
            self._held_announcements[block.hash] = announcements

    def _unconnectable(
        self,
        client: str,
        head: Head,
        seq: int,
        reason: Literal["ancestor_below_window", "gap"],
    ) -> list[Event]:
        """A head whose chain cannot meet ours inside the window.

        If it would win fork choice, re-anchor on it (``DeepReorg``: never guess what it
        dropped); otherwise it is a client on a stale fork below the window and is ignored.
        """
        old_tip = self._tip
        assert old_tip is not None
        if not self._would_win(client, head, seq):
            log.warning(
                "client %s is on a chain that does not meet ours within %d blocks (head %d %s)",
                client,
                self.finality_depth,
                head.number,
                head.hash,
            )
            return []
        self._foreign.pop(head.hash, None)
        self._root_parents.add(head.parent_hash)
        if len(self._root_parents) > 64:  # stale roots of pruned chains: keep the set small
            self._root_parents = {head.parent_hash}
        self._add_to_store(head)
        self._heads[client] = (head, seq)
        self._tip = head
        self._prune()
        return [DeepReorg(client, old_tip, head, reason)]

    # -- fork choice ----------------------------------------------------------------------------

    def _rank(self, head: Head, seq: int) -> tuple[int, int]:
        if self.fork_choice == "latest":
            return (head.number, seq)
        return (head.number, -self._first_seen.get(head.hash, seq))

    def _would_win(self, client: str, head: Head, seq: int) -> bool:
        rank = self._rank(head, seq)
        for other, (other_head, other_seq) in self._heads.items():
            if other != client and self._rank(other_head, other_seq) > rank:
                return False
        return True

    def _best_head(self) -> Head | None:
        best: Head | None = None
        best_rank = (-1, 0)
        for head, seq in self._heads.values():
            rank = self._rank(head, seq)
            if rank > best_rank:
                best, best_rank = head, rank
        return best

    def _choose_tip(self, client: str) -> list[Event]:
        new_tip = self._best_head()
        old_tip = self._tip
        if new_tip is None or new_tip is old_tip or (old_tip and new_tip.hash == old_tip.hash):
            return []
        self._tip = new_tip
        if old_tip is None:
            self._prune()
            return [Extension(client, None, (new_tip,))]
        if new_tip.parent_hash == old_tip.hash:  # the common case: one block on top
            event: Event = Extension(client, old_tip, (new_tip,))
        else:
            event = self._diff(client, old_tip, new_tip)
        self._prune()
        return [event]

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
        heights: Iterable[int]
        if low - self._pruned_below <= len(by_number):
            heights = range(self._pruned_below, low)
        else:  # a jump far ahead (first anchor, gap): walk the index, not the number line
            heights = [n for n in by_number if n < low]
        for number in heights:
            for block_hash in by_number.pop(number, ()):
                del self._blocks[block_hash]
                self._first_seen.pop(block_hash, None)
        self._pruned_below = low
        if self._held and len(self._held) > self.finality_depth:
            for block in [b for b in self._held.values() if b.number < low]:
                self._forget_held(block)
                self._first_seen.pop(block.hash, None)
        if self._foreign:
            for block in [b for b in self._foreign.values() if b.number < low]:
                del self._foreign[block.hash]
                self._first_seen.pop(block.hash, None)
        if len(self._first_seen) > 4 * (self.finality_depth + 1) + len(self._held):
            # Hashes seen only as duplicates of pruned/rejected blocks: keep the map bounded.
            keep = self._blocks.keys() | self._held.keys() | self._foreign.keys()
            self._first_seen = {h: s for h, s in self._first_seen.items() if h in keep}

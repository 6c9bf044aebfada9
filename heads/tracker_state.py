"""The chain tracker's state and window constants (DESIGN.md §3); no behaviour beyond lookups.

Every map :class:`heads.tracker.ChainTracker` keeps is declared here, in one ``__init__``, so
the modules that implement its rules (:mod:`heads.store`, :mod:`heads.one_voice`,
:mod:`heads.fork_choice`, :mod:`heads.suspicion`, :mod:`heads.backfill`) share one picture of
it and each stays small. They are layers of one class (each subclasses the one before), not
separate objects: the tracker's hot path stays one attribute lookup per map.
"""

from __future__ import annotations

from typing import Final, Literal

from heads.events import Head
from heads.startup import StartupVotes
from heads.trust import Trust

__all__ = ["ForkChoice", "TrackerState"]


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


class TrackerState:
    """The tracker's maps and the few lookups every rule module needs."""

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
        # The highest block number each client announced: progress is a new height, not any
        # block other than its head (a liar re-announcing two old blocks in turn is no
        # progress; review of heads6).
        self._highest: dict[str, int] = {}
        self._now: float | None = None
        self.trust = Trust(quarantine_after)
        self._tip: Head | None = None
        # The store: connected blocks in the window, and an index by height for pruning.
        self._blocks: dict[str, Head] = {}
        self._by_number: dict[int, list[str]] = {}
        self._pruned_below = 0  # every height below this has been pruned from the store
        # When each stored, held or foreign block was first seen (sequence of the line).
        self._seen: dict[str, int] = {}
        self.trust.seen = self._seen  # the release rule compares when blocks were first seen
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
        self.trust.heads = self._heads  # the release rule spares the chain a client stands on
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
        # Each client's latest deep self-fork that contradicted no other client (client -> its
        # new block): not suspect, once, until another client's head confirms it (_free_fork).
        self._free: dict[str, str] = {}
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

    def _window_low(self) -> int:
        return self._tip.number - self.finality_depth if self._tip is not None else 0

    def _single_client(self) -> bool:
        configured = self.configured_clients
        return (configured if configured is not None else len(self._clients)) <= 1

    def _set_head(self, client: str, head: Head, seq: int) -> None:
        self._heads[client] = (head, seq)
        if self._foreign_heads:
            self._foreign_heads.pop(client, None)

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

    def _stalled_before(self) -> float | None:
        """With a clock: progress older than this is a stall (``stall_seconds``)."""
        now = self._now
        return None if now is None or self.stall_seconds is None else now - self.stall_seconds

"""Values the chain tracker works with and the events it returns.

Hashes are kept as lowercase ``0x``-prefixed hex strings, exactly as execution clients send them:
the tracker compares and indexes them, it never needs their bytes, and skipping the conversion
keeps replay at hundreds of thousands of heads per second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

RejectReason = Literal["hash_mismatch", "malformed", "bad_number", "bad_timestamp", "conflict"]
REJECT_REASONS: Final = ("hash_mismatch", "malformed", "bad_number", "bad_timestamp", "conflict")


class Head(NamedTuple):
    """A block as the tracker sees it: its place in the tree, and its verified base fee.

    A NamedTuple rather than a frozen dataclass: one is built per announcement, and tuple
    construction is twice as fast (replay handles hundreds of thousands a second).
    """

    number: int
    hash: str
    parent_hash: str
    base_fee: int | None = None
    """EIP-1559 ``baseFeePerGas``, only from a header whose hash was verified (a liar can put any
    base fee into an unverifiable header): the fee the transaction side prices re-signs with."""
    timestamp: int | None = None
    """The header's ``timestamp`` when it carried one: checked above the parent's (DESIGN.md §3)."""

    def ref(self) -> dict[str, int | str]:
        return {"number": self.number, "hash": self.hash}


class Extension(NamedTuple):
    """The canonical tip moved to a descendant of the old tip.

    ``added`` are the blocks that joined the canonical chain, ascending (usually one). A
    NamedTuple like ``Head``: one is built for nearly every announcement.
    """

    client: str
    old_tip: Head | None
    added: tuple[Head, ...]

    @property
    def tip(self) -> Head:
        return self.added[-1]


@dataclass(frozen=True, slots=True)
class Reorg:
    """The canonical tip moved to a block that does not descend from the old tip (DESIGN.md §3).

    ``old`` left the canonical chain and ``new`` joined it, both ascending; ``new`` may be empty
    (a rollback to the ancestor itself). ``depth == len(old)``.
    """

    client: str
    ancestor: Head
    old: tuple[Head, ...]
    new: tuple[Head, ...]

    @property
    def depth(self) -> int:
        return len(self.old)

    @property
    def tip(self) -> Head:
        return self.new[-1] if self.new else self.ancestor


@dataclass(frozen=True, slots=True)
class DeepReorg:
    """The tip moved to a chain that does not meet ours inside the window.

    ``reason`` is ``"ancestor_below_window"`` (the branches diverge below ``finality_depth``) or
    ``"gap"`` (the new head is more than ``finality_depth`` blocks ahead, so its ancestry cannot
    be checked inside the window). The tracker re-anchors on ``new_tip``; consumers must
    reconcile against chain state rather than guess what was dropped.
    """

    client: str
    old_tip: Head | None
    new_tip: Head
    reason: Literal["ancestor_below_window", "gap"]

    @property
    def tip(self) -> Head:
        return self.new_tip


@dataclass(frozen=True, slots=True)
class Rejected:
    """A header that was refused and ignored entirely (it never enters the store).

    ``reason`` (one of :data:`REJECT_REASONS`): ``"hash_mismatch"`` (keccak256(rlp(header))
    differs from ``hash``: a lying or broken RPC), ``"malformed"`` (missing or ill-typed
    ``number``/``hash``/``parentHash``/``timestamp``), ``"bad_number"`` (the parent is known and
    the number is not its + 1), ``"bad_timestamp"`` (not above the known parent's), or
    ``"conflict"`` (a hash the tracker holds, claimed with another number or parent).
    """

    client: str
    hash: str | None
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class Quarantine:
    """``client`` was quarantined (``active``) or released (DESIGN.md §3, trust).

    A client is quarantined when several of the heads it was first to announce in the window were
    never confirmed by another connected client (announced by it, or by a descendant it
    announced). Its heads are no candidates for the tip until none of its blocks is left
    unconfirmed (then ``active`` is false; docs/chain-tracking.md, *Quarantine release*).
    """

    client: str
    active: bool
    unconfirmed: int


@dataclass(frozen=True, slots=True)
class NeedAncestor:
    """Ask ``client`` for block ``hash`` (``eth_getBlockByHash``), then feed it to ``on_block``.

    Gaps are always filled by hash from the client that announced the head, never by number:
    a number names different blocks on different branches.
    """

    client: str
    hash: str


Event = Extension | Reorg | DeepReorg | Rejected | NeedAncestor | Quarantine
TipChange = Extension | Reorg | DeepReorg

__all__ = [
    "REJECT_REASONS",
    "DeepReorg",
    "Event",
    "Extension",
    "Head",
    "NeedAncestor",
    "Quarantine",
    "RejectReason",
    "Rejected",
    "Reorg",
    "TipChange",
]

"""Values the chain tracker works with and the events it returns.

Hashes are kept as lowercase ``0x``-prefixed hex strings, exactly as execution clients send them:
the tracker compares and indexes them, it never needs their bytes, and skipping the conversion
keeps replay at hundreds of thousands of heads per second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple


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

    ``reason``: ``"hash_mismatch"`` (keccak256(rlp(header)) differs from ``hash``: a lying or
    broken RPC) or ``"malformed"`` (missing or ill-typed ``number``/``hash``/``parentHash``).
    """

    client: str
    hash: str | None
    reason: Literal["hash_mismatch", "malformed"]
    detail: str


@dataclass(frozen=True, slots=True)
class NeedAncestor:
    """Ask ``client`` for block ``hash`` (``eth_getBlockByHash``), then feed it to ``on_block``.

    Gaps are always filled by hash from the client that announced the head, never by number:
    a number names different blocks on different branches.
    """

    client: str
    hash: str


Event = Extension | Reorg | DeepReorg | Rejected | NeedAncestor
TipChange = Extension | Reorg | DeepReorg

__all__ = [
    "DeepReorg",
    "Event",
    "Extension",
    "Head",
    "NeedAncestor",
    "Rejected",
    "Reorg",
    "TipChange",
]

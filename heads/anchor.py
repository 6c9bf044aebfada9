"""Re-anchoring only on more than one client's word (DESIGN.md §3, window).

A head whose chain cannot meet ours inside the window (a deep reorg, or an ancestry that cannot
be connected: a gap beyond the window, a branch below it) makes the tracker drop its chain and
re-anchor, never guess. One lying client could otherwise move the tip anywhere with one
self-consistent header (an orphan 1,000 blocks ahead). So, when two or more clients are
configured, a re-anchor needs at least two *connected* clients announcing that head or its
descendants; the target is the highest block with that support. A lone configured client's word
is enough.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from heads.events import Head

__all__ = ["reanchor_target", "supporters"]


def reanchor_target(
    claims: Mapping[str, tuple[Head, int]],
    foreign: Mapping[str, Head],
    *,
    single: bool,
    announcer: str,
) -> Head | None:
    """The block to re-anchor on, from connected clients' unconnectable heads, or ``None``.

    ``claims``: client -> (its latest unconnectable head, announcement seq); ``foreign``: the
    blocks known on such chains (their parent links say what descends from what).
    """
    if single:
        entry = claims.get(announcer)
        return None if entry is None else entry[0]
    support: dict[str, set[str]] = {}
    blocks: dict[str, Head] = {}
    for client, (head, _) in claims.items():
        block: Head | None = head
        steps = 0
        while block is not None and steps <= len(foreign):
            support.setdefault(block.hash, set()).add(client)
            blocks[block.hash] = block
            block = foreign.get(block.parent_hash)
            steps += 1
    backed = [blocks[h] for h, clients in support.items() if len(clients) >= 2]
    if not backed:
        return None
    return max(backed, key=lambda b: b.number)


def supporters(target: Head, heads: Iterable[Head], blocks: Mapping[str, Head]) -> int:
    """How many of ``heads`` are ``target`` or descend from it through ``blocks``."""
    count = 0
    for head in heads:
        block: Head | None = head
        while block is not None and block.number > target.number:
            block = blocks.get(block.parent_hash)
        if block is not None and block.hash == target.hash:
            count += 1
    return count

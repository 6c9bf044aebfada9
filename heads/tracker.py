"""The canonical-chain tracker: pure, synchronous, no I/O, no clock (DESIGN.md §3).

    tracker = ChainTracker(finality_depth=64, fork_choice="latest")
    for event in tracker.on_head("a", header):   # a newHeads announcement from client "a"
        ...                                       # Extension | Reorg | DeepReorg | Rejected | NeedAncestor
    tracker.on_block("a", header)                 # an ancestor fetched by hash (backfill)
    tracker.on_disconnect("a")                    # the client's head stays a candidate

Work in progress: the implementation lands next.
"""

from __future__ import annotations

"""A callgrind driver for the tracker's per-announcement cost (docs/chain-tracking.md).

Two clients announce one bare 5,000-block chain (``verify=False``): 10,000 announcements.
Run it with and without the announcements and subtract, so module start-up and chain building
cancel out::

    PYTHONHASHSEED=0 valgrind --tool=callgrind python -m bench.announcement_cost 1
    PYTHONHASHSEED=0 valgrind --tool=callgrind python -m bench.announcement_cost 0

(instructions with - instructions without) / 10,000 is the cost of one announcement. A fixed
hash seed matters: without it the same driver varied by up to 10M instructions run to run.
"""

from __future__ import annotations

import hashlib
import sys

from heads.tracker import ChainTracker

BLOCKS = 5_000


def main(announce: bool) -> None:
    chain = []
    parent = "0x" + "00" * 32
    for i in range(BLOCKS):
        block_hash = "0x" + hashlib.sha256(f"b{i}".encode()).hexdigest()
        chain.append({"number": hex(i), "hash": block_hash, "parentHash": parent})
        parent = block_hash
    tracker = ChainTracker(finality_depth=64, clients=2, verify=False)
    if announce:
        for header in chain:
            tracker.on_head("a", header, 0.0)
            tracker.on_head("b", header, 0.0)


if __name__ == "__main__":
    main(sys.argv[1:] == ["1"])

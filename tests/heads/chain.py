"""Building blocks for tracker tests: synthetic block trees with real-looking hashes."""

from __future__ import annotations

import hashlib
from typing import Any

from heads.events import Event, Reorg
from heads.tracker import ChainTracker

GENESIS_PARENT = "0x" + "00" * 32


def block_hash(label: str) -> str:
    return "0x" + hashlib.sha256(label.encode()).hexdigest()


def header(number: int, label: str, parent: str) -> dict[str, Any]:
    """A bare ``{number, hash, parentHash}`` header (accepted unverified, as DESIGN.md §3 says)."""
    return {"number": hex(number), "hash": block_hash(label), "parentHash": parent}


class Tree:
    """A block tree addressed by label: ``tree.add("b3", parent="b2")``."""

    def __init__(self, root: str = "g", root_number: int = 0) -> None:
        self.headers: dict[str, dict[str, Any]] = {}
        self.headers[root] = header(root_number, root, GENESIS_PARENT)

    def add(self, label: str, parent: str) -> dict[str, Any]:
        p = self.headers[parent]
        self.headers[label] = header(int(p["number"], 16) + 1, label, p["hash"])
        return self.headers[label]

    def chain(self, prefix: str, parent: str, length: int) -> list[str]:
        """Add ``prefix1..prefixN`` on top of ``parent``; return the labels."""
        labels = []
        for i in range(1, length + 1):
            label = f"{prefix}{i}"
            self.add(label, parent)
            labels.append(label)
            parent = label
        return labels

    def __getitem__(self, label: str) -> dict[str, Any]:
        return self.headers[label]

    def hash(self, label: str) -> str:
        return str(self.headers[label]["hash"])

    def number(self, label: str) -> int:
        return int(self.headers[label]["number"], 16)


def sealed_header(
    number: int, parent: str, *, timestamp: int | None = None, salt: str = "", base_fee: int = 7
) -> dict[str, Any]:
    """A whole Prague header whose ``hash`` is its real ``keccak256(rlp(header))``.

    What a liar sends: self-consistent (a liar computes keccak too), so hash verification alone
    accepts it. ``salt`` makes siblings distinct (it goes into ``extraData``).
    """
    from heads.header import compute_header_hash, header_plan

    fields: dict[str, Any] = {
        "parentHash": parent,
        "sha3Uncles": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
        "miner": "0x" + "00" * 20,
        "stateRoot": "0x" + "11" * 32,
        "transactionsRoot": "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
        "receiptsRoot": "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
        "logsBloom": "0x" + "00" * 256,
        "difficulty": "0x0",
        "number": hex(number),
        "gasLimit": "0x1c9c380",
        "gasUsed": "0x0",
        "timestamp": hex(1_700_000_000 + 12 * number if timestamp is None else timestamp),
        "extraData": "0x" + salt.encode().hex(),
        "mixHash": "0x" + "00" * 32,
        "nonce": "0x0000000000000000",
        "baseFeePerGas": hex(base_fee),
        "withdrawalsRoot": "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
        "blobGasUsed": "0x0",
        "excessBlobGas": "0x0",
        "parentBeaconBlockRoot": "0x" + "00" * 32,
        "requestsHash": "0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    }
    plan = header_plan(fields)
    assert plan is not None
    return {"hash": compute_header_hash(fields, plan), **fields}


def sealed_chain(length: int, *, start: int = 0, salt: str = "") -> list[dict[str, Any]]:
    """``length`` sealed headers numbered from ``start``, each the child of the one before."""
    chain: list[dict[str, Any]] = []
    parent = GENESIS_PARENT
    for number in range(start, start + length):
        chain.append(sealed_header(number, parent, salt=salt))
        parent = chain[-1]["hash"]
    return chain


def reorgs(events: list[Event]) -> list[Reorg]:
    """The reorgs among a tracker's events."""
    return [e for e in events if isinstance(e, Reorg)]


def both_on(start: list[dict[str, Any]]) -> ChainTracker:
    """A two-client tracker (``honest`` and ``liar``) where both announced ``start``."""
    tracker = ChainTracker(finality_depth=32, clients=2)
    for h in start:
        tracker.on_head("honest", h, 0.0)
        tracker.on_head("liar", h, 0.0)
    return tracker

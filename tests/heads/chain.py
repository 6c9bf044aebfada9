"""Building blocks for tracker tests: synthetic block trees with real-looking hashes."""

from __future__ import annotations

import hashlib
from typing import Any

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

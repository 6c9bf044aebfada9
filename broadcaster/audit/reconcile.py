"""Reconciliation with the chain, the pure core (DESIGN.md §6a "Reconciliation, live and offline").

Every transaction from one of our accounts in a canonical block must be one the verified audit
log holds (a ``sign`` entry with its ``tx_hash``) or an ``eth_sendRawTransaction`` the journal
accepted as external; anything else is a *foreign* transaction: the key was used outside the
enclave, or the enclave signed without logging. :func:`plan_block` classifies one block's
transactions; the live reconciler (``broadcaster.audit.live``) and ``broadcaster audit``
(``broadcaster.cli.audit``) only fetch blocks and the known hashes, and act on what it returns.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BlockAudit",
    "BlockTx",
    "Foreign",
    "FullBlock",
    "Totals",
    "plan_block",
]


@dataclass(frozen=True, slots=True)
class BlockTx:
    """One transaction of a block: hash, sender (lower-case 0x-hex) and nonce."""

    hash: bytes
    sender: str
    nonce: int


@dataclass(frozen=True, slots=True)
class FullBlock:
    """A block's number, hash, transactions and (when the answer had one) parent hash: what
    the live reconciler walks back by after a deep reorg."""

    number: int
    hash: str
    txs: tuple[BlockTx, ...]
    parent_hash: str = ""


@dataclass(frozen=True, slots=True)
class Foreign:
    """A transaction from our account that neither the audit log nor the journal accounts for."""

    hash: bytes
    sender: str
    nonce: int
    block: int
    block_hash: str

    def event(self) -> dict[str, Any]:
        """The ``broadcaster audit --json`` line (DESIGN.md §6a)."""
        return {
            "event": "foreign",
            "hash": "0x" + self.hash.hex(),
            "sender": self.sender,
            "nonce": self.nonce,
            "block": self.block,
        }


@dataclass(frozen=True, slots=True)
class BlockAudit:
    """What one block held of ours: ``ours`` (in the audit log), ``external`` (journaled raw
    txs) and ``foreign``."""

    number: int
    hash: str
    ours: int
    external: int
    foreign: tuple[Foreign, ...]


@dataclass(slots=True)
class Totals:
    """Running sums for a summary line."""

    blocks: int = 0
    ours: int = 0
    external: int = 0
    foreign: list[Foreign] = field(default_factory=list)

    def add(self, audit: BlockAudit) -> None:
        self.blocks += 1
        self.ours += audit.ours
        self.external += audit.external
        self.foreign.extend(audit.foreign)

    def summary(self) -> dict[str, Any]:
        return {
            "event": "summary",
            "blocks": self.blocks,
            "ours": self.ours,
            "external": self.external,
            "foreign": len(self.foreign),
        }


def ours_in(block: FullBlock, accounts: Collection[str]) -> list[BlockTx]:
    """The block's transactions sent from ``accounts`` (lower-case 0x-hex)."""
    return [tx for tx in block.txs if tx.sender in accounts]


def plan_block(
    block: FullBlock,
    accounts: Collection[str],
    signed: Collection[bytes],
    external: Collection[bytes],
) -> BlockAudit:
    """Classify ``block``'s transactions from ``accounts``: in ``signed`` (the verified audit
    log's tx hashes), in ``external`` (journaled raw txs), or foreign. A hash in both counts as
    ours (the enclave signed it)."""
    ours = ext = 0
    foreign: list[Foreign] = []
    for tx in block.txs:
        if tx.sender not in accounts:
            continue
        if tx.hash in signed:
            ours += 1
        elif tx.hash in external:
            ext += 1
        else:
            foreign.append(Foreign(tx.hash, tx.sender, tx.nonce, block.number, block.hash))
    return BlockAudit(block.number, block.hash, ours, ext, tuple(foreign))

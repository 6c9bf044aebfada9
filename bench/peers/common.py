"""What every peer shares: the dev key, transaction dicts, and a tiny own-transaction tracker.

The tracker is the obvious algorithm a bot writes: canonical ``number -> hash``, our included
transactions with the block that holds them; a head whose parent is our block at ``number - 1``
replaces every block from ``number`` up (a sibling or a shorter branch); our transactions whose
block is no longer canonical are dropped and must be re-sent. A head whose parent is unknown
resets the view (a deeper reorg: not produced by the harness).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
CHAIN_ID = 31337
GWEI = 10**9
MAX_FEE = 30 * GWEI
PRIORITY = 2 * GWEI


def tx_dict(nonce: int, max_fee: int, priority: int) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": CHAIN_ID,
        "nonce": nonce,
        "to": TO,
        "value": 1,
        "data": b"",
        "gas": 21_000,
        "maxFeePerGas": max_fee,
        "maxPriorityFeePerGas": priority,
    }


def bumped(max_fee: int, priority: int, base_fee: int) -> tuple[int, int]:
    """geth's replace rule: at least +10% on both fees, and over the new base fee."""
    priority = priority * 11 // 10 + 1
    max_fee = max(max_fee * 11 // 10 + 1, 2 * base_fee + priority)
    return max_fee, priority


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass
class OwnTx:
    nonce: int
    max_fee: int
    priority: int
    hashes: set[str] = field(default_factory=set)
    block: tuple[int, str] | None = None  # (number, hash) holding it


class Tracker:
    def __init__(self) -> None:
        self.canon: dict[int, str] = {}
        self.txs: dict[int, OwnTx] = {}  # by nonce, until a later block settles them

    def sent(self, tx: OwnTx) -> None:
        self.txs[tx.nonce] = tx

    @property
    def waiting(self) -> bool:
        return any(tx.block is None for tx in self.txs.values())

    def on_head(self, number: int, block_hash: str, parent_hash: str) -> list[OwnTx]:
        """Apply a head; returns our transactions it dropped (their block left the chain)."""
        canon = self.canon
        if canon and canon.get(number - 1) != parent_hash:
            canon.clear()  # unknown parent: start over from this head
        for n in [n for n in canon if n >= number]:
            del canon[n]
        canon[number] = block_hash
        dropped = []
        for tx in self.txs.values():
            if tx.block is not None and canon.get(tx.block[0]) != tx.block[1]:
                tx.block = None
                dropped.append(tx)
        if len(canon) > 128:
            for n in sorted(canon)[:-64]:
                del canon[n]
            # Ours below the kept window are final for this bot: forget them with their blocks.
            low = min(canon)
            for nonce in [n for n, tx in self.txs.items() if tx.block and tx.block[0] < low]:
                del self.txs[nonce]
        return dropped

    def on_block(self, number: int, block_hash: str, tx_hashes: set[str]) -> bool:
        """Mark ours in a canonical block; True when this made every sent tx included."""
        if self.canon.get(number) != block_hash:
            return False
        was_waiting = self.waiting
        for tx in self.txs.values():
            if tx.block is None and tx.hashes & tx_hashes:
                tx.block = (number, block_hash)
        if was_waiting and not self.waiting:
            # Keep only what a reorg could still drop: the last few nonces.
            for nonce in sorted(self.txs)[:-256]:
                del self.txs[nonce]
            return True
        return False

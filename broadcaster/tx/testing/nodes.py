"""Simulated execution clients: each with its own view of the chain, mempool and faults.

A :class:`Node` follows the producer's chain after ``delay`` seconds (propagation skew) unless it
is ``frozen`` (a lagging node that keeps answering from an older, maybe abandoned, branch). Its
txpool applies what geth's does to ``eth_sendRawTransaction``: "already known" for bytes it holds,
"nonce too low" below the account's nonce at its head, and for a second transaction at a held
``(sender, nonce)`` geth's replace rule (``nonce.fees.geth_accepts_replacement``: both fee fields
+10 %) or "replacement transaction underpriced". On a reorg it re-injects the abandoned blocks'
transactions, as geth's ``txpool.reset`` does, unless the script says that this reorg lost them.

Faults, all switchable at any step: ``down`` (connection refused), ``timeout`` (never answers),
``answer`` (every send gets this error message: "insufficient funds...", "txpool is full"...),
``rules`` (per-transaction answers), ``drop_sends`` (answers "accepted" and forgets: a lying
RPC), ``pending_offset`` (a bad ``pending`` nonce count) and ``sender_nonce_lookup`` (whether it
serves ``eth_getTransactionBySenderAndNonce``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from broadcaster.audit.reconcile import BlockTx, FullBlock
from broadcaster.rpc.chain_reader import BlockTxs, MinedTx, Receipt
from broadcaster.tx.testing.chain import Block, ChainView, SimChain, SimTx
from nonce.fees import geth_accepts_replacement

__all__ = ["Network", "Node", "SendRule"]

SendRule = Callable[[SimTx], str | None]
"""Answers a send with an error message (``None``: no opinion, the pool decides)."""

NONCE_TOO_LOW = "nonce too low"
ALREADY_KNOWN = "already known"
UNDERPRICED = "replacement transaction underpriced"


@dataclass(eq=False)
class Node:
    name: str
    view: ChainView
    delay: float = 0.0  # seconds behind the producer when it adopts a new head
    latency: float = 0.002  # RPC round trip
    frozen: bool = False
    down: bool = False
    timeout: bool = False
    drop_sends: bool = False
    answer: str | None = None
    pending_offset: int = 0
    sender_nonce_lookup: bool = True
    peered: bool = True  # gossips what it accepts and hears others' gossip
    rules: list[SendRule] = field(default_factory=list)
    pool: dict[tuple[str, int], SimTx] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)
    received: list[SimTx] = field(default_factory=list)  # every send that reached it, in order

    # -- txpool ----------------------------------------------------------------------------------

    def send(self, tx: SimTx) -> str | None:
        """``eth_sendRawTransaction``: the error message, or ``None`` when accepted."""
        self.received.append(tx)
        if self.answer is not None:
            return self.answer
        for rule in self.rules:
            message = rule(tx)
            if message is not None:
                return message
        verdict = self.offer(tx)
        if verdict is None and self.drop_sends:
            self.pool.pop((tx.sender, tx.nonce), None)  # said yes, kept nothing
        return verdict

    def offer(self, tx: SimTx) -> str | None:
        """The pool's own rules (also for gossip)."""
        key = (tx.sender, tx.nonce)
        held = self.pool.get(key)
        if held is not None and held.hash == tx.hash:
            return ALREADY_KNOWN
        if tx.nonce < self.view.nonce(tx.sender) or self.view.block_of(tx.hash) is not None:
            return NONCE_TOO_LOW
        if held is not None and not geth_accepts_replacement(held.fees, tx.fees):
            return UNDERPRICED
        self.pool[key] = tx
        return None

    # -- following the chain ---------------------------------------------------------------------

    def adopt(self, block: Block, *, reinject: bool = True) -> tuple[list[Block], list[Block]]:
        left, joined = self.view.adopt(block)
        self.known.update(b.hash for b in joined)
        if reinject:
            for gone in left:
                for tx in gone.txs:
                    if self.view.block_of(tx.hash) is None:
                        held = self.pool.get((tx.sender, tx.nonce))
                        if held is None:
                            self.pool[(tx.sender, tx.nonce)] = tx
        for key in [k for k in self.pool if k[1] < self.view.nonce(k[0])]:
            del self.pool[key]
        return left, joined

    # -- reads (the ChainState seam's answers) ---------------------------------------------------

    def counts(self, sender: str) -> tuple[int, int]:
        latest = pending = self.view.nonce(sender)
        while (sender, pending) in self.pool:
            pending += 1
        return latest, pending + self.pending_offset

    def block_txs(self, hashes: Iterable[str]) -> dict[str, BlockTxs]:
        out: dict[str, BlockTxs] = {}
        for block_hash in hashes:
            block = self.view.block(block_hash)
            if block is not None and block_hash in self.known:
                out[block_hash] = BlockTxs(
                    block.number, block.hash, tuple(t.hash for t in block.txs)
                )
        return out

    def full_blocks(self, hashes: Iterable[str]) -> dict[str, FullBlock]:
        """``eth_getBlockByHash(h, true)`` as ``ChainReader.proven_blocks`` returns it once
        proven. The simulated nodes answer bodies honestly and each ``SimTx.sender`` is already
        recovered from its real signature (:func:`decode_tx`); what the body check refuses is
        pinned on real blocks (tests/broadcaster/audit, tests/e2e/test_inclusion_proven.py). A
        test that scripts a lying node replaces ``SimChainState.proven_blocks``."""
        out: dict[str, FullBlock] = {}
        for block_hash in hashes:
            block = self.view.block(block_hash)
            if block is not None and block_hash in self.known:
                txs = tuple(BlockTx(t.hash, t.sender, t.nonce) for t in block.txs)
                out[block_hash] = FullBlock(block.number, block.hash, txs, block.parent_hash)
        return out

    def receipts(self, tx_hashes: Iterable[bytes]) -> dict[bytes, Receipt]:
        out: dict[bytes, Receipt] = {}
        for tx_hash in tx_hashes:
            block = self.view.block_of(tx_hash)
            if block is not None:
                out[tx_hash] = Receipt(tx_hash, block.number, block.hash, 1)
        return out

    def mined_at(self, sender: str, nonce: int) -> MinedTx | None:
        """``eth_getTransactionBySenderAndNonce``; ``None`` where the node lacks the method."""
        if not self.sender_nonce_lookup:
            return None
        return self.search_mined(sender, nonce)

    def search_mined(self, sender: str, nonce: int) -> MinedTx | None:
        """What ``ChainReader``'s fallback finds on a node without the method: the block whose
        nonce count passes ``nonce`` (``eth_getTransactionCount`` by block), then the tx from
        ``sender`` at ``nonce`` in it (``eth_getBlockByNumber(n, true)``)."""
        for block, tx in self.view.txs():
            if tx.sender == sender and tx.nonce == nonce:
                return MinedTx(
                    hash=tx.hash,
                    to=tx.to,
                    value=tx.value,
                    data=tx.data,
                    max_fee_per_gas=tx.fee_cap,
                    max_priority_fee_per_gas=tx.tip_cap,
                    block_number=block.number,
                    block_hash=block.hash,
                    raw=tx.raw,
                )
        return None


class Network:
    """The nodes and the gossip between them."""

    def __init__(self, chain: SimChain, names: Iterable[str]) -> None:
        self.chain = chain
        self.nodes: dict[str, Node] = {}
        for name in names:
            node = Node(name, ChainView(chain.blocks, chain.genesis))
            node.known.add(chain.genesis.hash)
            self.nodes[name] = node

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def gossip(self, origin: Node, tx: SimTx) -> None:
        """A node accepted ``tx``: its peers hear of it (at once; gossip delay is not modelled)."""
        if not origin.peered or origin.drop_sends:
            return
        for node in self.nodes.values():
            if node is not origin and node.peered and not node.down:
                node.offer(tx)

    def candidates(self) -> list[SimTx]:
        """What the block producer can choose from: every peered node's pool."""
        seen: dict[bytes, SimTx] = {}
        for node in self.nodes.values():
            if node.peered:
                for tx in node.pool.values():
                    seen.setdefault(tx.hash, tx)
        return list(seen.values())

"""A scripted chain: blocks, branches, nonces and fee-ordered mining (no EVM, no network).

Blocks carry a whole London header (placeholder roots, a counter in ``extraData`` so siblings
differ) whose hash is its real ``keccak256(rlp(header))``: the tracker verifies every simulated
head as it verifies a real client's (DESIGN.md §3), and takes the base fee from it.

Transactions are the real signed bytes; :func:`decode_tx` reads sender, nonce, fees and payload
back with the project's codec (``signer_client.signing.signed_from_raw``). Mining follows what a
block builder does with a txpool: per sender, consecutive nonces from the account's nonce; a
transaction whose fee cap is under the block's base fee waits; senders ordered by effective tip.
State is only the nonce per account (no balances, no execution).

:class:`ChainView` is one node's idea of the canonical chain (a head and its ancestry, indexed by
height and by transaction hash); the simulator keeps one for the truth and one per node, so a
lagging node answers from an older or abandoned branch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from broadcaster.tx.blobs import canonical_form
from heads.header import compute_header_hash, header_plan
from nonce.fees import Fees
from signer_client.signing import signed_from_raw

__all__ = ["Block", "ChainView", "SimChain", "SimTx", "decode_tx"]


@dataclass(frozen=True, slots=True)
class SimTx:
    """A signed transaction as the chain sees it."""

    raw: bytes
    hash: bytes
    sender: str  # lowercase 0x-hex
    nonce: int
    type: int
    to: str | None
    value: int
    data: bytes
    fee_cap: int  # maxFeePerGas, or gasPrice for types 0 and 1
    tip_cap: int  # maxPriorityFeePerGas, or gasPrice

    @property
    def is_noop(self) -> bool:
        """A 0-value, empty-data self-transfer: the broadcaster's filler and cancel."""
        return self.to == self.sender and self.value == 0 and not self.data

    @property
    def fees(self) -> Fees:
        return Fees(self.fee_cap, self.tip_cap)

    @property
    def payload(self) -> tuple[str, str | None, int, bytes]:
        """What identifies an intent's transaction whatever its nonce and fees."""
        return (self.sender, self.to, self.value, self.data)

    def effective_tip(self, base_fee: int) -> int:
        return min(self.tip_cap, self.fee_cap - base_fee)


def decode_tx(raw: bytes) -> SimTx:
    """Decode signed bytes (raises ``signer_client.TxDecodeError`` for anything else). A blob
    transaction may come in its network form (with the sidecar): read from its canonical form,
    whose hash is the transaction's."""
    fields, signed = signed_from_raw(canonical_form(raw))
    return SimTx(
        raw=raw,
        hash=signed.hash,
        sender=signed.sender.lower(),
        nonce=fields.nonce,
        type=fields.type,
        to="0x" + fields.to.hex() if fields.to else None,
        value=fields.value,
        data=fields.data,
        fee_cap=fields.fee_cap,
        tip_cap=fields.tip_cap,
    )


@dataclass(frozen=True, slots=True, eq=False)
class Block:
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    base_fee: int
    txs: tuple[SimTx, ...]
    nonces: Mapping[str, int] = field(repr=False)  # account nonces after this block
    extra: str = "0x"  # extraData: tells siblings apart

    def header(self) -> dict[str, str]:
        """The ``newHeads`` object a node would send: a whole London header whose ``hash`` is
        its ``keccak256(rlp(header))``, so the tracker verifies it (and takes its base fee)."""
        header = london_header(
            self.number, self.parent_hash, self.timestamp, self.base_fee, self.extra
        )
        header["hash"] = self.hash
        return header

    def nonce(self, sender: str) -> int:
        return self.nonces.get(sender, 0)


def london_header(
    number: int, parent_hash: str, timestamp: int, base_fee: int, extra: str
) -> dict[str, str]:
    """The 16 consensus fields of a London header (EIP-1559), with placeholder roots."""
    zero32 = "0x" + "00" * 32
    return {
        "parentHash": parent_hash,
        "sha3Uncles": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
        "miner": "0x" + "00" * 20,
        "stateRoot": zero32,
        "transactionsRoot": zero32,
        "receiptsRoot": zero32,
        "logsBloom": "0x" + "00" * 256,
        "difficulty": "0x0",
        "number": hex(number),
        "gasLimit": hex(30_000_000),
        "gasUsed": "0x0",
        "timestamp": hex(timestamp),
        "extraData": extra,
        "mixHash": zero32,
        "nonce": "0x0000000000000000",
        "baseFeePerGas": hex(base_fee),
    }


def header_hash(number: int, parent_hash: str, timestamp: int, base_fee: int, extra: str) -> str:
    header = london_header(number, parent_hash, timestamp, base_fee, extra)
    plan = header_plan(header)
    assert plan is not None, "a London header is verifiable"
    return compute_header_hash(header, plan)


class ChainView:
    """A canonical chain ending at ``head``: height -> hash, and tx hash -> block."""

    def __init__(self, store: Mapping[str, Block], genesis: Block) -> None:
        self._store = store
        self.head = genesis
        self._by_number: list[str] = [genesis.hash]
        self._tx_block: dict[bytes, Block] = {}

    def adopt(self, block: Block) -> tuple[list[Block], list[Block]]:
        """Make ``block`` the head. Returns ``(left, joined)``, both ascending."""
        path: list[Block] = []
        cursor = block
        while not self.contains(cursor.hash):
            path.append(cursor)
            cursor = self._store[cursor.parent_hash]
        left = [self._store[h] for h in self._by_number[cursor.number + 1 :]]
        del self._by_number[cursor.number + 1 :]
        for gone in left:
            for tx in gone.txs:
                self._tx_block.pop(tx.hash, None)
        path.reverse()
        for joined in path:
            self._by_number.append(joined.hash)
            for tx in joined.txs:
                self._tx_block[tx.hash] = joined
        self.head = block
        return left, path

    def block(self, block_hash: str) -> Block | None:
        """Any block of the store (canonical or not), by hash."""
        return self._store.get(block_hash)

    def contains(self, block_hash: str) -> bool:
        block = self._store.get(block_hash)
        return (
            block is not None
            and block.number < len(self._by_number)
            and self._by_number[block.number] == block_hash
        )

    def at(self, number: int) -> Block | None:
        if 0 <= number < len(self._by_number):
            return self._store[self._by_number[number]]
        return None

    def block_of(self, tx_hash: bytes) -> Block | None:
        """The canonical block holding ``tx_hash``, if any."""
        return self._tx_block.get(tx_hash)

    def blocks(self) -> list[Block]:
        return [self._store[h] for h in self._by_number]

    def txs(self) -> Iterable[tuple[Block, SimTx]]:
        for block_hash in self._by_number:
            block = self._store[block_hash]
            for tx in block.txs:
                yield block, tx

    def nonce(self, sender: str) -> int:
        return self.head.nonce(sender)


class SimChain:
    """Every block ever made (a tree) and the producer's canonical view (``truth``)."""

    def __init__(self, *, base_fee: int, genesis_time: int = 1_700_000_000) -> None:
        self._ids = itertools.count(1)
        self.blocks: dict[str, Block] = {}
        zero = "0x" + "00" * 32
        extra = self._extra()
        genesis = Block(
            0,
            header_hash(0, zero, genesis_time, base_fee, extra),
            zero,
            genesis_time,
            base_fee,
            (),
            {},
            extra,
        )
        self.blocks[genesis.hash] = genesis
        self.genesis = genesis
        self.truth = ChainView(self.blocks, genesis)

    def _extra(self) -> str:
        return "0x" + next(self._ids).to_bytes(8, "big").hex()

    @property
    def tip(self) -> Block:
        return self.truth.head

    def build(
        self,
        parent: Block,
        candidates: Iterable[SimTx],
        *,
        base_fee: int | None = None,
        timestamp: int | None = None,
        max_txs: int = 200,
        forced: Iterable[SimTx] = (),
        exclude: Callable[[SimTx], bool] | None = None,
    ) -> Block:
        """A new block on ``parent``: ``forced`` txs first (if their nonces fit), then the best of
        ``candidates`` by nonce order and effective tip. Not made canonical (see ``adopt``)."""
        fee = parent.base_fee if base_fee is None else base_fee
        nonces = dict(parent.nonces)
        chosen: list[SimTx] = []
        for tx in forced:
            if tx.nonce == nonces.get(tx.sender, 0) and len(chosen) < max_txs:
                chosen.append(tx)
                nonces[tx.sender] = tx.nonce + 1
        best: dict[tuple[str, int], SimTx] = {}
        for tx in candidates:
            if exclude is not None and exclude(tx):
                continue
            key = (tx.sender, tx.nonce)
            held = best.get(key)
            if held is None or tx.effective_tip(fee) > held.effective_tip(fee):
                best[key] = tx
        chosen.extend(_select(best, nonces, fee, max_txs - len(chosen)))
        when = max(parent.timestamp + 12 if timestamp is None else timestamp, parent.timestamp + 1)
        extra = self._extra()
        block = Block(
            parent.number + 1,
            header_hash(parent.number + 1, parent.hash, when, fee, extra),
            parent.hash,
            when,
            fee,
            tuple(chosen),
            nonces,
            extra,
        )
        self.blocks[block.hash] = block
        return block

    def adopt(self, block: Block) -> tuple[list[Block], list[Block]]:
        """The producer's chain moves to ``block`` (an extension or a reorg)."""
        return self.truth.adopt(block)


def _select(
    best: Mapping[tuple[str, int], SimTx], nonces: dict[str, int], base_fee: int, room: int
) -> list[SimTx]:
    """Greedy by effective tip over each sender's executable nonce run (what geth's miner does)."""
    chosen: list[SimTx] = []
    while room > 0:
        ready = [
            tx
            for (sender, nonce), tx in best.items()
            if nonce == nonces.get(sender, 0) and tx.fee_cap >= base_fee
        ]
        if not ready:
            break
        ready.sort(key=lambda t: (-t.effective_tip(base_fee), t.sender, t.hash))
        tx = ready[0]
        chosen.append(tx)
        nonces[tx.sender] = tx.nonce + 1
        room -= 1
    return chosen

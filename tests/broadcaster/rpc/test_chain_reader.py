"""ChainReader against scripted nodes (its ``post`` replaced): no network, exact answers."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from eth_utils import keccak

from broadcaster.rpc.chain_reader import ChainReader, ChainReadError

ME = "0x" + "ab" * 20
OTHER = "0x" + "cd" * 20
URL = "http://node"


def raw_of(sender: str, nonce: int) -> bytes:
    return f"{sender}:{nonce}".encode()  # stands in for signed bytes: only its keccak matters


def hash_of(sender: str, nonce: int) -> str:
    return "0x" + keccak(raw_of(sender, nonce)).hex()


def block_hash(number: int) -> str:
    return "0x" + keccak(b"block %d" % number).hex()


def error(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


class ScriptedNode:
    """A chain in memory that answers JSON-RPC batches as geth would (by default: without any
    sender-and-nonce lookup). ``blocks[n]``: the ``(sender, nonce)`` transactions of block n;
    block 0 is the genesis and holds none."""

    def __init__(
        self,
        blocks: Sequence[Sequence[tuple[str, int]]],
        *,
        direct: bool = False,
        pruned_below: int | None = None,
        raw: str = "ok",  # "ok" | "missing" | "wrong"
    ) -> None:
        assert not blocks[0]
        self.blocks = [list(b) for b in blocks]
        self.direct = direct
        self.pruned_below = pruned_below
        self.raw = raw
        self.requests: list[list[str]] = []  # the methods of each request (one per round trip)
        self.lie_about: dict[str, Any] = {}  # method -> a wrong result to answer instead
        self._blocks_of: dict[str, list[int]] = {}
        self._where: dict[tuple[str, int], int] = {}
        self._by_hash: dict[str, tuple[str, int, int]] = {}
        for number, block in enumerate(self.blocks):
            for sender, nonce in block:
                self._blocks_of.setdefault(sender, []).append(number)
                self._where[(sender, nonce)] = number
                self._by_hash[hash_of(sender, nonce)] = (sender, nonce, number)

    @property
    def latest(self) -> int:
        return len(self.blocks) - 1

    def count(self, sender: str, number: int) -> int:
        # The sender's transactions in blocks 0..number: its nonce after that block.
        return bisect.bisect_right(self._blocks_of.get(sender, []), number)

    def where(self, sender: str, nonce: int) -> int | None:
        return self._where.get((sender, nonce))

    def tx(self, sender: str, nonce: int, number: int | None) -> dict[str, Any]:
        return {
            "hash": hash_of(sender, nonce),
            "from": sender,
            "nonce": hex(nonce),
            "to": OTHER,
            "value": hex(nonce + 1),
            "input": "0x",
            "maxFeePerGas": "0x64",
            "maxPriorityFeePerGas": "0x2",
            "blockHash": None if number is None else block_hash(number),
            "blockNumber": None if number is None else hex(number),
        }

    def block(self, number: int, full: bool) -> dict[str, Any]:
        txs = [self.tx(s, n, number) if full else hash_of(s, n) for s, n in self.blocks[number]]
        return {"number": hex(number), "hash": block_hash(number), "transactions": txs}

    def find(self, tx_hash: str) -> tuple[str, int, int] | None:
        return self._by_hash.get(tx_hash)

    def answer(self, method: str, params: list[Any]) -> dict[str, Any]:
        if method in self.lie_about:
            return {"result": self.lie_about[method]}
        missing = error(-32601, f"the method {method} does not exist/is not available")
        if method == "eth_blockNumber":
            return {"result": hex(self.latest)}
        if method == "eth_getTransactionCount":
            sender, tag = params
            number = self.latest if tag in ("latest", "pending") else int(tag, 16)
            if number > self.latest:
                return {"error": error(-32602, f"block {number} is above {self.latest}")}
            if self.pruned_below is not None and number < self.pruned_below:
                return {
                    "error": error(-32000, "missing trie node abc (path ) state is not available")
                }
            return {"result": hex(self.count(sender, number))}
        if method in ("eth_getTransactionBySenderAndNonce", "ots_getTransactionBySenderAndNonce"):
            if not self.direct or method.startswith("ots"):
                return {"error": missing}
            sender, nonce = params[0], int(params[1], 16)
            number = self.where(sender, nonce)
            return {"result": None if number is None else self.tx(sender, nonce, number)}
        if method == "eth_getBlockByNumber":
            number = int(params[0], 16)
            return {"result": self.block(number, params[1]) if number <= self.latest else None}
        if method == "eth_getBlockByHash":
            for number in range(len(self.blocks)):
                if block_hash(number) == params[0]:
                    return {"result": self.block(number, params[1])}
            return {"result": None}
        if method == "eth_getRawTransactionByHash":
            found = self.find(params[0])
            if self.raw == "missing":
                return {"error": missing}
            if found is None:
                return {"result": None}
            raw = raw_of(found[0], found[1]) + (b"!" if self.raw == "wrong" else b"")
            return {"result": "0x" + raw.hex()}
        if method == "eth_getTransactionReceipt":
            found = self.find(params[0])
            if found is None:
                return {"result": None}
            return {
                "result": {
                    "transactionHash": params[0],
                    "blockNumber": hex(found[2]),
                    "blockHash": block_hash(found[2]),
                    "status": "0x1",
                }
            }
        return {"error": missing}

    async def post(self, url: str, body: Any) -> Any:
        self.requests.append([call["method"] for call in body])
        return [
            {"jsonrpc": "2.0", "id": call["id"], **self.answer(call["method"], call["params"])}
            for call in body
        ]


def reader_for(node: ScriptedNode, lies: list[str] | None = None) -> ChainReader:
    return ChainReader(
        [URL],
        post=node.post,
        on_lie=None if lies is None else (lambda url, what: lies.append(what)),
    )


def chain(length: int, placed: dict[int, list[tuple[str, int]]]) -> list[list[tuple[str, int]]]:
    """``length`` blocks after the genesis, with ``placed[n]`` in block n."""
    return [[]] + [placed.get(n, []) for n in range(1, length + 1)]


async def test_transaction_counts_each_asks_every_endpoint_and_keeps_their_failures() -> None:
    honest = ScriptedNode(chain(5, {1: [(ME, 0)], 2: [(ME, 1)]}))
    jumpy = ScriptedNode(chain(5, {1: [(ME, 0)], 2: [(ME, 1)]}))
    jumpy.lie_about["eth_getTransactionCount"] = "0x40"
    nodes = {"http://honest": honest, "http://jumpy": jumpy}

    async def post(url: str, body: Any) -> Any:
        if url == "http://down":
            raise ConnectionRefusedError(111, "Connection refused")
        if url == "http://garbled":
            return {"not": "a list"}
        return await nodes[url].post(url, body)

    urls = ["http://honest", "http://jumpy", "http://down", "http://garbled"]
    counts = await ChainReader(urls, post=post).transaction_counts_each(ME)
    assert list(counts) == urls
    assert counts["http://honest"] == (2, 2)
    assert counts["http://jumpy"] == (64, 64)
    assert isinstance(counts["http://down"], ChainReadError)
    assert "ConnectionRefusedError" in str(counts["http://down"])
    assert isinstance(counts["http://garbled"], ChainReadError)
    assert [len(n.requests) for n in (honest, jumpy)] == [1, 1]  # one batch each


async def test_receipts_carry_block_number_and_hash_and_a_foreign_one_is_dropped() -> None:
    lies: list[str] = []
    node = ScriptedNode(chain(4, {3: [(ME, 0), (ME, 1)]}))
    reader = reader_for(node, lies)
    ours = [bytes.fromhex(hash_of(ME, n)[2:]) for n in (0, 1)]
    unknown = b"\x99" * 32
    receipts = await reader.receipts([*ours, unknown])
    assert set(receipts) == set(ours)
    for tx_hash in ours:
        receipt = receipts[tx_hash]
        assert (receipt.block_number, receipt.block_hash, receipt.status) == (3, block_hash(3), 1)
    node.lie_about["eth_getTransactionReceipt"] = {
        "transactionHash": hash_of(ME, 1),
        "blockNumber": "0x3",
        "blockHash": block_hash(3),
    }
    assert await reader.receipts(ours[:1]) == {}
    assert lies == ["receipt_hash_mismatch"]


async def test_blocks_keep_only_blocks_answered_with_the_hash_asked_for() -> None:
    lies: list[str] = []
    node = ScriptedNode(chain(4, {2: [(ME, 0)]}))
    reader = reader_for(node, lies)
    found = await reader.blocks([block_hash(2), block_hash(9)])
    assert list(found) == [block_hash(2)]
    assert (found[block_hash(2)].number, found[block_hash(2)].tx_hashes) == (
        2,
        (bytes.fromhex(hash_of(ME, 0)[2:]),),
    )
    node.lie_about["eth_getBlockByHash"] = node.block(3, False)
    assert await reader.blocks([block_hash(2)]) == {}
    assert lies == ["block_hash_mismatch"]

"""ChainReader against scripted nodes (its ``post`` replaced): no network, exact answers.

The search behind ``mined_at`` (for nodes without ``eth_getTransactionBySenderAndNonce``) is
checked at the block boundaries: a nonce used in block 1, in the latest block, by the first or
last of several transactions in one block, not used at all; and what a pruned node or a search
range that starts too late does to it (never "not mined" for a used nonce).
"""

from __future__ import annotations

import bisect
import functools
import random
from collections.abc import Sequence
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from broadcaster.audit.body import ordered_trie_root
from broadcaster.rpc.chain_reader import ChainReader, ChainReadError, UnlocatedNonce
from heads.header import compute_header_hash, header_plan

KEYS = {Account.from_key(k).address.lower(): k for k in ("0x" + "ab" * 32, "0x" + "cd" * 32)}
ME, OTHER = KEYS
URL = "http://node"


@functools.cache
def _signed(sender: str, nonce: int) -> Any:
    """``sender``'s real signed EIP-1559 transaction at ``nonce`` (RFC 6979: deterministic)."""
    tx = {"type": 2, "chainId": 1, "nonce": nonce, "gas": 21_000, "to": to_checksum(OTHER),
          "value": nonce + 1, "data": b"", "maxFeePerGas": 100,
          "maxPriorityFeePerGas": 2}  # fmt: skip
    return Account.sign_transaction(tx, KEYS[sender])


def to_checksum(address: str) -> str:
    return str(to_checksum_address(address))


def raw_of(sender: str, nonce: int) -> bytes:
    return bytes(_signed(sender, nonce).raw_transaction)


def hash_of(sender: str, nonce: int) -> str:
    return "0x" + keccak(raw_of(sender, nonce)).hex()


def rpc_tx(sender: str, nonce: int, number: int | None, block: str | None) -> dict[str, Any]:
    """The transaction object an RPC lists for ``_signed(sender, nonce)``."""
    signed = _signed(sender, nonce)
    return {
        "type": "0x2", "chainId": "0x1", "hash": hash_of(sender, nonce), "from": sender,
        "nonce": hex(nonce), "gas": hex(21_000), "to": OTHER, "value": hex(nonce + 1),
        "input": "0x", "maxFeePerGas": "0x64", "maxPriorityFeePerGas": "0x2",
        "gasPrice": "0x64", "accessList": [], "v": hex(signed.v), "yParity": hex(signed.v),
        "r": hex(signed.r), "s": hex(signed.s), "blockHash": block,
        "blockNumber": None if number is None else hex(number),
    }  # fmt: skip


def frontier_header(number: int, encodings: Sequence[bytes]) -> dict[str, Any]:
    """A frontier header over ``encodings`` (its transactions root), with its real hash."""
    header: dict[str, Any] = {
        "parentHash": "0x" + "11" * 32, "sha3Uncles": "0x" + "22" * 32, "miner": "0x" + "33" * 20,
        "stateRoot": "0x" + "44" * 32,
        "transactionsRoot": "0x" + ordered_trie_root(encodings).hex(),
        "receiptsRoot": "0x" + "55" * 32, "logsBloom": "0x" + "00" * 256, "difficulty": "0x0",
        "number": hex(number), "gasLimit": hex(30_000_000),
        "gasUsed": hex(21_000 * len(encodings)),
        "timestamp": hex(1_700_000_000 + number), "extraData": "0x", "mixHash": "0x" + "66" * 32,
        "nonce": "0x" + "00" * 8,
    }  # fmt: skip
    plan = header_plan(header)
    assert plan is not None
    header["hash"] = compute_header_hash(header, plan)
    return header


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
        self._headers: dict[int, dict[str, Any]] = {}
        self._numbers: dict[str, int] = {}  # block hash -> number, once computed
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

    def block_hash(self, number: int) -> str:
        """Block ``number``'s real header hash (computed on first use, then known by hash)."""
        header = self._headers.get(number)
        if header is None:
            encodings = [raw_of(s, n) for s, n in self.blocks[number]]
            header = self._headers[number] = frontier_header(number, encodings)
            self._numbers[header["hash"]] = number
        return str(header["hash"])

    def tx(self, sender: str, nonce: int, number: int | None) -> dict[str, Any]:
        block = None if number is None else self.block_hash(number)
        return rpc_tx(sender, nonce, number, block)

    def block(self, number: int, full: bool) -> dict[str, Any]:
        txs = [self.tx(s, n, number) if full else hash_of(s, n) for s, n in self.blocks[number]]
        self.block_hash(number)
        return {**self._headers[number], "transactions": txs}

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
            number = self._numbers.get(params[0])
            return {"result": None if number is None else self.block(number, params[1])}
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
                    "blockHash": self.block_hash(found[2]),
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


@pytest.mark.parametrize(
    ("where", "length"),
    [(1, 1), (1, 500), (500, 500), (499, 500), (2, 3), (250, 500)],
    ids=["only-block", "first-block", "latest-block", "below-latest", "middle-short", "middle"],
)
async def test_the_search_finds_the_block_that_used_the_nonce(where: int, length: int) -> None:
    placed = {n: [(ME, n - 1)] for n in range(1, where)}  # nonces 0..where-2 before it
    placed[where] = [(OTHER, 0), (ME, where - 1)]
    node = ScriptedNode(chain(length, placed))
    mined = await reader_for(node).mined_at(ME, where - 1)
    assert mined is not None
    assert (mined.block_number, mined.block_hash) == (where, node.block_hash(where))
    assert mined.hash.hex() == hash_of(ME, where - 1)[2:]
    assert mined.raw == raw_of(ME, where - 1)  # served, and it hashes to the hash
    assert (mined.to, mined.value, mined.data) == (OTHER, where, b"")
    assert (mined.max_fee_per_gas, mined.max_priority_fee_per_gas) == (100, 2)


async def test_a_nonce_not_used_on_chain_is_none_and_costs_no_search() -> None:
    node = ScriptedNode(chain(50, {3: [(ME, 0)], 9: [(ME, 1)]}))
    reader = reader_for(node)
    assert await reader.mined_at(ME, 2) is None
    assert await reader.mined_at(OTHER, 0) is None
    assert not any("eth_getBlockByNumber" in methods for methods in node.requests)


async def test_each_of_several_nonces_in_one_block_and_every_nonce_of_a_long_chain() -> None:
    rng = random.Random(5)
    placed: dict[int, list[tuple[str, int]]] = {}
    nonce = 0
    for number in range(1, 2001):
        for _ in range(rng.choice([0, 0, 0, 1, 3])):  # gaps, and blocks with several
            placed.setdefault(number, []).append((ME, nonce))
            nonce += 1
    node = ScriptedNode(chain(2000, placed))
    reader = reader_for(node)
    for n in range(nonce):
        mined = await reader.mined_at(ME, n)
        assert mined is not None and mined.block_number == node.where(ME, n), n
    assert await reader.mined_at(ME, nonce) is None


async def test_a_recent_transaction_takes_few_round_trips() -> None:
    node = ScriptedNode(chain(100_000, {99_998: [(ME, 0)]}))
    mined = await reader_for(node).mined_at(ME, 0)
    assert mined is not None and mined.block_number == 99_998
    searching = [m for m in node.requests if m[0] == "eth_getTransactionCount"]
    assert len(searching) <= 3  # latest, the gallop, one narrowing batch


async def test_a_node_with_the_direct_lookup_is_asked_that_and_believed() -> None:
    node = ScriptedNode(chain(30, {7: [(ME, 0)]}), direct=True)
    reader = reader_for(node)
    mined = await reader.mined_at(ME, 0)
    assert mined is not None and mined.block_number == 7
    assert await reader.mined_at(ME, 1) is None
    assert not any("eth_getTransactionCount" in methods for methods in node.requests)


async def test_a_used_nonce_below_the_search_range_is_unlocated_never_none() -> None:
    node = ScriptedNode(chain(40, {5: [(ME, 0)], 30: [(ME, 1)]}))
    reader = reader_for(node)
    with pytest.raises(UnlocatedNonce, match="count already past it at block 9") as caught:
        await reader.mined_at(ME, 0, since_block=10)
    assert isinstance(caught.value, ChainReadError)
    assert (caught.value.nonce, caught.value.searched_from) == (0, 10)
    found = await reader.mined_at(ME, 0, since_block=5)  # the boundary: block 5 may hold it
    assert found is not None and found.block_number == 5
    found = await reader.mined_at(ME, 1, since_block=30)
    assert found is not None and found.block_number == 30


async def test_a_pruned_node_finds_recent_transactions_and_says_so_for_old_ones() -> None:
    node = ScriptedNode(chain(1000, {100: [(ME, 0)], 990: [(ME, 1)]}), pruned_below=1000 - 128)
    reader = reader_for(node)
    recent = await reader.mined_at(ME, 1)
    assert recent is not None and recent.block_number == 990
    with pytest.raises(UnlocatedNonce, match="no state for block"):
        await reader.mined_at(ME, 0)


async def test_raw_bytes_are_kept_only_when_they_hash_to_the_transaction() -> None:
    lies: list[str] = []
    wrong = ScriptedNode(chain(3, {2: [(ME, 0)]}), raw="wrong")
    mined = await reader_for(wrong, lies).mined_at(ME, 0)
    assert mined is not None and mined.raw == b""
    assert lies == ["raw_hash_mismatch"]
    without = ScriptedNode(chain(3, {2: [(ME, 0)]}), raw="missing")
    mined = await reader_for(without).mined_at(ME, 0)
    assert mined is not None and (mined.raw, mined.block_number) == (b"", 2)


async def test_a_direct_answer_for_another_sender_or_nonce_is_not_believed() -> None:
    lies: list[str] = []
    node = ScriptedNode(chain(3, {2: [(ME, 0)]}), direct=True)
    node.lie_about["eth_getTransactionBySenderAndNonce"] = node.tx(OTHER, 0, 2)
    assert await reader_for(node, lies).mined_at(ME, 0) is None
    assert lies == ["mined_tx_mismatch"]


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
        assert (receipt.block_number, receipt.status) == (3, 1)
        assert receipt.block_hash == node.block_hash(3)
    node.lie_about["eth_getTransactionReceipt"] = {
        "transactionHash": hash_of(ME, 1),
        "blockNumber": "0x3",
        "blockHash": node.block_hash(3),
    }
    assert await reader.receipts(ours[:1]) == {}
    assert lies == ["receipt_hash_mismatch"]


async def test_blocks_keep_only_blocks_answered_with_the_hash_asked_for() -> None:
    lies: list[str] = []
    node = ScriptedNode(chain(4, {2: [(ME, 0)]}))
    reader = reader_for(node, lies)
    found = await reader.blocks([node.block_hash(2), "0x" + "99" * 32])
    assert list(found) == [node.block_hash(2)]
    assert (found[node.block_hash(2)].number, found[node.block_hash(2)].tx_hashes) == (
        2,
        (bytes.fromhex(hash_of(ME, 0)[2:]),),
    )
    node.lie_about["eth_getBlockByHash"] = node.block(3, False)
    assert await reader.blocks([node.block_hash(2)]) == {}
    assert lies == ["block_hash_mismatch"]


# -- a lying RPC must not make a nonce look taken by a foreign transaction ----------------------
# (the tx side gives an intent up as ``failed`` with the foreign_transaction alert on mined_at's
# word: the answer is proven by its block, the sender recovered from the signature)


async def test_a_direct_answer_naming_a_real_block_that_does_not_hold_it_is_not_believed() -> None:
    node = ScriptedNode(chain(3, {2: [(ME, 0)]}), direct=True)
    # A real signature of ours at nonce 0 (a replacement that was never mined), said to be in
    # the real block 2, and a forged one "from" us: neither is in that block.
    other = Account.sign_transaction(
        {"type": 2, "chainId": 1, "nonce": 0, "gas": 21_000, "to": to_checksum(ME),
         "value": 999, "data": b"", "maxFeePerGas": 100, "maxPriorityFeePerGas": 2},
        KEYS[ME],
    )  # fmt: skip
    replacement = {**node.tx(ME, 0, 2), "to": ME, "value": hex(999), "v": hex(other.v),
                   "yParity": hex(other.v), "r": hex(other.r), "s": hex(other.s),
                   "hash": "0x" + bytes(other.hash).hex()}  # fmt: skip
    forged = {**node.tx(ME, 0, 2), "to": OTHER, "value": hex(10**24), "hash": "0x" + "77" * 32}
    for lie in (replacement, forged):
        node.lie_about["eth_getTransactionBySenderAndNonce"] = lie
        with pytest.raises(UnlocatedNonce, match="does not prove it"):
            await reader_for(node).mined_at(ME, 0)
    del node.lie_about["eth_getTransactionBySenderAndNonce"]
    mined = await reader_for(node).mined_at(ME, 0)  # the honest answer is proven
    assert mined is not None and mined.hash.hex() == hash_of(ME, 0)[2:]


async def test_the_search_reads_the_sender_from_the_signature_not_the_rpcs_from() -> None:
    node = ScriptedNode(chain(3, {2: [(OTHER, 0), (ME, 0)]}))
    block = node.block(2, True)
    block["transactions"][0]["from"] = ME  # another sender's tx at the same nonce, relabelled
    node.lie_about["eth_getBlockByNumber"] = block
    mined = await reader_for(node).mined_at(ME, 0)
    assert mined is not None and mined.hash.hex() == hash_of(ME, 0)[2:]
    # Our tx left out and the other one relabelled: the body no longer matches the header.
    lies: list[str] = []
    node.lie_about["eth_getBlockByNumber"] = {**block, "transactions": block["transactions"][:1]}
    with pytest.raises(UnlocatedNonce, match="does not prove it"):
        await reader_for(node, lies).mined_at(ME, 0)
    assert lies == ["mined_block_refused"]

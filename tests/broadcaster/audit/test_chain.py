"""Full blocks for the live reconciler: one lying or lagging read endpoint cannot hide a
transaction of ours while another answers honestly."""

from __future__ import annotations

from typing import Any

import pytest

from broadcaster.audit.chain import full_blocks
from broadcaster.audit.reconcile import plan_block
from broadcaster.rpc.chain_reader import ChainReader, ChainReadError

OURS = "0x" + "aa" * 20
BLOCK = "0x" + "b1" * 32


def tx(n: int, sender: str, nonce: int) -> dict[str, Any]:
    return {"hash": "0x" + f"{n:064x}", "from": sender, "nonce": hex(nonce), "type": "0x0"}


def block(*txs: dict[str, Any]) -> dict[str, Any]:
    return {"number": "0x7", "hash": BLOCK, "transactions": list(txs)}


def answer(node: dict[str, Any] | None, call: dict[str, Any]) -> Any:
    """What a node holding block ``node`` (or none) answers to one call."""
    method, params = call["method"], call["params"]
    if node is None:
        return None
    if method == "eth_getTransactionByHash":
        found = [t for t in node["transactions"] if t["hash"] == params[0]]
        return {**found[0], "blockHash": node["hash"]} if found else None
    if params[0] not in (node["hash"], node["number"]):
        return None
    if params[1]:
        return node
    return {**node, "transactions": [t["hash"] for t in node["transactions"]]}


def reader(nodes: dict[str, Any]) -> ChainReader:
    """Endpoints by URL: a node's block, ``None`` (no block yet) or an exception raised."""
    calls: dict[str, list[Any]] = {url: [] for url in nodes}

    async def post(url: str, body: Any) -> Any:
        node = nodes[url]
        if isinstance(node, Exception):
            raise node
        calls[url].extend(body)
        return [{"jsonrpc": "2.0", "id": c["id"], "result": answer(node, c)} for c in body]

    chain = ChainReader(list(nodes), post=post)
    chain.calls = calls  # type: ignore[attr-defined]
    return chain


async def test_a_foreign_tx_omitted_by_the_first_endpoint_is_still_checked() -> None:
    """Attack: the RPC that answers first (the one ``ChainReader`` sticks to) serves the block
    under its true hash without the foreign transaction from our account (mixed case ``from``,
    a legacy type-0 tx); an honest endpoint has it."""
    foreign = tx(9, "0x" + "AA" * 20, 4)
    honest = block(tx(1, "0x" + "11" * 20, 0), foreign)
    liar = block(tx(1, "0x" + "11" * 20, 0))
    chain = reader({"http://liar": liar, "http://honest": honest})
    blocks = await full_blocks(chain, [BLOCK])
    audit = plan_block(blocks[BLOCK], {OURS}, signed=set(), external=set())
    assert [(f.sender, f.nonce) for f in audit.foreign] == [(OURS, 4)]


async def test_an_endpoint_without_the_block_yet_does_not_keep_it_from_being_checked() -> None:
    """A lagging endpoint answers ``null`` for a new block; the other one has it."""
    chain = reader({"http://lagging": None, "http://down": OSError("refused"),
                    "http://honest": block(tx(1, OURS, 0))})  # fmt: skip
    blocks = await full_blocks(chain, [BLOCK])
    assert [t.nonce for t in blocks[BLOCK].txs] == [0]


async def test_no_endpoint_answering_is_a_read_error_not_an_empty_answer() -> None:
    chain = reader({"http://a": OSError("refused"), "http://b": OSError("refused")})
    with pytest.raises(ChainReadError):
        await full_blocks(chain, [BLOCK])


async def test_broadcaster_audit_history_is_not_hidden_by_the_endpoint_it_reads_first() -> None:
    """The same omission, offline: ``broadcaster audit`` reads the canonical chain by number from
    the first endpoint, and each block's transactions from every endpoint; and a ``--to-block``
    beyond every endpoint's tip is an error (exit 2), never a silently shorter audit."""
    from broadcaster.audit.chain import full_blocks_by_number

    foreign = tx(9, OURS, 4)
    chain = reader({"http://liar": block(tx(1, OURS, 3)),
                    "http://honest": block(tx(1, OURS, 3), foreign)})  # fmt: skip
    (found,) = await full_blocks_by_number(chain, [7])
    assert [t.nonce for t in found.txs] == [3, 4]
    with pytest.raises(ValueError, match="block 8: the RPC does not have it"):
        await full_blocks_by_number(chain, [7, 8])


async def test_only_one_endpoint_sends_full_blocks_the_others_send_hashes() -> None:
    """Cost: the event loop parses one full block per block, not one per endpoint."""
    body = block(tx(1, OURS, 3), tx(2, "0x" + "22" * 20, 0))
    chain = reader({"http://a": body, "http://b": body, "http://c": body})
    blocks = await full_blocks(chain, [BLOCK])
    assert len(blocks[BLOCK].txs) == 2
    full = [
        url for url, calls in chain.calls.items()  # type: ignore[attr-defined]
        for c in calls if c["method"] == "eth_getBlockByHash" and c["params"][1]
    ]  # fmt: skip
    assert full == ["http://a"]

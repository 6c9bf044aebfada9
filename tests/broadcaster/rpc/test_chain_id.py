"""Broadcast RPCs are screened with eth_chainId at start (DESIGN.md §3 trust)."""

from __future__ import annotations

from typing import Any

import aiohttp

from broadcaster.rpc.chain_id import ChainIdMismatch, http_url, judge_chain_id, screen_rpcs


def test_an_answer_of_the_configured_chain_passes() -> None:
    assert (
        judge_chain_id("a", "http://x", 31337, {"jsonrpc": "2.0", "id": 1, "result": "0x7a69"})
        is None
    )


def test_another_chain_or_no_quantity_is_a_mismatch_naming_the_endpoint() -> None:
    for reply in ({"result": "0x1"}, {"result": None}, {"error": {"code": -32601}}, "junk"):
        error = judge_chain_id("mainnet-node", "http://x:1", 31337, reply)
        assert isinstance(error, ChainIdMismatch), reply
        assert "rpc mainnet-node" in str(error) and "31337" in str(error)


def test_a_websocket_rpc_is_asked_at_its_http_endpoint() -> None:
    assert http_url("ws://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert http_url("wss://node.example/key") == "https://node.example/key"
    assert http_url("http://127.0.0.1:1") == "http://127.0.0.1:1"


async def test_screening_keeps_the_right_chain_refuses_another_and_keeps_a_silent_one() -> None:
    answers: dict[str, Any] = {
        "http://good": {"jsonrpc": "2.0", "id": 1, "result": "0x7a69"},
        "http://other": {"jsonrpc": "2.0", "id": 1, "result": "0x1"},
    }
    asked: list[tuple[str, Any]] = []

    async def post(url: str, body: Any) -> Any:
        asked.append((url, body))
        if url == "http://down":
            raise aiohttp.ClientConnectionError("refused")
        return answers[url]

    screen = await screen_rpcs(
        [("good", "http://good"), ("other", "http://other"), ("down", "http://down")],
        31337,
        post=post,
    )
    assert screen.kept == ["good", "down"]
    assert [e.name for e in screen.refused] == ["other"]
    assert screen.unchecked == ["down"]
    assert all(body["method"] == "eth_chainId" for _, body in asked)


async def test_a_bundle_only_builder_refusing_eth_chain_id_is_kept_but_a_wrong_chain_is_not() -> (
    None
):
    """Every kind is screened (DESIGN.md 5a): a builder's -32601 keeps it unverified; a builder or
    private RPC answering another chain is kept out like a public one."""
    answers = {
        "http://b/": {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no"}},
        "http://b2/": {"jsonrpc": "2.0", "id": 1, "result": "0x1"},
        "http://p/": {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no"}},
        "http://b3/": "method not allowed",
    }

    async def post(url: str, body: object) -> object:
        return answers[url]

    screen = await screen_rpcs(
        [("b", "http://b/"), ("b2", "http://b2/"), ("p", "http://p/"), ("b3", "http://b3/")],
        31337,
        post=post,
        bundle_only=["b", "b2", "b3"],
    )
    assert screen.kept == ["b", "b3"] and screen.unchecked == ["b", "b3"]
    assert sorted(r.name for r in screen.refused) == ["b2", "p"]

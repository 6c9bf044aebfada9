"""Two tenants on one real service: every cross-tenant read, cancel, subscribe and send is
refused, by intent id and by every hash (the original and the re-signed one after a real
``anvil_reorg``), over HTTP and over websocket (issue 13).

Refused means: answered exactly as for something that does not exist (``-32602 no intent ...
is known here``; for ``eth_getTransactionReceipt``/``ByHash`` the node's own answer for that
hash, with no continuity), or, for sends, a ``-32602`` naming the field or the raw rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from eth_account import Account
from websockets.asyncio.client import ClientConnection, connect

from broadcaster.dev.anvil import DEV_ADDRESS, DEV_KEY, start_enclave
from broadcaster.dev.stack import DevStack, dev_stack

pytestmark = pytest.mark.e2e

B_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil #1
B_ADDRESS = Account.from_key(B_KEY).address
RECIPIENT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
WAIT = 30.0
GWEI = 10**9
INTENT = {"to": RECIPIENT, "value": "0x1", "gas": "0x5208", "maxFeePerGas": hex(3 * GWEI)}


class Caller:
    """JSON-RPC over one transport, with the token as the URL path."""

    transport = ""

    async def call(self, method: str, *params: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def result(self, method: str, *params: Any) -> Any:
        reply = await self.call(method, *params)
        assert "result" in reply, reply
        return reply["result"]


class HttpCaller(Caller):
    transport = "http"

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url, self.ids = session, url, itertools.count(1)

    async def call(self, method: str, *params: Any) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": list(params)}
        async with self.session.post(self.url, data=orjson.dumps(body)) as response:
            reply: dict[str, Any] = orjson.loads(await response.read())
            return reply


class WsCaller(Caller):
    transport = "websocket"

    def __init__(self, ws: ClientConnection) -> None:
        self.ws, self.ids = ws, itertools.count(1)
        self.notes: list[dict[str, Any]] = []

    async def call(self, method: str, *params: Any) -> dict[str, Any]:
        request_id = next(self.ids)
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        await self.ws.send(orjson.dumps(body))
        while True:
            async with asyncio.timeout(WAIT):
                message: dict[str, Any] = orjson.loads(await self.ws.recv())
            if message.get("method") == "broadcaster_subscription":
                self.notes.append(message["params"]["result"])
            elif message.get("id") == request_id:
                return message


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[DevStack]:
    async with (
        start_enclave(tmp_path / "enclave", keys=(DEV_KEY, B_KEY)) as signer_url,
        dev_stack(
            tmp_path,
            signer_url=signer_url,
            accounts=(DEV_ADDRESS, B_ADDRESS),
            tenants=[("bot-a", "tok-a", [DEV_ADDRESS]), ("bot-b", "tok-b", [B_ADDRESS])],
        ) as running,
    ):
        yield running


@contextlib.asynccontextmanager
async def callers(stack: DevStack, transport: str) -> AsyncIterator[tuple[Caller, Caller]]:
    if transport == "http":
        async with aiohttp.ClientSession() as session:
            yield (
                HttpCaller(session, stack.url_for("tok-a", "http")),
                HttpCaller(session, stack.url_for("tok-b", "http")),
            )
    else:
        async with (
            connect(stack.url_for("tok-a"), proxy=None) as ws_a,
            connect(stack.url_for("tok-b"), proxy=None) as ws_b,
        ):
            yield WsCaller(ws_a), WsCaller(ws_b)


async def until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def unknown(name: str, field: str = "id") -> tuple[int, str]:
    return -32602, f"invalid params: {field}: no intent {name!r} is known here"


def error(reply: dict[str, Any]) -> tuple[int, str]:
    assert "error" in reply, reply
    return reply["error"]["code"], reply["error"]["message"]


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_every_cross_tenant_read_cancel_subscribe_and_send_is_refused(
    stack: DevStack, transport: str
) -> None:
    async with callers(stack, transport) as (a, b):
        assert await a.result("eth_accounts") == [DEV_ADDRESS]
        assert await b.result("eth_accounts") == [B_ADDRESS]
        sent_a = await a.result(
            "broadcaster_sendIntent", INTENT
        )  # "from" left out: its one account
        sent_b = await b.result("broadcaster_sendIntent", INTENT)
        assert (sent_a["from"], sent_b["from"]) == (DEV_ADDRESS, B_ADDRESS)

        async def resigned_and_included(caller: Caller, sent: dict[str, Any]) -> bool:
            got = await caller.result("broadcaster_getIntent", sent["id"])
            return bool(got["status"] == "included" and got["hash"] != sent["hash"])

        async def included(caller: Caller, sent: dict[str, Any]) -> bool:
            got = await caller.result("broadcaster_getIntent", sent["id"])
            return bool(got["status"] == "included")

        await until(lambda: included(a, sent_a), "A's inclusion")
        await until(lambda: included(b, sent_b), "B's inclusion")
        await stack.node.rpc("anvil_reorg", 2, [])  # both blocks (automine: one tx each)
        await until(lambda: resigned_and_included(a, sent_a), "A's re-signed inclusion")
        now_a = await a.result("broadcaster_getIntent", sent_a["id"])
        original, resigned = now_a["hashes"][0], now_a["hash"]

        # Reads and cancels, by id and by every hash: exactly "unknown".
        for name in (sent_a["id"], original, resigned):
            for method in ("broadcaster_getIntent", "broadcaster_cancelIntent"):
                assert error(await b.call(method, name)) == unknown(name)
        assert (await a.result("broadcaster_getIntent", sent_a["id"]))["status"] == "included"

        # Continuity is A's alone: B gets the node's own answer for the original hash.
        receipt_a = await a.result("eth_getTransactionReceipt", original)
        assert receipt_a["transactionHash"] == resigned and receipt_a["status"] == "0x1"
        assert (await a.result("eth_getTransactionByHash", original))["hash"] == resigned
        assert await b.result("eth_getTransactionReceipt", original) is None
        assert await b.result("eth_getTransactionByHash", original) is None

        # Subscribing to A's intent, by id or hash.
        for name in (sent_a["id"], original, resigned):
            code, message = error(await b.call("broadcaster_subscribe", [name]))
            if transport == "http":
                assert code == -32601 and "needs a websocket" in message
            else:
                assert (code, message) == unknown(name, "params[0]")

        # Sends from A's account, by every method.
        for method in ("broadcaster_sendIntent", "eth_sendTransaction"):
            assert error(await b.call(method, {**INTENT, "from": DEV_ADDRESS})) == (
                -32602,
                f"invalid params: from: {DEV_ADDRESS.lower()} is not an account this token may "
                "send from",
            )
        nonce = int(await stack.node.rpc("eth_getTransactionCount", DEV_ADDRESS, "pending"), 16)
        raw = Account.sign_transaction(
            {"type": 2, "chainId": 31337, "nonce": nonce, "to": RECIPIENT, "value": 1,
             "gas": 21_000, "maxFeePerGas": 3 * GWEI, "maxPriorityFeePerGas": GWEI},
            DEV_KEY,
        ).raw_transaction.to_0x_hex()  # fmt: skip
        assert error(await b.call("eth_sendRawTransaction", raw)) == (
            -32602,
            "invalid params: params[0]: raw transaction refused (sender): signed by "
            f"{DEV_ADDRESS}, which is not an account of this token",
        )
        manager = stack.service.manager
        assert manager is not None
        assert {r.sender for r in manager.book.all_records()} == {
            DEV_ADDRESS.lower(),
            B_ADDRESS.lower(),
        }
        assert len(list(manager.book.all_records())) == 2  # nothing B tried was booked

        # Following "all intents" is following one's own.
        if isinstance(b, WsCaller):
            await b.result("broadcaster_subscribe")
            more_a = await a.result("broadcaster_sendIntent", INTENT)
            await until(lambda: included(a, more_a), "A's second inclusion")
            more_b = await b.result("broadcaster_sendIntent", INTENT)
            await until(lambda: included(b, more_b), "B's second inclusion")

            async def noted() -> bool:
                await b.call("eth_chainId")  # reads whatever notifications came first
                return any(n["id"] == more_b["id"] and n["status"] == "included" for n in b.notes)

            await until(noted, "B's notification of its own inclusion")
            seen = {n["id"] for n in b.notes}
            assert more_b["id"] in seen and more_a["id"] not in seen
            assert {n["from"] for n in b.notes} == {B_ADDRESS}

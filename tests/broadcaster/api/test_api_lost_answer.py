"""What an unchanged web3.py bot gets when the answer to its send is lost (issue #13, Build 4;
README "Idempotency and lost answers"): web3.py's own ``HTTPProvider`` against the real API
transport, through a proxy that lets the request reach the service and then drops the
connection instead of the answer.

- ``send_transaction``: web3.py does not retry it (not in its retry allowlist); the bot gets a
  connection error although the intent *was* booked: sending again would be a second trade.
- ``send_raw_transaction``: web3.py retries it on its own only when the answer is lost by a
  *timeout* (``requests.Timeout`` is in its default retry errors); the same bytes are "already
  known", so the retry is answered with the same hash and nothing is booked twice. A dropped
  connection is *not* retried: web3.py 8 lists the builtin ``ConnectionError``, which
  ``requests.exceptions.ConnectionError`` (what a reset becomes) does not derive from.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web
from eth_account import Account
from web3 import HTTPProvider, Web3

from tests.broadcaster.api.test_api import DEV, GWEI, INTENT, TOKEN, make_api
from tests.broadcaster.api.test_api_http import http_served

DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # anvil #0


@contextlib.asynccontextmanager
async def losing_proxy(
    upstream: str, method: str, seen: list[str], loss: str
) -> AsyncIterator[str]:
    """Forward every POST; the first one calling ``method`` reaches the service, but its
    answer is lost: the connection reset (``loss="reset"``) or the answer held past the
    client's timeout (``"timeout"``)."""
    lost = False

    async def forward(request: web.Request) -> web.StreamResponse:
        nonlocal lost
        body = await request.read()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://{upstream}/{TOKEN}",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as reply,
        ):
            answer = await reply.read()
        calls = f'"{method}"'.encode() in body
        if calls:
            seen.append("lost" if not lost else "answered")
        if calls and not lost:
            lost = True
            if loss == "timeout":
                await asyncio.sleep(CLIENT_TIMEOUT * 4)  # the client gave up long before
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError("the answer is lost")
        return web.Response(body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


CLIENT_TIMEOUT = 2.0  # web3.py's request timeout: a lost answer, not a slow one, outlasts it
LOST = {"reset": requests.exceptions.ConnectionError, "timeout": requests.exceptions.Timeout}


def _w3(url: str) -> Web3:
    return Web3(HTTPProvider(url, request_kwargs={"timeout": CLIENT_TIMEOUT, "proxies": {}}))


async def latest_block(method: str, *params: Any) -> Any:
    """What web3.py's fee middleware asks before sending (the stub API has no node)."""
    assert method == "eth_getBlockByNumber", method
    return {"number": "0x7", "baseFeePerGas": hex(GWEI)}


@pytest.mark.parametrize("loss", LOST)
async def test_a_lost_send_transaction_answer_is_an_error_to_web3_though_the_intent_is_booked(
    loss: str,
) -> None:
    api = make_api(passthrough=latest_block)
    seen: list[str] = []
    tx: dict[str, Any] = {
        "from": DEV, "to": INTENT["to"], "value": 1, "gas": 21_000,
        "maxFeePerGas": 3 * GWEI, "maxPriorityFeePerGas": GWEI, "chainId": 31337,
    }  # fmt: skip
    async with (
        http_served(api) as where,
        losing_proxy(where, "eth_sendTransaction", seen, loss) as url,
    ):
        with pytest.raises(LOST[loss]):
            await asyncio.to_thread(_w3(url).eth.send_transaction, tx)  # type: ignore[arg-type]
    assert seen == ["lost"]  # web3.py did not send it again
    assert len(api.manager.submitted) == 1  # type: ignore[attr-defined]  # but it was booked


@pytest.mark.parametrize("loss", LOST)
async def test_a_lost_send_raw_transaction_answer_is_retried_by_web3_only_after_a_timeout(
    loss: str,
) -> None:
    api = make_api()
    seen: list[str] = []
    signed = Account.sign_transaction(
        {"type": 2, "chainId": 31337, "nonce": 0, "to": INTENT["to"], "value": 1, "gas": 21_000,
         "maxFeePerGas": 3 * GWEI, "maxPriorityFeePerGas": GWEI},
        DEV_KEY,
    )  # fmt: skip
    async with (
        http_served(api) as where,
        losing_proxy(where, "eth_sendRawTransaction", seen, loss) as url,
    ):
        send = _w3(url).eth.send_raw_transaction
        if loss == "reset":
            with pytest.raises(requests.exceptions.ConnectionError):
                await asyncio.to_thread(send, signed.raw_transaction)
            assert seen == ["lost"]  # not retried: resending is the bot's (same bytes: safe)
            got = await asyncio.to_thread(send, signed.raw_transaction)
        else:
            got = await asyncio.to_thread(send, signed.raw_transaction)
        assert seen == ["lost", "answered"]  # web3.py's own retry, or the bot's resend
    assert got == signed.hash  # "already known": the same hash
    assert len(api.manager.submitted) == 1  # type: ignore[attr-defined]  # booked once

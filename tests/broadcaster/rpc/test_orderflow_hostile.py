"""A hostile or broken builder behind ``auth = "flashbots"`` (DESIGN.md 5a): huge, malformed,
refused (403) and never-answered replies are each counted ``failed`` and never wedge the
endpoint -- the next signed request still goes out and is answered, and nothing stays pending."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from broadcaster.rpc.orderflow import OrderflowSender
from signer_client.flashbots import HEADER, auth_signing_hash, body_hash, header_value
from signer_client.signing import LocalKey
from tests.enclave.running import AUTH_KEY

KEY = LocalKey(AUTH_KEY)
MODES = ("huge", "malformed", "forbidden", "silent", "ok")


async def sign(body: bytes) -> str:
    return header_value(KEY.address_bytes, KEY.sign_hash(auth_signing_hash(body_hash(body))))


class Hostile:
    def __init__(self) -> None:
        self.modes = list(MODES)
        self.headers: list[str | None] = []
        self.release = asyncio.Event()
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.headers.append(request.headers.get(HEADER))
        mode = self.modes.pop(0) if self.modes else "ok"
        rid = orjson.loads(body)["id"]
        if mode == "huge":
            return web.Response(
                body=b'{"jsonrpc":"2.0","id":%d,"result":"' % rid + b"a" * (3 << 20)
            )
        if mode == "malformed":
            return web.Response(body=b"<html>not json", content_type="text/html")
        if mode == "forbidden":
            error = {"code": -32600, "message": "error in signature check"}
            return web.json_response({"jsonrpc": "2.0", "id": rid, "error": error}, status=403)
        if mode == "silent":
            await self.release.wait()  # never answers while the test runs
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": {"bundleHash": "0x00"}})


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    server = Hostile()
    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/", server.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


async def test_hostile_replies_fail_each_request_and_never_wedge_the_endpoint(
    hostile: Hostile,
) -> None:
    results: list[str] = []
    arrived = asyncio.Condition()

    async def note(result: str) -> None:
        async with arrived:
            results.append(result)
            arrived.notify_all()

    def on_result(rpc: str, method: str, result: str) -> None:
        asyncio.get_running_loop().create_task(note(result))

    url = f"http://127.0.0.1:{hostile.port}/"
    sender = OrderflowSender(
        [("bld", url, "builder", "flashbots")], on_result=on_result, sign_auth=sign, timeout=0.5
    )
    await sender.connect()
    worker = asyncio.create_task(sender.run())
    try:
        for count, _ in enumerate(MODES, start=1):  # one at a time: each mode is one request
            sender.to_builders("eth_sendBundle", {"txs": ["0x02"], "blockNumber": hex(count)})
            async with asyncio.timeout(30), arrived:
                await arrived.wait_for(lambda n=count: len(results) >= n)  # type: ignore[misc]
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        endpoint = sender.endpoints[0]
        pending = dict(endpoint.pending)
        await sender.aclose()
    assert results == ["failed", "failed", "failed", "failed", "accepted"]
    assert pending == {}
    assert len(hostile.headers) == len(MODES) and all(h is not None for h in hostile.headers)

"""A demo block builder on 127.0.0.1 (``broadcaster demo``; DESIGN.md section 5a, 9).

Block builders cannot run here. This one speaks the Flashbots bundle API (``eth_sendBundle``,
``eth_cancelBundle``) in front of an anvil that mines by itself (``--block-time 1``): a bundle is
"built" by handing its txs to anvil (``eth_sendRawTransaction``), which mines them into its next
block, so the demo can show a private intent reaching a builder, being re-targeted, dropped by a
reorg and replaced. (A real builder keeps a bundle out of every mempool; anvil's is the block
producer's own here.) It verifies ``X-Flashbots-Signature`` when a request carries one and
refuses a bad one with HTTP 403, as the relay does, and records every request for the narration.
The tests' builder double (``tests/builder_double.py``) is the strict one: it builds the next
block of an ``anvil --no-mining`` itself, from the bundles it holds for that block.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from broadcaster.dev.local_http import serve_post
from signer_client.errors import ReplyVerificationError
from signer_client.flashbots import HEADER, recover_header
from signer_client.signing import to_checksum_address

__all__ = ["BundleSeen", "DemoBuilder"]


@dataclass(frozen=True)
class BundleSeen:
    """One request the builder took: ``method``, its params object, the verified signer."""

    method: str
    params: dict[str, Any]
    signer: str | None
    at: float


@dataclass
class DemoBuilder:
    upstream: str  # the anvil's HTTP URL
    seen: list[BundleSeen] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    on_request: Callable[[BundleSeen], None] | None = None
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def __aenter__(self) -> DemoBuilder:
        self._session = aiohttp.ClientSession(headers={"content-type": "application/json"})
        self._runner, self.port = await serve_post(self._handle)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def bundles(self, uuid: str | None = None) -> list[BundleSeen]:
        return [
            s
            for s in self.seen
            if s.method == "eth_sendBundle"
            and (uuid is None or s.params.get("replacementUuid") == uuid)
        ]

    async def _forward(self, raw: str) -> None:
        assert self._session is not None
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw]}
        # "already known" / "nonce too low" for a re-target of a tx anvil already holds or
        # mined: the same outcome a builder's duplicate bundle has. Not an error here.
        async with self._session.post(self.upstream, data=orjson.dumps(body)) as response:
            await response.read()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            call = orjson.loads(body)
            method = str(call.get("method"))
            params = call.get("params") or [{}]
            arg = params[0] if isinstance(params, list) and params else {}
        except (orjson.JSONDecodeError, AttributeError):
            return self._error(None, -32700, "parse error", status=400)
        signer = None
        header = request.headers.get(HEADER)
        if header is not None:
            try:
                signer = to_checksum_address(recover_header(header, body))
            except ReplyVerificationError as exc:
                self.refused.append(str(exc))
                return self._error(call.get("id"), -32600, f"signature check: {exc}", status=403)
        seen = BundleSeen(method, arg if isinstance(arg, dict) else {}, signer, time.time())
        self.seen.append(seen)
        if self.on_request is not None:
            self.on_request(seen)
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": call.get("id")}
        if method == "eth_sendBundle":
            for raw in seen.params.get("txs", []):
                await self._forward(str(raw))
            answer["result"] = {"bundleHash": "0x" + "00" * 32}
        elif method == "eth_cancelBundle":
            answer["result"] = None
        elif method == "eth_chainId":  # a bundle-only relay refuses it; the service keeps it
            return self._error(call.get("id"), -32601, "method eth_chainId not supported")
        else:
            return self._error(call.get("id"), -32601, f"method {method:.40} not supported")
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    @staticmethod
    def _error(rid: Any, code: int, message: str, status: int = 200) -> web.Response:
        answer = {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
        return web.Response(
            status=status, body=orjson.dumps(answer), content_type="application/json"
        )


async def wait_for_bundle(
    builder: DemoBuilder, predicate: Callable[[BundleSeen], bool], limit: float = 30.0
) -> BundleSeen:
    """The first (and later) bundle ``predicate`` accepts, polled (a demo, not a test)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for seen in builder.bundles():
            if predicate(seen):
                return seen
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no such bundle at the builder within {limit:.0f} s")

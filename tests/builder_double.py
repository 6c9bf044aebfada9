"""A block-builder double (DESIGN.md section 9): the Flashbots bundle API on 127.0.0.1, building
the next block of a real anvil started without auto-mining (``anvil --no-mining``).

It holds bundles by ``replacementUuid`` (a new bundle under a held uuid replaces it, as real
builders do), cancels them on ``eth_cancelBundle``, and answers ``eth_sendPrivateTransaction`` /
``eth_cancelPrivateTransaction`` (so one double can play a private RPC too). It records every
request with its arrival time (``time.perf_counter_ns``) and answers no chain read at all: a
read reaching it is recorded as ``unexpected`` and answered with -32601, the way builders do.

:meth:`BuilderDouble.build` builds the next block: the txs of every held bundle whose
``blockNumber`` is that block go to anvil (``eth_sendRawTransaction``, in bundle order), then
``evm_mine``; bundles for that block or earlier are then forgotten (a bundle targets one block).

``X-Flashbots-Signature`` (DESIGN.md 5a): a request carrying the header is checked the way
Flashbots' relay does (the address recovered from the EIP-191 signature of the hex keccak256 of the
body must be the one the header names) and refused with HTTP 403 and a JSON-RPC error when it is
not; with ``require_auth`` a bundle-API request (:data:`SIGNED_METHODS`) without the header is
refused too (the service's start-up ``eth_chainId`` screen goes unsigned, as it may).
``Received.signer`` is the verified address.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import sha3
from aiohttp import web

from broadcaster.dev.local_http import serve_post
from signer_client.errors import ReplyVerificationError
from signer_client.flashbots import HEADER, recover_header
from signer_client.signing import to_checksum_address

__all__ = ["SIGNED_METHODS", "BuilderDouble", "Received"]

SIGNED_METHODS = frozenset(
    {
        "eth_sendBundle",
        "eth_cancelBundle",
        "eth_sendPrivateTransaction",
        "eth_cancelPrivateTransaction",
    }
)


@dataclass(frozen=True)
class Received:
    method: str
    params: Any
    at_ns: int
    signer: str | None = None  # the verified X-Flashbots-Signature address (EIP-55)


@dataclass
class Bundle:
    txs: list[str]
    block_number: int
    uuid: str | None


@dataclass
class BuilderDouble:
    upstream: str  # the anvil's HTTP URL
    received: list[Received] = field(default_factory=list)
    bundles: dict[str, Bundle] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    chain_id: int | None = None  # None: eth_chainId refused, as a bundle-only relay does
    probed: int = 0  # eth_chainId asked (the service's start-up screen, not a chain read)
    require_auth: bool = False  # refuse requests without a valid X-Flashbots-Signature
    refused: list[str] = field(default_factory=list)  # why each refused request was refused
    port: int = 0
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    _anon: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def __aenter__(self) -> BuilderDouble:
        self._session = aiohttp.ClientSession(headers={"content-type": "application/json"})
        self._runner, self.port = await serve_post(self._handle)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    # -- what the tests look at ------------------------------------------------------------------

    def sends(self) -> list[Received]:
        return [r for r in self.received if r.method == "eth_sendBundle"]

    async def wait_for(self, predicate: Any, what: str, limit: float = 20.0) -> None:
        """Until ``predicate()`` holds for what was received (a deadline, not a timing test)."""
        async with self.arrived:
            try:
                await asyncio.wait_for(self.arrived.wait_for(predicate), limit)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}") from None

    async def build(self) -> str:
        """Build the next block from the held bundles for it; returns the new block's hash."""
        number = int(await self._upstream("eth_blockNumber"), 16) + 1
        for bundle in list(self.bundles.values()):
            if bundle.block_number == number:
                for raw in bundle.txs:
                    await self._upstream("eth_sendRawTransaction", raw)
        await self._upstream("evm_mine")
        for key, bundle in list(self.bundles.items()):
            if bundle.block_number <= number:
                del self.bundles[key]
        block = await self._upstream("eth_getBlockByNumber", hex(number), False)
        return str(block["hash"])

    # -- the server ------------------------------------------------------------------------------

    async def _upstream(self, method: str, *params: Any) -> Any:
        assert self._session is not None
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        async with self._session.post(self.upstream, data=orjson.dumps(body)) as response:
            reply = orjson.loads(await response.read())
        if "error" in reply:
            raise RuntimeError(f"anvil: {method}: {reply['error']}")
        return reply["result"]

    def _check_auth(
        self, request: web.Request, body: bytes, method: object
    ) -> tuple[str | None, str | None]:
        """``(verified signer, None)`` or ``(None, why refused)``."""
        header = request.headers.get(HEADER)
        if header is None:
            required = self.require_auth and method in SIGNED_METHODS
            return None, (f"{method}: no X-Flashbots-Signature" if required else None)
        try:
            return to_checksum_address(recover_header(header, body)), None
        except ReplyVerificationError as exc:
            return None, str(exc)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.perf_counter_ns()
        call = orjson.loads(body)
        signer, why = self._check_auth(request, body, call.get("method"))
        if why is not None:
            async with self.arrived:
                self.refused.append(why)
                self.arrived.notify_all()
            error = {"code": -32600, "message": f"error in signature check: {why}"}
            answer = {"jsonrpc": "2.0", "id": None, "error": error}
            return web.Response(
                status=403, body=orjson.dumps(answer), content_type="application/json"
            )
        method, params, rid = call.get("method"), call.get("params") or [{}], call.get("id")
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        arg = params[0] if params else {}
        if method == "eth_sendBundle":
            uuid = arg.get("replacementUuid")
            key = uuid or f"anon-{self._anon}"
            self._anon += 1
            self.bundles[key] = Bundle(list(arg["txs"]), int(arg["blockNumber"], 16), uuid)
            digest = sha3.keccak_256(orjson.dumps(arg["txs"])).hexdigest()
            answer["result"] = {"bundleHash": "0x" + digest}
        elif method == "eth_cancelBundle":
            self.bundles.pop(arg.get("replacementUuid"), None)
            self.cancelled.append(arg.get("replacementUuid"))
            answer["result"] = None
        elif method in ("eth_sendPrivateTransaction", "eth_cancelPrivateTransaction"):
            answer["result"] = True
        elif method == "eth_chainId":  # the start-up screen; a bundle-only relay refuses it
            self.probed += 1
            if self.chain_id is None:
                answer["error"] = {"code": -32601, "message": "method eth_chainId not supported"}
            else:
                answer["result"] = hex(self.chain_id)
        else:
            self.unexpected.append(str(method))
            answer["error"] = {"code": -32601, "message": f"method {method} not supported"}
        async with self.arrived:
            self.received.append(Received(str(method), arg, at, signer))
            self.arrived.notify_all()
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

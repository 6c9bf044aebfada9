"""The API over real HTTP and websocket on one port: auth by header or URL path, batches,
status codes, per-token connection caps, and the HTTP path fuzzed as ``handle_message`` is.

The server is the real :class:`~broadcaster.api.transport.ApiServer` on 127.0.0.1 over the stub
manager of ``test_api.py``; clients are aiohttp, the ``websockets`` library and raw sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from broadcaster.api.server import ApiLimits, IntentApi
from tests.broadcaster.api.test_api import (
    CHAIN_ID,
    DEV,
    INTENT,
    OTHER_KEY,
    RECIPIENT,
    TOKEN,
    assert_well_formed,
    fuzz_node,
    make_api,
    messages,
    request,
)


@contextlib.asynccontextmanager
async def http_served(api: IntentApi) -> AsyncIterator[str]:
    server = await api.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def post(
    session: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with session.post(url, data=data, headers=headers or {}) as response:
        raw = await response.read()
        return response.status, (orjson.loads(raw) if raw and response.status != 401 else raw)


async def test_http_post_answers_json_rpc_with_a_bearer_header_or_the_token_as_the_path() -> None:
    async with http_served(make_api()) as where, aiohttp.ClientSession() as session:
        status, reply = await post(
            session,
            f"http://{where}/",
            request("eth_chainId"),
            {"Authorization": f"Bearer {TOKEN}"},
        )
        assert (status, reply["result"]) == (200, hex(CHAIN_ID))
        status, reply = await post(session, f"http://{where}/{TOKEN}", request("eth_chainId"))
        assert (status, reply["result"]) == (200, hex(CHAIN_ID))
        # A batch, as ethers' JsonRpcProvider sends them.
        status, replies = await post(
            session,
            f"http://{where}/{TOKEN}",
            [request("eth_chainId", id=1), request("eth_blockNumber", id=2)],
        )
        assert status == 200 and [r["result"] for r in replies] == [hex(CHAIN_ID), "0x7"]
        # Notifications only: no JSON-RPC answer, so no body.
        async with session.post(
            f"http://{where}/{TOKEN}",
            data=orjson.dumps({"jsonrpc": "2.0", "method": "eth_chainId"}),
        ) as response:
            assert response.status == 204 and await response.read() == b""


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/", {}),
        ("/wrong-token", {}),
        ("/", {"Authorization": "Bearer wrong"}),
        (f"/{TOKEN}", {"Authorization": "Bearer wrong"}),  # the header wins over the path
        ("/", {"Authorization": f"Basic {TOKEN}"}),
    ],
    ids=["none", "wrong-path", "wrong-header", "header-wins", "basic"],
)
async def test_http_without_a_valid_token_is_401(path: str, headers: dict[str, str]) -> None:
    seen: list[str] = []
    async with (
        http_served(make_api(on_intent=seen.append)) as where,
        aiohttp.ClientSession() as session,
        session.post(f"http://{where}{path}", data=b"{}", headers=headers) as response,
    ):
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="broadcaster"'
    assert seen == ["unauthorized"]


async def test_other_methods_paths_and_oversized_bodies_get_their_http_status() -> None:
    api = make_api(limits=ApiLimits(max_message_bytes=1000))
    async with http_served(api) as where, aiohttp.ClientSession() as session:
        base = f"http://{where}/{TOKEN}"
        async with session.get(base) as response:
            assert response.status == 405 and response.headers["Allow"] == "GET, POST"
        async with session.put(base, data=b"{}") as response:
            assert response.status == 405
        async with session.post(f"http://{where}/{TOKEN}/deeper", data=b"{}") as response:
            assert response.status == 404
        status, reply = await post(session, base, b"[" + b" " * 2000 + b"]")  # 1x..4x: JSON-RPC
        assert status == 200 and reply["error"]["code"] == -32600
        status, reply = await post(session, base, b" " * 4001)  # beyond 4x: 413
        assert status == 413 and reply["error"]["code"] == -32600
        status, reply = await post(session, base, b"{not json")
        assert status == 200 and reply["error"]["code"] == -32700


async def test_subscriptions_over_http_are_refused_as_websocket_only() -> None:
    async with http_served(make_api()) as where, aiohttp.ClientSession() as session:
        for method, params in (("broadcaster_subscribe", []), ("eth_subscribe", ["newHeads"])):
            _, reply = await post(session, f"http://{where}/{TOKEN}", request(method, *params))
            assert reply["error"]["code"] == -32601
            assert "needs a websocket" in reply["error"]["message"]


async def test_the_websocket_takes_the_token_as_its_path_and_serves_new_heads() -> None:
    api = make_api()
    async with (
        http_served(api) as where,
        connect(f"ws://{where}/{TOKEN}", proxy=None, compression=None) as ws,
    ):
        await ws.send(orjson.dumps(request("eth_subscribe", "newHeads")))
        sub_id = orjson.loads(await ws.recv())["result"]
        await ws.send(orjson.dumps(request("eth_subscribe", "logs", id=2)))
        assert orjson.loads(await ws.recv())["error"]["code"] == -32602
        header = {"number": "0x8", "hash": "0x" + "ab" * 32, "parentHash": "0x" + "cd" * 32}
        api.subscriptions.new_head(header)
        note = orjson.loads(await ws.recv())
        assert note == {
            "jsonrpc": "2.0",
            "method": "eth_subscription",
            "params": {"subscription": sub_id, "result": header},
        }
        await ws.send(orjson.dumps(request("eth_unsubscribe", sub_id, id=3)))
        assert orjson.loads(await ws.recv())["result"] is True
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://{where}/not-a-token", proxy=None):
                pass
        assert refused.value.response.status_code == 401


async def test_connections_per_token_are_capped_on_both_transports() -> None:
    seen: list[str] = []
    api = make_api(limits=ApiLimits(max_connections_per_token=2), on_intent=seen.append)
    async with http_served(api) as where, aiohttp.ClientSession() as session:
        url = f"ws://{where}/{TOKEN}"
        async with connect(url, proxy=None) as first, connect(url, proxy=None):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, proxy=None):
                    pass
            assert refused.value.response.status_code == 429
            assert b"too many connections for this token (at most 2" in refused.value.response.body
            status, reply = await post(session, f"http://{where}/{TOKEN}", request("eth_chainId"))
            assert (status, reply["error"]["code"]) == (429, -32005)
            # Another token has its own allowance.
            async with connect(f"ws://{where}/second-token", proxy=None) as other:
                await other.send(orjson.dumps(request("eth_chainId")))
                assert orjson.loads(await other.recv())["result"] == hex(CHAIN_ID)
            await first.send(orjson.dumps(request("eth_chainId")))
            assert orjson.loads(await first.recv())["result"] == hex(CHAIN_ID)
        # Both closed: the token may connect again (the count follows closes).
        for _ in range(100):
            if api_open(api, where) == 0:
                break
            await asyncio.sleep(0.01)
        async with connect(url, proxy=None), connect(url, proxy=None):
            pass
    assert seen.count("rate_limited") == 2


def api_open(api: IntentApi, where: str) -> int:
    del where
    servers = [s for s in _SERVERS if s.api is api]
    return servers[0].open_count(TOKEN) if servers else 0


_SERVERS: list[Any] = []


@pytest.fixture(autouse=True)
def _track_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from broadcaster.api import transport

    real = transport.ApiServer.start

    async def start(self: Any, host: str, port: int) -> Any:
        _SERVERS.append(self)
        return await real(self, host, port)

    monkeypatch.setattr(transport.ApiServer, "start", start)
    yield
    _SERVERS.clear()


# -- fuzzing the HTTP path -----------------------------------------------------------------------


class ThreadServer:
    """The API served from its own event loop in a thread, for the synchronous fuzz test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.api = make_api(passthrough=fuzz_node, limits=ApiLimits(max_message_bytes=4096))
            self.server = await self.api.serve("127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()
            self.stop = asyncio.Event()
            await self.stop.wait()
            self.server.close()
            await self.server.wait_closed()

        self.loop.run_until_complete(main())
        self.loop.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


@pytest.fixture(scope="module")
def thread_server() -> Iterator[ThreadServer]:
    server = ThreadServer()
    yield server
    server.close()


def exchange(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)  # "Connection: close": the server closes once it has answered
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def http_request(method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
AUTH = st.sampled_from(
    [[("Authorization", f"Bearer {TOKEN}")], [], [("Authorization", "Bearer nope")]]
) | st.builds(lambda v: [("Authorization", v)], HEADER_TEXT)
PATHS = st.sampled_from(["/", f"/{TOKEN}", "/nope", f"/{TOKEN}/x", "//", "/?a=1"]) | st.builds(
    lambda t: "/" + t.replace(" ", "%20"), HEADER_TEXT
)
BODIES = messages.map(lambda m: m if isinstance(m, bytes) else m.encode("utf-8", "surrogatepass"))
BODIES = BODIES | st.binary(max_size=20_000)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "OPTIONS", "HEAD"]),
    path=PATHS,
    auth=AUTH,
    content_type=st.sampled_from(["application/json", "text/plain", ""]),
    body=BODIES,
)
def test_any_http_request_gets_a_well_formed_answer_and_the_server_stays_up(
    thread_server: ThreadServer,
    method: str,
    path: str,
    auth: list[tuple[str, str]],
    content_type: str,
    body: bytes,
) -> None:
    headers = [*auth, *([("Content-Type", content_type)] if content_type else [])]
    reply = exchange(thread_server.port, http_request(method, path, headers, body))
    head, _, payload = reply.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), reply[:200]
    status = int(status_line.split()[1])
    assert status in (200, 204, 400, 401, 404, 405, 413, 429), reply[:300]
    assert status != 500
    if status == 200 and method == "POST":
        answer = orjson.loads(payload)
        for item in answer if isinstance(answer, list) else [answer]:
            assert_well_formed(item)
    # Whatever came before, a good request is still answered.
    good = http_request("POST", f"/{TOKEN}", [], orjson.dumps(request("eth_chainId")))
    after = exchange(thread_server.port, good)
    assert after.startswith(b"HTTP/1.1 200") and b'"result":"0x7a69"' in after


def test_intents_sent_by_the_fuzz_are_never_accepted_from_bad_params(
    thread_server: ThreadServer,
) -> None:
    """Counterpart of the websocket fuzz's check: only well-formed intents were booked."""
    for intent in thread_server.api.manager.submitted:  # type: ignore[attr-defined]
        assert intent.gas >= 21_000 and intent.chain_id == CHAIN_ID
    good = http_request(
        "POST", f"/{TOKEN}", [], orjson.dumps(request("broadcaster_sendIntent", INTENT))
    )
    assert b'"result"' in exchange(thread_server.port, good)


DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # anvil #0 = DEV


def _set_code(authority_key: str) -> str:
    """A type-4 transaction signed by someone else (OTHER_KEY) carrying one authorization by
    ``authority_key``."""
    auth = Account.sign_authorization(
        {"chainId": CHAIN_ID, "address": RECIPIENT, "nonce": 0}, authority_key
    )
    tx = Account.sign_transaction(
        {"type": 4, "chainId": CHAIN_ID, "nonce": 0, "to": RECIPIENT, "value": 0,
         "gas": 100_000, "maxFeePerGas": 3 * 10**9, "maxPriorityFeePerGas": 10**9,
         "data": b"", "authorizationList": [auth]},
        OTHER_KEY,
    )  # fmt: skip
    return "0x" + tx.raw_transaction.hex()


async def test_http_raw_type4_with_an_authorization_by_one_of_our_accounts_is_refused() -> None:
    """``eth_sendRawTransaction`` of a set-code transaction whose authorization our account
    signed (a bot holding the key elsewhere, or a stolen signature) is refused with rule
    ``ours``, as a bundle's raw member is: the chain would move a nonce we allocate and
    delegate our account's code outside the enclave's ``allowed_delegates``. Another
    authority's authorization in the same shape is taken."""
    api = make_api()
    async with http_served(api) as where, aiohttp.ClientSession() as session:
        url = f"http://{where}/{TOKEN}"
        status, reply = await post(
            session, url, request("eth_sendRawTransaction", _set_code(DEV_KEY))
        )
        assert status == 200 and reply["error"]["code"] == -32602, reply
        message = reply["error"]["message"]
        assert message.startswith(
            "invalid params: params[0]: raw transaction refused (ours): authorizationList[0] "
            f"is an EIP-7702 authorization by {DEV.lower()}"
        ), message
        assert api.manager.submitted == []  # type: ignore[attr-defined]
        third = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"  # anvil #3
        status, reply = await post(
            session, url, request("eth_sendRawTransaction", _set_code(third))
        )
        assert status == 200 and "result" in reply, reply
    assert len(api.manager.submitted) == 1  # type: ignore[attr-defined]

"""An adversarial pass over the tenant boundary and the idempotency rules (issue #13, attack
list): each test is an attack a hostile tenant can mount with nothing but its own token, over
the stub manager of ``test_api.py`` (the real stack: ``tests/e2e/test_api_tenants.py``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from broadcaster.api.server import ApiLimits
from nonce import AttemptReason
from tests.broadcaster.api.test_api import GWEI, INTENT, TOKEN, call, error_of, make_api, request
from tests.broadcaster.api.test_api_access import OTHER, as_, attempt, record_with, tenant_api
from tests.broadcaster.api.test_api_http import http_served

B_TX: dict[str, Any] = {**INTENT, "from": OTHER}


async def test_eth_send_transaction_keys_are_per_tenant_too() -> None:
    """``key`` is read by ``eth_sendTransaction`` as by ``sendIntent``: it must land in the
    caller's namespace there too, or a tenant names another's key (scoped or a full-access one)
    and is handed that intent in the conflict error's data."""
    api = tenant_api()
    a, b, full = as_(api, "tok-a"), as_(api, "tok-b"), as_(api, "full")
    mine = (await call(api, request("broadcaster_sendIntent", {**INTENT, "key": "k"}), a))["result"]
    operator = (await call(api, request("broadcaster_sendIntent", {**INTENT, "key": "ops"}), full))[
        "result"
    ]
    for stolen in ("tenant:bot-a:k", "ops"):
        reply = await call(api, request("eth_sendTransaction", {**B_TX, "key": stolen}), b)
        text = str(reply)
        assert mine["id"] not in text and operator["id"] not in text, reply
        # B's own new intent (not yet signed by the stub manager), from B's account
        assert reply["error"]["data"]["from"] == OTHER, reply
    assert len(api.manager.submitted) == 4  # type: ignore[attr-defined]


async def test_eth_send_transaction_retried_with_another_fee_under_its_key_is_a_conflict() -> None:
    """A repeated key with different fields is an error on every send method, the fee fields
    included when the request gives them (eth_sendTransaction's retry passed no params to the
    comparison, so a different ``maxFeePerGas`` silently got the earlier record)."""
    api = tenant_api()
    b = as_(api, "tok-b")
    first = await call(api, request("eth_sendTransaction", {**B_TX, "key": "k"}), b)
    first_id = first["error"]["data"]["id"]
    again = await call(
        api,
        request("eth_sendTransaction", {**B_TX, "key": "k", "maxFeePerGas": hex(4 * GWEI)}),
        b,
    )
    assert error_of(again) == (
        -32602,
        f"invalid params: key: already used for intent {first_id} with a different "
        "maxFeePerGas: a key names one request; use a new key for a new one",
    )
    assert len(api.manager.submitted) == 1  # type: ignore[attr-defined]


async def test_an_eth_send_transaction_without_gas_retried_is_the_same_request() -> None:
    """A bot that lost the answer resends the same ``eth_sendTransaction`` under its key; the
    node's estimate for it may have moved (state changed) meanwhile. The gas we filled in is
    not part of the request: the retry gets the earlier intent, not a "different gas" error."""
    estimates = iter(("0x5208", "0x5209"))

    async def node(method: str, *params: Any) -> Any:
        assert method == "eth_estimateGas"
        return next(estimates)

    api = tenant_api(passthrough=node)
    b = as_(api, "tok-b")
    loose = {k: v for k, v in B_TX.items() if k != "gas"}
    first = await call(api, request("eth_sendTransaction", {**loose, "key": "k"}), b)
    again = await call(api, request("eth_sendTransaction", {**loose, "key": "k"}), b)
    # the stub manager never signs: both answers say "accepted, not signed yet", same intent
    assert again["error"]["data"]["id"] == first["error"]["data"]["id"], again
    assert error_of(again) == error_of(first)
    assert "accepted but not signed yet" in error_of(again)[1]
    assert len(api.manager.submitted) == 1  # type: ignore[attr-defined]
    # a gas the bot does give is compared as before
    other_gas = {**B_TX, "key": "k", "gas": "0x6000"}
    given = await call(api, request("eth_sendTransaction", other_gas), b)
    assert "with a different gas" in error_of(given)[1]


async def test_a_key_held_by_a_record_the_caller_does_not_own_is_refused_unnamed() -> None:
    """Defence in depth: a record under the caller's scoped key that another tenant owns (an
    account moved between tenants across a restart) is never handed over in a conflict."""
    from nonce import Intent

    api = tenant_api()
    b = as_(api, "tok-b")
    theirs = Intent(
        id="0" * 31 + "1", sender=INTENT["from"].lower(), to=INTENT["to"].lower(), value=1,
        data=b"", gas=21_000, max_fee_per_gas=3 * GWEI, max_priority_fee_per_gas=GWEI,
        chain_id=31337,
        key="tenant:bot-b:k",
    )  # fmt: skip
    api.manager.book.accept(theirs, now=0.0)  # type: ignore[attr-defined]
    reply = await call(api, request("broadcaster_sendIntent", {**B_TX, "key": "k"}), b)
    assert error_of(reply) == (
        -32602,
        "invalid params: key: already used by another request; use a new key",
    )
    assert "data" not in reply["error"] and theirs.id not in str(reply)


@pytest.mark.parametrize(
    "request_line",
    [
        f"POST / {TOKEN} HTTP/1.1".encode(),  # a space in the URL: the token after it
        f"POST /{TOKEN}\x01 HTTP/1.1".encode(),  # a control character in the path
        f"POST /{TOKEN} HTTP/9.9".encode(),  # an unknown HTTP version
    ],
    ids=["space", "control-char", "version"],
)
async def test_malformed_http_is_a_400_counted_and_logged_in_one_line_without_the_url(
    request_line: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone can send garbage to the port (scanners, a TLS client, a broken proxy): aiohttp
    logged each at ERROR with a traceback whose message quotes the request line, URL-path
    token included. Now: a 400, counted as ``invalid``, one log line without the URL."""
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    async with http_served(make_api(on_intent=seen.append)) as where:
        host, port = where.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request_line + b"\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 30)
        writer.close()
    assert reply.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), reply[:200]
    assert seen == ["invalid"]
    for record in caplog.records:
        assert TOKEN not in record.getMessage() and record.exc_info is None, record
        assert record.levelno < logging.ERROR, record
    assert any("malformed HTTP request" in r.getMessage() for r in caplog.records)


async def test_a_batch_mixing_methods_reaches_nothing_of_another_tenant() -> None:
    """One batch of tenant B's naming tenant A's intent every way (its id, its replaced
    attempt's hash, its current one), reading, cancelling, following and sending from A's
    account, with a harmless call in between: every item is answered as for the unknown, the
    node is asked only about the hashes as given (no continuity for B), nothing is booked."""
    asked: list[tuple[str, Any]] = []

    async def node(method: str, *params: Any) -> Any:
        asked.append((method, params[0] if params else None))
        return None

    api = tenant_api(passthrough=node)
    record = record_with(api, attempt(1), attempt(2, AttemptReason.REORG))
    ident, old, new = record.intent.id, "0x" + "01" * 32, "0x" + "02" * 32
    b = as_(api, "tok-b")
    batch = [
        request("broadcaster_getIntent", ident, id=1),
        request("broadcaster_getIntent", old, id=2),
        request("broadcaster_cancelIntent", old, id=3),
        request("broadcaster_cancelIntent", {"id": ident}, id=4),
        request("eth_chainId", id=5),
        request("eth_getTransactionReceipt", old, id=6),
        request("eth_getTransactionByHash", new, id=7),
        request("broadcaster_subscribe", [ident, new], id=8),
        request("broadcaster_sendIntent", INTENT, id=9),
        request("eth_sendTransaction", {**INTENT, "key": "x"}, id=10),
    ]
    replies = {r["id"]: r for r in await call(api, batch, b)}
    for rid, name in ((1, ident), (2, old), (3, old), (4, ident)):
        assert error_of(replies[rid]) == (
            -32602,
            f"invalid params: id: no intent {name!r} is known here",
        )
    assert replies[5]["result"] == "0x7a69"
    assert replies[6]["result"] is None and replies[7]["result"] is None
    assert asked == [("eth_getTransactionReceipt", old), ("eth_getTransactionByHash", new)]
    assert error_of(replies[8]) == (
        -32602,
        f"invalid params: params[0]: no intent {ident!r} is known here",
    )
    for rid in (9, 10):
        assert error_of(replies[rid]) == (
            -32602,
            f"invalid params: from: {INTENT['from'].lower()} is not an account this token may "
            "send from",
        )
    assert [r.intent.id for r in api.manager.book.all_records()] == [ident]  # type: ignore[attr-defined]
    assert record.state.value == "pending" and api.manager.cancelled == []  # type: ignore[attr-defined]


async def test_a_body_that_never_finishes_is_a_408_and_frees_the_tokens_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Slowloris in the body: headers (with a valid token) sent at once, the body promised and
    never finished. The keep-alive timeout does not apply while a request is being read, so the
    connection held its token's slot forever (a flaky client, or a hostile one, could hold them
    all); now the body has ``BODY_SECONDS`` to arrive."""
    from broadcaster.api import transport
    from tests.broadcaster.api.test_api_review import one_exchange

    monkeypatch.setattr(transport, "BODY_SECONDS", 0.3, raising=False)
    api = make_api(limits=ApiLimits(max_connections_per_token=1))
    async with http_served(api) as where:
        host, port = where.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /{TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"jsonrpc"'
        )
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b"100 bytes promised" in reply
        # the slot is free again
        reader, writer = await asyncio.open_connection(host, int(port))
        assert (await one_exchange(reader, writer)).startswith(b"HTTP/1.1 200")
        writer.close()
        await writer.wait_closed()


async def test_a_websocket_peer_that_went_silent_is_closed_and_frees_the_tokens_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bot's machine or network dies without a FIN: its websocket is half-open, and nothing
    told the server (no heartbeat; TCP keepalive is off by default), so it held the token's slot
    for ever -- a few such deaths and the bot was locked out until a restart. Now the server
    pings every ``HEARTBEAT_SECONDS`` and closes a peer that does not answer."""
    import base64
    import os

    from broadcaster.api import transport
    from tests.broadcaster.api.test_api_review import one_exchange

    monkeypatch.setattr(transport, "HEARTBEAT_SECONDS", 0.3, raising=False)
    api = make_api(limits=ApiLimits(max_connections_per_token=1))
    async with http_served(api) as where:
        host, port = where.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /{TOKEN} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        # Silent from here: pings are read (the kernel does) but never answered.
        frames = await asyncio.wait_for(reader.read(), 10)  # to EOF: the server closed it
        assert frames[:1] == b"\x89", frames[:20]  # what it sent first: a ping
        writer.close()
        reader, writer = await asyncio.open_connection(host, int(port))
        assert (await one_exchange(reader, writer)).startswith(b"HTTP/1.1 200")
        writer.close()
        await writer.wait_closed()


def _pct(text: str) -> str:
    return "".join(f"%{b:02X}" for b in text.encode())


ODD_PATHS = {
    "trailing-slash": (f"/{TOKEN}/", 404),
    "double-slash": (f"//{TOKEN}", 404),
    "dot-segment": (f"/./{TOKEN}", 404),
    "encoded-slash": (f"/{TOKEN}%2F", 404),
    "deeper": (f"/{TOKEN}/x", 404),
    "query": (f"/{TOKEN}?token=nope", 200),
    "fragment": (f"/{TOKEN}#x", 200),
    "percent-encoded": (f"/{_pct(TOKEN)}", 200),
    "matrix": (f"/{TOKEN};x", 401),
    "nul-before": (f"/%00{TOKEN}", 401),
    "nul-after": (f"/{TOKEN}%00", 401),
    "case": (f"/{TOKEN.upper()}", 401),
    "absolute-form": (f"http://elsewhere/{TOKEN}", 200),
    "token-in-query-only": (f"/?token={TOKEN}", 401),
}


@pytest.mark.parametrize(("target", "status"), ODD_PATHS.values(), ids=ODD_PATHS.keys())
async def test_odd_url_paths_give_the_token_exactly_as_its_one_path_segment(
    target: str, status: int
) -> None:
    """The URL-path token is the path's one segment after percent-decoding: anything that is
    not exactly ``/TOKEN`` (plus a query or fragment, which are not the path) is a 404 for a
    deeper path or a 401, never another token's or a partial match."""
    seen: list[str] = []
    async with http_served(make_api(on_intent=seen.append)) as where:
        host, port = where.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        body = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}'
        writer.write(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert reply.startswith(f"HTTP/1.1 {status}".encode()), reply[:200]
    if status == 200:
        assert reply.endswith(b'"result":"0x7a69"}')
    assert seen == (["unauthorized"] if status == 401 else [])


async def test_one_tenants_token_in_the_path_and_anothers_in_the_header_is_the_header_s() -> None:
    """The header wins over the path on the websocket as on HTTP: a bot holding two tokens gets
    exactly one tenant's view, the header's, never a union of both."""
    from websockets.asyncio.client import connect

    api = tenant_api()
    async with (
        http_served(api) as where,
        connect(
            f"ws://{where}/tok-a",
            additional_headers={"Authorization": "Bearer tok-b"},
            proxy=None,
        ) as ws,
    ):
        await ws.send('{"jsonrpc":"2.0","id":1,"method":"eth_accounts"}')
        reply = await asyncio.wait_for(ws.recv(), 10)
    assert OTHER in str(reply) and INTENT["from"] not in str(reply)

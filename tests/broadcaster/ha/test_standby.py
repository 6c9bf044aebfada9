"""A standby refuses every JSON-RPC request with an error naming the leader."""

from __future__ import annotations

import orjson

from broadcaster.ha.lease import LeaseRow, decide
from broadcaster.ha.standby import NOT_LEADER, StandbyApi


def test_every_request_is_refused_naming_the_leader() -> None:
    api = StandbyApi(["t"], lambda: "a")
    reply = orjson.loads(
        api.answer(b'{"jsonrpc":"2.0","id":7,"method":"broadcaster_sendIntent","params":[{}]}')
        or b""
    )
    assert reply == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": NOT_LEADER, "message": "standby, leader is a", "data": {"leader": "a"}},
    }


def test_batches_notifications_and_garbage() -> None:
    api = StandbyApi(["t"], lambda: None)
    batch = orjson.loads(
        api.answer(
            b'[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},{"jsonrpc":"2.0","method":"x"}]'
        )
        or b""
    )
    assert [r["id"] for r in batch] == [1]
    assert batch[0]["error"]["message"] == "standby, no leader yet"
    assert api.answer(b'{"jsonrpc":"2.0","method":"x"}') is None
    garbage = orjson.loads(api.answer(b"not json") or b"")
    assert garbage["error"]["code"] == NOT_LEADER and garbage["id"] is None
    # An empty batch is answered (JSON-RPC 2.0: one error, never an empty body), and a
    # batch of non-objects gets one refusal per element.
    empty = orjson.loads(api.answer(b"[]") or b"null")
    assert empty is not None and empty["error"]["code"] == NOT_LEADER
    odd = orjson.loads(api.answer(b'[1, "x"]') or b"null")
    assert [r["id"] for r in odd] == [None, None]


def test_the_lease_decision() -> None:
    assert decide(None, 10.0) == "insert"
    assert decide(LeaseRow("a", 1, expires_at=9.0, renewed_at=7.0), 10.0) == "take"
    assert decide(LeaseRow("a", 1, expires_at=10.0, renewed_at=8.0), 10.0) == "held"


def test_an_expired_row_is_taken_only_once_it_stood_still_a_whole_lease_on_our_clock() -> None:
    """The database's clock says expired; the leader's fence (its own clock) may not have."""
    row = LeaseRow("a", 1, expires_at=9.0, renewed_at=7.0)  # the holder's lease: 2 s
    assert decide(row, 10.0, seen_for=0.5, lease_seconds=2.0) == "held"
    assert decide(row, 10.0, seen_for=2.0, lease_seconds=2.0) == "take"
    # configured shorter than the holder: the holder's lease length rules
    assert decide(row, 10.0, seen_for=1.0, lease_seconds=1.0) == "held"
    # released (expires_at moved before renewed_at by the holder): at once
    released = LeaseRow("a", 1, expires_at=6.0, renewed_at=7.0)
    assert decide(released, 10.0, seen_for=0.0, lease_seconds=2.0) == "take"


async def test_the_standby_server_refuses_over_websocket_and_http_and_checks_the_token() -> None:
    import aiohttp
    import websockets

    server = await StandbyApi(["tok"], lambda: "a").serve("127.0.0.1", 0)
    base = f"127.0.0.1:{server.port}"
    request = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "broadcaster_sendIntent"})
    try:
        async with websockets.connect(
            f"ws://{base}", additional_headers={"Authorization": "Bearer tok"}
        ) as ws:
            await ws.send(request.decode())
            answer = orjson.loads(await ws.recv())
            assert answer["error"]["message"] == "standby, leader is a"
            async with aiohttp.ClientSession() as session:
                async with session.post(f"http://{base}/tok", data=request) as response:
                    assert response.status == 200
                    assert (await response.json())["error"]["data"] == {"leader": "a"}
                async with session.post(f"http://{base}/", data=request) as response:
                    assert response.status == 401
                async with session.post(
                    f"http://{base}/", data=request, headers={"Authorization": "Bearer nope"}
                ) as response:
                    assert response.status == 401
            await server.close()  # with the websocket still open: takeover does not wait for it
    finally:
        await server.close()

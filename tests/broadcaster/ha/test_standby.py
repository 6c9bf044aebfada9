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


def test_the_lease_decision() -> None:
    assert decide(None, 10.0) == "insert"
    assert decide(LeaseRow("a", 1, expires_at=9.0, renewed_at=7.0), 10.0) == "take"
    assert decide(LeaseRow("a", 1, expires_at=10.0, renewed_at=8.0), 10.0) == "held"

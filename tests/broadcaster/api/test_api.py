"""The intent API's JSON-RPC layer over a stub tx manager: errors, limits, auth, fuzzing.

No node and no signer here: a :class:`StubManager` books intents in a real ``NonceBook`` and
signs nothing. What needs the real tx manager (idempotency on chain, cancel, notifications
through an intent's life) is in ``test_api_stack.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import broadcaster.api.envelope as api_module
from broadcaster.api.client import ApiError, BroadcasterClient
from broadcaster.api.server import PASS_THROUGH, ApiLimits, IntentApi, _Client
from broadcaster.api.subscriptions import expand
from broadcaster.rpc.chain_reader import ChainReadError
from nonce import Attempt, AttemptReason, Intent, TxRecord, TxState
from nonce.book import NonceBook
from nonce.errors import NonceError
from signer_client import SignedTx

TOKEN = "test-token"
CHAIN_ID = 31337
GWEI = 10**9
DEV = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OTHER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"  # anvil #2

INTENT: dict[str, Any] = {
    "from": DEV,
    "to": RECIPIENT,
    "value": "0x1",
    "gas": "0x5208",
    "maxFeePerGas": hex(3 * GWEI),
    "maxPriorityFeePerGas": hex(GWEI),
}


class StubManager:
    """Just enough of ``TxManager`` for the API: a real book, no signing, no sending."""

    def __init__(self, base_fee: int | None = 10 * GWEI) -> None:
        self.book = NonceBook()
        self.book.resync(DEV.lower(), chain_latest=0, chain_pending=0, now=0.0)
        self.base_fee = base_fee
        self.submitted: list[Intent] = []
        self.cancelled: list[str] = []

    async def find(
        self, intent_id: str | None = None, *, key: str | None = None
    ) -> TxRecord | None:
        if intent_id is not None:
            return self.book.find_intent(intent_id)
        return self.book.by_key(key) if key is not None else None

    async def admit(self, intent: Intent) -> TxRecord:
        if intent.key is not None and self.book.by_key(intent.key) is None:
            await self.find(key=intent.key)  # as TxManager.admit: the journal may know the key
        record = self.book.accept(intent, now=0.0)  # raises DuplicateIdempotencyKey
        self.submitted.append(intent)
        return record

    async def complete(self, record: TxRecord) -> None:
        await asyncio.sleep(0)  # the real one waits for the journal and the signer

    async def submit_raw(self, intent: Intent, nonce: int, signed: SignedTx) -> TxRecord:
        record = self.book.accept(intent, now=0.0, nonce=nonce)
        self.book.add_attempt(
            record,
            Attempt(
                raw=signed.raw,
                hash=signed.hash,
                nonce=nonce,
                max_fee_per_gas=intent.max_fee_per_gas,
                max_priority_fee_per_gas=intent.max_priority_fee_per_gas,
                signed_at=0.0,
                reason=AttemptReason.EXTERNAL,
            ),
        )
        self.submitted.append(intent)
        return record

    async def cancel(self, record: TxRecord) -> TxRecord:
        if record.state is not TxState.PENDING:
            raise NonceError(f"intent {record.intent.id} is {record.state.value}: cannot cancel")
        self.book.transition(record, TxState.CANCELLED, reason="test", now=0.0)
        self.cancelled.append(record.intent.id)
        return record


def make_api(
    *,
    limits: ApiLimits | None = None,
    passthrough: Callable[..., Any] | None = None,
    on_intent: Callable[[str], None] = lambda status: None,
    base_fee: int | None = 10 * GWEI,
    priority_fee: int = GWEI,
) -> IntentApi:
    return IntentApi(
        StubManager(base_fee),  # type: ignore[arg-type]
        chain_id=CHAIN_ID,
        accounts=[DEV],
        tokens=[TOKEN, "second-token"],
        limits=limits,
        tip_number=lambda: 7,
        passthrough=passthrough,
        on_intent=on_intent,
        priority_fee=priority_fee,
    )


def conn(api: IntentApi, token: str = TOKEN) -> _Client:
    """A connection's state without a socket (``handle_message`` never touches the socket)."""
    return _Client(None, token, api.limits)  # type: ignore[arg-type]


async def call(api: IntentApi, message: Any, client: _Client | None = None) -> Any:
    raw = message if isinstance(message, str | bytes) else orjson.dumps(message)
    reply = await api.handle_message(client or conn(api), raw)
    return None if reply is None else orjson.loads(reply)


def request(method: str, *params: Any, id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": list(params)}


def notes_of(client: _Client) -> list[Any]:
    """The notifications queued for ``client``, one per subscription, in order."""
    return [
        orjson.loads(message)
        for _ in range(client.outbox.qsize())
        for message in expand(client.outbox.get_nowait())
    ]


def error_of(reply: Any) -> tuple[int, str]:
    assert isinstance(reply, dict) and "error" in reply, reply
    return reply["error"]["code"], reply["error"]["message"]


# -- the JSON-RPC envelope -----------------------------------------------------------------------


async def test_a_well_formed_request_is_answered_with_its_id() -> None:
    api = make_api()
    assert await call(api, request("eth_chainId", id="abc")) == {
        "jsonrpc": "2.0",
        "id": "abc",
        "result": hex(CHAIN_ID),
    }
    assert (await call(api, request("eth_blockNumber")))["result"] == "0x7"
    assert (await call(api, request("eth_accounts")))["result"] == [DEV]


async def test_malformed_json_is_a_parse_error() -> None:
    reply = await call(api := make_api(), b'{"jsonrpc": "2.0", "method": ')
    code, message = error_of(reply)
    assert (code, reply["id"]) == (-32700, None)
    assert message.startswith("parse error")
    assert error_of(await call(api, b"\xff\xfe not utf-8"))[0] == -32700


async def test_a_batch_is_answered_item_by_item_in_order() -> None:
    api = make_api()
    replies = await call(
        api,
        [
            request("eth_chainId", id=1),
            request("no_such_method", id=2),
            {"jsonrpc": "2.0", "method": "eth_chainId"},  # a notification: no answer
            42,
            request("eth_blockNumber", id=3),
        ],
    )
    assert [r.get("id") for r in replies] == [1, 2, None, 3]
    assert replies[0]["result"] == hex(CHAIN_ID)
    assert error_of(replies[1])[0] == -32601
    assert error_of(replies[2]) == (-32600, "a request must be a JSON object")
    assert replies[3]["result"] == "0x7"


async def test_a_batch_of_notifications_gets_no_answer_and_a_notification_neither() -> None:
    api = make_api()
    assert await call(api, [{"jsonrpc": "2.0", "method": "eth_chainId"}]) is None
    assert await call(api, {"jsonrpc": "2.0", "method": "eth_chainId"}) is None


async def test_an_empty_batch_is_an_invalid_request() -> None:
    assert error_of(await call(make_api(), [])) == (
        -32600,
        "empty batch: send at least one request",
    )


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ({"id": 1, "method": "eth_chainId"}, '"jsonrpc": "2.0"'),
        ({"jsonrpc": "1.0", "id": 1, "method": "eth_chainId"}, '"jsonrpc": "2.0"'),
        ({"jsonrpc": 2.0, "id": 1, "method": "eth_chainId"}, '"jsonrpc": "2.0"'),
        ({"jsonrpc": "2.0", "id": 1}, "method name"),
        ({"jsonrpc": "2.0", "id": 1, "method": 5}, "method name"),
        ({"jsonrpc": "2.0", "id": [1], "method": "eth_chainId"}, "id must be"),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "eth_chainId"}, "id must be"),
        ("[1, 2]", "a request must be a JSON object"),
        ('"eth_chainId"', "a request must be a JSON object"),
    ],
)
async def test_a_request_that_is_not_json_rpc_2_is_invalid(message: Any, words: str) -> None:
    reply = await call(make_api(), message)
    if isinstance(reply, list):
        reply = reply[0]
    code, text = error_of(reply)
    assert code == -32600
    assert words in text
    assert reply["id"] in (None, 1)  # never echoes an id that is not a valid one


async def test_an_unknown_method_is_named_in_its_error() -> None:
    code, message = error_of(await call(make_api(), request("eth_mine")))
    assert code == -32601
    assert "eth_mine" in message


async def test_pass_through_methods_are_unknown_when_no_node_is_configured() -> None:
    assert error_of(await call(make_api(), request("eth_getBalance", DEV, "latest")))[0] == -32601


async def test_pass_through_hands_the_node_the_params_unchanged() -> None:
    seen: list[tuple[Any, ...]] = []

    async def node(method: str, *params: Any) -> Any:
        seen.append((method, *params))
        return "0x10"

    api = make_api(passthrough=node)
    assert (await call(api, request("eth_getBalance", DEV, "latest")))["result"] == "0x10"
    assert seen == [("eth_getBalance", DEV, "latest")]


async def test_a_node_outage_during_pass_through_is_a_server_error_naming_the_method() -> None:
    async def down(method: str, *params: Any) -> Any:
        raise ChainReadError("no endpoint answered: connection refused")

    code, message = error_of(await call(make_api(passthrough=down), request("eth_gasPrice")))
    assert code == -32000
    assert "eth_gasPrice" in message and "no node answered" in message


# -- intent params -------------------------------------------------------------------------------

LONG_KEY = "k" * 129
BAD_CHECKSUM = RECIPIENT.replace("C51812", "c51812")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"to": "0x1234"}, "to", "20-byte"),
        ({"to": RECIPIENT + "00"}, "to", "20-byte"),
        ({"to": 5}, "to", "address"),
        ({"to": BAD_CHECKSUM}, "to", "checksum"),
        ({"from": "0x" + "11" * 20}, "from", "not an account"),
        ({"from": "me"}, "from", "address"),
        ({"value": -1}, "value", "negative"),
        ({"value": hex(1 << 256)}, "value", "too large"),
        ({"value": "0x" + "f" * 5000}, "value", "too large"),  # (str() of it would raise)
        ({"value": "12"}, "value", "0x-prefixed"),
        ({"value": "0x"}, "value", "0x-prefixed"),
        ({"value": "0xzz"}, "value", "not hex"),
        ({"value": "0x-1"}, "value", "not hex"),
        ({"value": 1.5}, "value", "quantity"),
        ({"value": 1e20}, "value", "0x-hex"),
        ({"value": True}, "value", "quantity"),
        ({"value": [1]}, "value", "quantity"),
        ({"data": "0xabc"}, "data", "hex bytes"),
        ({"data": "hello"}, "data", "hex bytes"),
        ({"data": "0x00", "input": "0x01"}, "data", "differ"),
        ({"gasLimit": "0x5208"}, "gasLimit", "unknown field"),
        ({"gas": None}, "gas", "quantity"),
        ({"gas": "0x0"}, "gas", "21000"),
        ({"gas": 20_999}, "gas", "intrinsic"),
        ({"gas": hex(1 << 64)}, "gas", "too large"),
        ({"maxPriorityFeePerGas": hex(4 * GWEI)}, "maxPriorityFeePerGas", "maxFeePerGas"),
        ({"maxFeePerGas": "lots"}, "maxFeePerGas", "0x-prefixed"),
        ({"chainId": "0x1"}, "chainId", "31337"),
        ({"chainId": "mainnet"}, "chainId", "0x-prefixed"),
        ({"type": 5}, "type", "EIP-1559"),
        ({"type": 3}, "type", "takes blobs"),
        ({"type": 4}, "type", "takes authorizationList"),
        ({"gasPrice": hex(GWEI)}, "gasPrice", "not both"),
        ({"type": 2, "gasPrice": hex(GWEI)}, "gasPrice", "not both"),
        ({"type": 0, "gasPrice": hex(GWEI)}, "gasPrice", "not both"),
        ({"type": 0}, "gasPrice", "required"),
        ({"key": LONG_KEY}, "key", "128"),
        ({"key": ""}, "key", "1 to 128"),
        ({"key": 7}, "key", "string"),
        ({"validUntilBlock": "soon"}, "validUntilBlock", "0x-prefixed"),
        ({"validUntilBlock": -5}, "validUntilBlock", "negative"),
    ],
)
@pytest.mark.parametrize("method", ["broadcaster_sendIntent", "eth_sendTransaction"])
async def test_a_bad_intent_field_is_named_in_a_32602_answer(
    method: str, change: dict[str, Any], field: str, words: str
) -> None:
    api = make_api()
    params = {**INTENT, **change}
    code, message = error_of(await call(api, request(method, params)))
    assert code == -32602
    assert message.startswith(f"invalid params: {field}: "), message
    assert words in message
    assert len(message) < 300  # one readable line, not a dump
    assert api.manager.submitted == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", ["broadcaster_sendIntent", "eth_sendTransaction"])
async def test_missing_gas_is_required_when_there_is_no_node_to_estimate_it(method: str) -> None:
    params = {k: v for k, v in INTENT.items() if k != "gas"}
    assert error_of(await call(make_api(), request(method, params))) == (
        -32602,
        "invalid params: gas: required",
    )


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ([], "params: expected one intent object"),
        ([INTENT, INTENT], "params: expected one intent object"),
        (["0x1234"], "params: expected an intent object"),
    ],
)
async def test_intent_params_that_are_not_one_object_are_refused(
    params: list[Any], words: str
) -> None:
    code, message = error_of(await call(make_api(), request("broadcaster_sendIntent", *params)))
    assert code == -32602
    assert words in message


async def test_max_fee_is_required_until_the_base_fee_is_known() -> None:
    params = {k: v for k, v in INTENT.items() if k != "maxFeePerGas"}
    code, message = error_of(
        await call(make_api(base_fee=None), request("broadcaster_sendIntent", params))
    )
    assert code == -32602
    assert "maxFeePerGas: required (the base fee is not known yet)" in message


async def test_a_good_intent_is_accepted_with_defaults_filled_in() -> None:
    api = make_api()
    params = {"to": RECIPIENT.lower(), "gas": 21_000}
    reply = await call(api, request("broadcaster_sendIntent", params))
    assert reply["result"]["from"] == DEV
    assert reply["result"]["nonce"] == "0x0"
    (intent,) = api.manager.submitted  # type: ignore[attr-defined]
    assert intent.max_priority_fee_per_gas == GWEI
    assert intent.max_fee_per_gas == 2 * 10 * GWEI + GWEI  # twice the base fee plus the tip


async def test_the_default_tip_is_fees_priority_fee_wei() -> None:
    api = make_api(priority_fee=3 * GWEI)
    params = {"to": RECIPIENT.lower(), "gas": 21_000}
    await call(api, request("broadcaster_sendIntent", params))
    (intent,) = api.manager.submitted  # type: ignore[attr-defined]
    assert intent.max_priority_fee_per_gas == 3 * GWEI
    assert intent.max_fee_per_gas == 2 * 10 * GWEI + 3 * GWEI


async def test_rejected_intents_are_counted_as_invalid() -> None:
    seen: list[str] = []
    api = make_api(on_intent=seen.append)
    await call(api, request("broadcaster_sendIntent", {**INTENT, "value": "x"}))
    await call(api, request("broadcaster_sendIntent", INTENT))
    assert seen == ["invalid", "accepted"]


async def test_the_same_idempotency_key_answers_with_the_first_intent() -> None:
    seen: list[str] = []
    api = make_api(on_intent=seen.append)
    first = await call(api, request("broadcaster_sendIntent", {**INTENT, "key": "order-1"}))
    again = await call(api, request("broadcaster_sendIntent", {**INTENT, "key": "order-1"}))
    assert again["result"] == first["result"]
    assert len(api.manager.submitted) == 1  # type: ignore[attr-defined]
    assert seen == ["accepted", "duplicate"]


# -- raw transactions ----------------------------------------------------------------------------


_RAW_TX: dict[str, Any] = {
    "type": 2,
    "chainId": CHAIN_ID,
    "nonce": 0,
    "to": RECIPIENT,
    "value": 5,
    "gas": 21_000,
    "maxFeePerGas": 3 * GWEI,
    "maxPriorityFeePerGas": GWEI,
}


def signed_raw(chain_id: int = CHAIN_ID, nonce: int = 0) -> Any:
    return Account.sign_transaction({**_RAW_TX, "chainId": chain_id, "nonce": nonce}, OTHER_KEY)


async def test_a_raw_transaction_is_tracked_under_its_hash() -> None:
    api = make_api()
    signed = signed_raw(nonce=3)
    reply = await call(api, request("eth_sendRawTransaction", signed.raw_transaction.to_0x_hex()))
    assert reply["result"] == signed.hash.to_0x_hex()
    got = await call(api, request("broadcaster_getIntent", f"raw-{signed.hash.hex()}"))
    assert got["result"]["hash"] == signed.hash.to_0x_hex()
    assert got["result"]["nonce"] == "0x3"
    # The same bytes again: "already known", booked once.
    reply = await call(api, request("eth_sendRawTransaction", signed.raw_transaction.to_0x_hex()))
    assert reply["result"] == signed.hash.to_0x_hex()
    assert len(api.manager.submitted) == 1  # type: ignore[attr-defined]


async def test_an_intent_can_be_looked_up_by_any_of_its_transaction_hashes() -> None:
    api = make_api()
    signed = signed_raw(nonce=4)
    await call(api, request("eth_sendRawTransaction", signed.raw_transaction.to_0x_hex()))
    by_hash = await call(api, request("broadcaster_getIntent", signed.hash.to_0x_hex()))
    assert by_hash["result"]["id"] == f"raw-{signed.hash.hex()}"
    unknown = await call(api, request("broadcaster_getIntent", "0x" + "ab" * 32))
    assert error_of(unknown)[0] == -32602


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ([], "params", "expected [signed transaction as 0x-hex bytes]"),
        ([1, 2], "params", "expected [signed transaction as 0x-hex bytes]"),
        (["0xzz"], "params[0]", "hex bytes"),
        (["0x1234"], "params[0]", "not a signed transaction"),
        (["0x02"], "params[0]", "not a signed transaction"),
    ],
)
async def test_a_bad_raw_transaction_is_a_32602_naming_what_is_wrong(
    params: list[Any], field: str, words: str
) -> None:
    code, message = error_of(await call(make_api(), request("eth_sendRawTransaction", *params)))
    assert code == -32602
    assert message.startswith(f"invalid params: {field}: ")
    assert words in message


async def test_a_raw_transaction_at_a_nonce_already_tracked_is_refused_naming_it() -> None:
    api = make_api()
    first = signed_raw(nonce=3)
    await call(api, request("eth_sendRawTransaction", first.raw_transaction.to_0x_hex()))
    replacement = Account.sign_transaction(
        {**_RAW_TX, "nonce": 3, "maxFeePerGas": 9 * GWEI}, OTHER_KEY
    )
    code, message = error_of(
        await call(api, request("eth_sendRawTransaction", replacement.raw_transaction.to_0x_hex()))
    )
    assert code == -32000
    sender = Account.from_key(OTHER_KEY).address
    assert message == (
        f"nonce 3 of {sender} is already taken by intent raw-{first.hash.hex()} "
        "(a replacement signed elsewhere is not accepted)"
    )


async def test_a_raw_transaction_for_another_chain_is_refused() -> None:
    raw = signed_raw(chain_id=1).raw_transaction.to_0x_hex()
    code, message = error_of(await call(make_api(), request("eth_sendRawTransaction", raw)))
    assert code == -32602
    assert message == (
        "invalid params: params[0]: raw transaction refused (chain-id): signed for chain 1, "
        "this broadcaster serves 31337"
    )


# -- getIntent / cancelIntent --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "words"),
    [
        (["nope"], "id: no intent 'nope' is known here"),
        ([{"id": "nope"}], "id: no intent 'nope' is known here"),
        ([], "params: expected [id]"),
        (["a", "b"], "params: expected [id]"),
        ([5], "id: expected the intent id string"),
        ([""], "id: expected the intent id string"),
    ],
)
@pytest.mark.parametrize("method", ["broadcaster_getIntent", "broadcaster_cancelIntent"])
async def test_looking_up_an_unknown_or_malformed_id_is_a_32602(
    method: str, params: list[Any], words: str
) -> None:
    code, message = error_of(await call(make_api(), request(method, *params)))
    assert code == -32602
    assert message == f"invalid params: {words}"


async def test_get_intent_reports_the_record() -> None:
    api = make_api()
    sent = (await call(api, request("broadcaster_sendIntent", INTENT)))["result"]
    got = (await call(api, request("broadcaster_getIntent", sent["id"])))["result"]
    assert got == {
        "id": sent["id"],
        "status": "pending",
        "from": DEV,
        "nonce": "0x0",
        "hash": None,
        "hashes": [],
        "block": None,
        "reason": got["reason"],
    }


async def test_a_cancel_the_manager_refuses_is_a_server_error_with_the_intent_as_data() -> None:
    api = make_api()
    sent = (await call(api, request("broadcaster_sendIntent", INTENT)))["result"]
    assert (await call(api, request("broadcaster_cancelIntent", sent["id"])))["result"][
        "status"
    ] == "cancelled"
    reply = await call(api, request("broadcaster_cancelIntent", sent["id"]))
    code, message = error_of(reply)
    assert code == -32000
    assert message == f"intent {sent['id']} is cancelled: cannot cancel"
    assert reply["error"]["data"]["status"] == "cancelled"


# -- subscriptions (the queueing; the real life of an intent is in test_api_stack.py) ------------


async def test_notifications_go_to_matching_subscriptions_only() -> None:
    api = make_api()
    client = conn(api)
    api.subscriptions.add(client)
    every = (await call(api, request("broadcaster_subscribe"), client))["result"]
    first = (await call(api, request("broadcaster_sendIntent", INTENT)))["result"]
    second = (await call(api, request("broadcaster_sendIntent", INTENT)))["result"]
    only = (await call(api, request("broadcaster_subscribe", [first["id"]]), client))["result"]
    book = api.manager.book
    api.notify(book.by_intent(first["id"]), "signed")
    api.notify(book.by_intent(second["id"]), "signed")
    notes = notes_of(client)
    assert [(n["params"]["subscription"], n["params"]["result"]["id"]) for n in notes] == [
        (every, first["id"]),
        (only, first["id"]),
        (every, second["id"]),
    ]
    assert notes[0]["method"] == "broadcaster_subscription"
    assert notes[0]["params"]["result"]["event"] == "signed"

    assert (await call(api, request("broadcaster_unsubscribe", every), client))["result"] is True
    assert (await call(api, request("broadcaster_unsubscribe", every), client))["result"] is False
    api.notify(book.by_intent(second["id"]), "broadcast")
    assert client.outbox.empty()


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ([5], "params: expected [] (all intents) or [[intent ids]]"),
        ([[1, 2]], "params: expected [] (all intents) or [[intent ids]]"),
        ([{"ids": []}], "params: expected [] (all intents) or [[intent ids]]"),
        ([[]], "params[0]: no intent ids: pass [] to follow all intents"),
    ],
)
async def test_subscribe_with_malformed_ids_is_a_32602(params: list[Any], words: str) -> None:
    code, message = error_of(await call(make_api(), request("broadcaster_subscribe", *params)))
    assert (code, message) == (-32602, f"invalid params: {words}")


async def test_subscriptions_per_connection_are_limited() -> None:
    api = make_api(limits=ApiLimits(max_subscriptions=2))
    client = conn(api)
    for _ in range(2):
        assert "result" in await call(api, request("broadcaster_subscribe"), client)
    code, message = error_of(await call(api, request("broadcaster_subscribe"), client))
    assert (code, message) == (
        -32000,
        "too many subscriptions on this connection (at most 2): broadcaster_unsubscribe one first",
    )


# -- limits --------------------------------------------------------------------------------------


async def test_an_oversized_message_is_refused_with_its_size_and_the_limit() -> None:
    api = make_api(limits=ApiLimits(max_message_bytes=1000))
    reply = await call(api, b" " * 1001)
    assert error_of(reply) == (
        -32600,
        "message of 1001 bytes exceeds the limit of 1000 bytes",
    )
    # The limit is on bytes: 400 two-byte characters are 800 bytes, 600 are 1200.
    assert error_of(await call(api, " " * 200 + "é" * 400))[0] == -32700  # at the limit: parsed
    assert error_of(await call(api, "é" * 600))[0] == -32600


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_rate_limit_per_token_answers_32005_then_recovers_as_the_bucket_refills(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(api_module, "time", clock)
    api = make_api(limits=ApiLimits(rate_per_second=2, burst=3))
    mine, theirs = conn(api), conn(api, "second-token")
    for _ in range(3):
        assert "result" in await call(api, request("eth_chainId"), mine)
    assert error_of(await call(api, request("eth_chainId"), mine)) == (
        -32005,
        "rate limit exceeded for this token (2 requests/s, bursts of 3): retry shortly",
    )
    # Another token has its own bucket; a batch spends one token per request.
    replies = await call(api, [request("eth_chainId", id=i) for i in range(4)], theirs)
    assert [r.get("error", {}).get("code") for r in replies] == [None, None, None, -32005]
    clock.now += 0.5  # one request's worth at 2/s
    assert "result" in await call(api, request("eth_chainId"), mine)
    assert error_of(await call(api, request("eth_chainId"), mine))[0] == -32005
    clock.now += 60  # refills up to the burst, no further
    for _ in range(3):
        assert "result" in await call(api, request("eth_chainId"), mine)
    assert error_of(await call(api, request("eth_chainId"), mine))[0] == -32005


# -- over a real websocket -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def served(api: IntentApi) -> AsyncIterator[str]:
    server = await api.serve("127.0.0.1", 0)
    port = next(iter(server.sockets)).getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def ws_connect(url: str, headers: dict[str, str] | None = None) -> Any:
    return connect(url, additional_headers=headers or {}, proxy=None, compression=None)


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Poll until ``predicate`` holds (a deadline against hangs, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + 10
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def roundtrip(ws: ClientConnection, message: str | bytes) -> Any:
    await ws.send(message)
    async with asyncio.timeout(10):
        return orjson.loads(await ws.recv())


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"X-Token": TOKEN},
    ],
    ids=["none", "empty", "basic", "no-scheme", "no-token", "wrong", "prefix", "other-header"],
)
async def test_a_handshake_without_a_valid_bearer_token_is_refused_with_401(
    headers: dict[str, str],
) -> None:
    seen: list[str] = []
    api = make_api(on_intent=seen.append)
    async with served(api) as url:
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(url, headers):
                pass
    response = refused.value.response
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="broadcaster"'
    assert b"missing or invalid bearer token" in response.body
    assert seen == ["unauthorized"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_the_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    async with served(make_api()) as url, ws_connect(url, {"Authorization": f"{scheme} {TOKEN}"}):
        pass


async def test_the_connection_survives_a_parse_error_and_an_oversized_message() -> None:
    api = make_api(limits=ApiLimits(max_message_bytes=1000))
    async with (
        served(api) as url,
        ws_connect(url, {"Authorization": f"Bearer {TOKEN}"}) as ws,
    ):
        assert error_of(await roundtrip(ws, "{not json"))[0] == -32700
        assert (await roundtrip(ws, orjson.dumps(request("eth_chainId"))))["result"] == "0x7a69"
        assert error_of(await roundtrip(ws, b"[" + b" " * 2000 + b"]"))[0] == -32600
        assert (await roundtrip(ws, orjson.dumps(request("eth_chainId"))))["result"] == "0x7a69"
        # Text and binary frames alike (web3.py sends binary).
        text = orjson.dumps(request("eth_chainId", id=9)).decode()
        assert (await roundtrip(ws, text))["id"] == 9


async def test_a_message_beyond_four_times_the_limit_closes_the_connection_with_1009() -> None:
    api = make_api(limits=ApiLimits(max_message_bytes=1000))
    async with (
        served(api) as url,
        ws_connect(url, {"Authorization": f"Bearer {TOKEN}"}) as ws,
    ):
        await ws.send(b" " * 4001)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                await ws.recv()
        assert ws.close_code == 1009
    assert api.subscriptions.followers() == set()


async def test_the_bot_client_maps_errors_and_unsubscribes_when_its_iterator_closes() -> None:
    api = make_api(limits=ApiLimits(max_subscriptions=1))
    async with (
        served(api) as url,
        await BroadcasterClient.connect(url, token=TOKEN) as bot,
    ):
        with pytest.raises(ApiError) as refused:
            await bot.get_intent("nope")
        assert refused.value.code == -32602
        sent = await bot.send_intent(to=RECIPIENT, gas=21_000, max_fee_per_gas=3 * GWEI)
        record = api.manager.book.by_intent(sent["id"])
        (server_side,) = api.subscriptions.followers()
        for round_ in range(3):  # more than max_subscriptions, one after the other
            async with contextlib.aclosing(bot.subscribe([sent["id"]])) as notes:
                first = asyncio.ensure_future(anext(notes))
                await eventually(lambda: bool(server_side.subscriptions), "the subscription")
                api.notify(record, f"event-{round_}")
                async with asyncio.timeout(10):
                    note = await first
                assert note["event"] == f"event-{round_}"
            await eventually(lambda: not server_side.subscriptions, "the unsubscription")


# -- fuzzing -------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
quantities = st.one_of(
    st.integers(min_value=-5, max_value=2**70).map(hex),
    st.integers(min_value=1, max_value=6000).map(lambda n: "0x" + "f" * n),
    st.integers(min_value=-5, max_value=2**64 - 1),
    json_values,
)
intent_objects = st.fixed_dictionaries(
    {},
    optional={
        "from": st.sampled_from([DEV, DEV.lower(), BAD_CHECKSUM, "0x"]) | json_values,
        "to": st.sampled_from([RECIPIENT, None, "0x", BAD_CHECKSUM]) | json_values,
        "value": quantities,
        "data": st.binary(max_size=8).map(lambda b: "0x" + b.hex()) | json_values,
        "input": st.binary(max_size=8).map(lambda b: "0x" + b.hex()),
        "gas": quantities,
        "maxFeePerGas": quantities,
        "maxPriorityFeePerGas": quantities,
        "gasPrice": quantities,
        "type": st.integers(min_value=-1, max_value=3) | json_values,
        "chainId": st.sampled_from([CHAIN_ID, hex(CHAIN_ID), 1]) | json_values,
        "validUntilBlock": quantities,
        "key": st.text(max_size=130) | json_values,
        "nonce": quantities,
        "accessList": json_values,
    },
)
methods = st.sampled_from(
    [
        "broadcaster_sendIntent",
        "broadcaster_getIntent",
        "broadcaster_cancelIntent",
        "broadcaster_subscribe",
        "broadcaster_unsubscribe",
        "eth_chainId",
        "eth_blockNumber",
        "eth_sendTransaction",
        "eth_sendRawTransaction",
        "eth_accounts",
        *sorted(PASS_THROUGH),
    ]
) | st.text(max_size=20)
raw_hex = st.one_of(
    st.binary(max_size=200),
    st.binary(min_size=1, max_size=120).map(lambda b: b"\x02" + b),
    st.integers(min_value=0, max_value=2000).map(
        lambda cut: signed_raw().raw_transaction[:cut] + bytes(cut % 3)
    ),
).map(lambda b: "0x" + b.hex())
params = st.one_of(
    json_values,
    st.lists(intent_objects, min_size=0, max_size=2),
    intent_objects,
    st.tuples(raw_hex).map(list),
)
requests = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "method": methods},
    optional={"id": st.integers(0, 2**63) | st.text(max_size=8) | json_values, "params": params},
)
messages = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    json_values.map(orjson.dumps),
    requests.map(orjson.dumps),
    st.lists(requests | json_values, max_size=4).map(orjson.dumps),
)


def assert_well_formed(item: Any) -> None:
    assert isinstance(item, dict), item
    assert item["jsonrpc"] == "2.0"
    assert "id" in item and type(item["id"]) in (int, str, type(None))
    assert ("result" in item) != ("error" in item), item
    if "error" in item:
        error = item["error"]
        assert type(error["code"]) is int and type(error["message"]) is str and error["message"]
        assert error["code"] != -32603, f"internal error: {item}"  # a crash, not a refusal


async def fuzz_node(method: str, *params: Any) -> Any:
    if method == "eth_estimateGas":
        return "0x5208"
    if method == "eth_getBalance":
        raise ChainReadError("down")
    return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(messages, min_size=1, max_size=6))
def test_handle_message_always_answers_well_formed_json_rpc(batch: list[bytes | str]) -> None:
    async def run() -> None:
        api = make_api(passthrough=fuzz_node)
        client = conn(api)
        api.subscriptions.add(client)
        for message in batch:
            reply = await api.handle_message(client, message)
            if reply is None:
                continue
            payload = orjson.loads(reply)
            for item in payload if isinstance(payload, list) else [payload]:
                assert_well_formed(item)
            record = next(api.manager.book.all_records(), None)
            if record is not None:
                api.notify(record, "signed")  # notifications for whatever got subscribed

    asyncio.run(run())


@pytest.mark.parametrize(
    ("access", "field"),
    [
        ("nope", "accessList"),
        ([{"address": "0x12"}], "accessList[0].address"),
        ([{"address": "0x" + "11" * 20, "storageKeys": ["0x01"]}], "accessList[0].storageKeys[0]"),
        ([{"address": "0x" + "11" * 20, "other": 1}], "accessList[0]"),
    ],
)
async def test_a_malformed_access_list_is_refused_naming_the_entry(access: Any, field: str) -> None:
    api = make_api()
    reply = await call(api, request("broadcaster_sendIntent", {**INTENT, "accessList": access}))
    code, message = error_of(reply)
    assert code == -32602
    assert field in message


async def test_one_connection_pipelines_intents_and_keeps_their_nonces_in_sending_order() -> None:
    # The first intent's signing is held up; the others are answered meanwhile (the connection
    # does not wait for one message before reading the next), and the nonces follow the order
    # the intents were sent in, keyed ones (whose admission awaits a journal lookup) included.
    api = make_api()
    manager: StubManager = api.manager  # type: ignore[assignment]
    gate = asyncio.Event()
    held: list[str] = []

    async def complete(record: TxRecord) -> None:
        if not held:
            held.append(record.intent.id)
            await gate.wait()

    async def find(intent_id: str | None = None, *, key: str | None = None) -> TxRecord | None:
        await asyncio.sleep(0.001 * (hash(key) % 5))  # a journal lookup takes its time
        return None

    manager.complete = complete  # type: ignore[method-assign]
    manager.find = find  # type: ignore[method-assign]
    async with (
        served(api) as url,
        ws_connect(url, {"Authorization": f"Bearer {TOKEN}"}) as ws,
    ):
        for n in range(8):
            params = {**INTENT, "key": f"k{n}"} if n % 2 else INTENT
            await ws.send(orjson.dumps(request("broadcaster_sendIntent", params, id=n)))
        answers = []
        async with asyncio.timeout(10):
            while len(answers) < 7:
                answers.append(orjson.loads(await ws.recv()))
            assert 0 not in [a["id"] for a in answers]  # still held, the rest answered
            gate.set()
            answers.append(orjson.loads(await ws.recv()))
    by_id = {a["id"]: a["result"] for a in answers}
    assert [int(by_id[n]["nonce"], 16) for n in range(8)] == list(range(8))


async def test_intent_ids_are_32_hex_digits_unique_and_in_time_order() -> None:
    # Time-ordered ids keep the journal's id-keyed rows together (see intents.new_intent_id).
    api = make_api()
    client = conn(api)
    ids = []
    for n in range(50):
        reply = await call(api, request("broadcaster_sendIntent", INTENT, id=n), client)
        ids.append(reply["result"]["id"])
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == 50
    assert [i[:14] for i in ids] == sorted(i[:14] for i in ids)


async def test_a_raw_set_code_tx_is_tracked_and_a_raw_blob_tx_without_sidecar_is_refused() -> None:
    """Type 4 signed elsewhere rides as given (external: rebroadcast, never re-signed); a type-3
    canonical form has no sidecar, so nothing could ever send it: a -32602 says what to do."""
    api = make_api()
    third = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"  # anvil #3
    auth = Account.sign_authorization(
        {"chainId": CHAIN_ID, "address": RECIPIENT, "nonce": 9}, third
    )
    setcode = Account.sign_transaction(
        {**_RAW_TX, "chainId": CHAIN_ID, "nonce": 5, "type": 4, "authorizationList": [auth]},
        OTHER_KEY,
    )
    reply = await call(api, request("eth_sendRawTransaction", setcode.raw_transaction.to_0x_hex()))
    assert reply["result"] == setcode.hash.to_0x_hex()
    from signer_client.signing import LocalKey
    from signer_client.txcodec import tx_from_dict

    canonical = LocalKey(OTHER_KEY).sign(tx_from_dict(
        {**_RAW_TX, "chainId": CHAIN_ID, "nonce": 6, "type": 3, "accessList": [],
         "maxFeePerBlobGas": 1, "blobVersionedHashes": [b"\x01" + b"\x00" * 31]}
    ))  # fmt: skip
    code, message = error_of(await call(api, request("eth_sendRawTransaction", canonical.raw_hex)))
    assert code == -32602
    assert message.startswith("invalid params: params[0]: ") and "sidecar" in message


async def test_a_pipelined_blob_intent_keeps_its_place_in_the_connections_nonce_order() -> None:
    """The KZG of a blob intent (a worker process, 100+ ms) happens in the intent's turn: a
    plain intent pipelined right after it on the same connection gets the next nonce, not the
    blob intent's (a batcher's follow-up must not execute before its blob transaction)."""
    blob = "0x" + b"".join(b"\0" + (9 * 4096 + i).to_bytes(31, "big") for i in range(4096)).hex()
    api = make_api(limits=ApiLimits(max_message_bytes=1 << 20))
    client = conn(api)
    blob_intent = {**INTENT, "value": "0x0", "maxFeePerBlobGas": "0x1", "blobs": [blob]}
    first = asyncio.ensure_future(
        call(api, request("broadcaster_sendIntent", blob_intent, id=1), client)
    )
    second = asyncio.ensure_future(
        call(api, request("broadcaster_sendIntent", INTENT, id=2), client)
    )
    replies = await asyncio.gather(first, second)
    assert [r.get("result", {}).get("nonce") for r in replies] == ["0x0", "0x1"], replies

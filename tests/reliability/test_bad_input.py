"""Bad input, fuzzed (hypothesis): zero crashes, clear errors.

Fills the gaps next to what exists (tests/heads/test_header.py fuzzes the header hash over
consensus fields; tests/signer_client/test_framing.py splits valid frames at random;
tests/broadcaster/test_config_fuzz.py throws TOML-ish text and edited documents at the config
loader). Here:

- head decoder: whole websocket messages (JSON of any shape, truncated, oversized, deeply nested,
  header fields of the wrong type) through ``parse_frame`` and then ``ChainTracker.on_head`` /
  ``on_block`` of a live tracker: only the documented values come back, never an exception;
- signer frames: any byte stream into the client's protocol object (replies with ids of any
  type, error objects of any shape, bodies that are not JSON), and any ``raw``/``hash`` into the
  reply verifier: only ``ReplyVerificationError``;
- intent API: any message into ``IntentApi.handle_message``: always a JSON-RPC 2.0 answer with
  a standard error code, never an exception, never an accepted intent from bad params;
- config loader: every truncation of a full config, deep nesting and oversized values.

``RELIABILITY_EXAMPLES`` sets the examples per test (CI: 300).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broadcaster.api.server import IntentApi, _Client
from broadcaster.rpc.fanout import Submitted
from broadcaster.settings import ConfigError, config_from_dict, parse_config, render_config
from broadcaster.tx.manager import TxManager
from heads.events import Event, Extension, NeedAncestor, Rejected, Reorg
from heads.subscriber import HeadFrame, InvalidFrame, ResponseFrame, parse_frame
from heads.tracker import ChainTracker
from nonce import open_book
from signer_client import ReplyVerificationError
from signer_client.client import _Connection
from signer_client.errors import ProtocolError, RemoteError, remote_error
from signer_client.fake import FakeSigner
from signer_client.framing import encode_frame
from signer_client.txcodec import body_items, keccak, signing_payload, tx_from_dict
from signer_client.verify import ReplyVerifier
from tests.reliability.common import knob

EXAMPLES = knob("RELIABILITY_EXAMPLES", 300)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
DEV = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
HEX32 = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
HEXISH = (
    HEX32
    | st.integers(min_value=0, max_value=2**300).map(hex)
    | st.sampled_from(["0x", "0x0", "0x-1", "0xzz", "", "0x" + "0" * 64, "0X" + "a" * 64, "-0x1"])
    | JSON
)
HEADER_KEYS = [
    "number", "hash", "parentHash", "sha3Uncles", "miner", "stateRoot", "transactionsRoot",
    "receiptsRoot", "logsBloom", "difficulty", "gasLimit", "gasUsed", "timestamp", "extraData",
    "mixHash", "nonce", "baseFeePerGas", "withdrawalsRoot", "blobGasUsed", "excessBlobGas",
    "parentBeaconBlockRoot", "requestsHash", "size", "totalDifficulty",
]  # fmt: skip
HEADERS = st.dictionaries(st.sampled_from(HEADER_KEYS) | st.text(max_size=6), HEXISH, max_size=24)


def notification(header: Any, subscription: Any = "0xsub") -> bytes:
    return orjson.dumps(
        {
            "jsonrpc": "2.0",
            "method": "eth_subscription",
            "params": {"subscription": subscription, "result": header},
        }
    )


def nested(depth: int) -> bytes:
    return b'{"params":' * depth + b"1" + b"}" * depth


MESSAGES = (
    HEADERS.map(notification)
    | st.builds(notification, JSON, JSON)
    | JSON.map(orjson.dumps)
    | st.binary(max_size=300)
    | st.builds(lambda h, n: notification(h)[:n], HEADERS, st.integers(0, 400))  # truncated
    | st.integers(1, 5000).map(nested)
)


def check_events(events: list[Event]) -> None:
    for event in events:
        assert (
            type(event) in (Extension, Reorg, Rejected, NeedAncestor)
            or type(event).__name__ == "DeepReorg"
        )


@FUZZ
@given(st.lists(st.tuples(st.sampled_from("abc"), MESSAGES), min_size=1, max_size=12))
def test_any_websocket_message_is_classified_and_no_header_crashes_the_tracker(
    stream: list[tuple[str, bytes]],
) -> None:
    tracker = ChainTracker(finality_depth=8)
    anchor = {"number": "0x10", "hash": "0x" + "11" * 32, "parentHash": "0x" + "10" * 32}
    tracker.on_head("a", anchor)
    for client, raw in stream:
        frame = parse_frame(raw, max_bytes=2048)
        assert type(frame) in (HeadFrame, ResponseFrame, InvalidFrame)
        if type(frame) is InvalidFrame:
            assert frame.reason in (
                "malformed_json",
                "not_notification",
                "missing_fields",
                "oversized",
            )
            continue
        if type(frame) is HeadFrame:
            check_events(tracker.on_head(client, frame.header))
            check_events(tracker.on_block(client, frame.header))
    tip = tracker.tip
    assert tip is not None and tip.number >= 0


def _h(n: int) -> str:
    return "0x" + f"{n:064x}"


def test_a_header_that_is_its_own_parent_does_not_hang_the_tracker() -> None:
    """Regression (found by the fuzzer above): ``_held_root`` followed held parents without
    end when a lying client announced a block whose parentHash is its own hash (or a cycle of
    them); the event loop, and with it the service, hung forever."""
    tracker = ChainTracker(finality_depth=8)
    tracker.on_head("a", {"number": "0x10", "hash": _h(16), "parentHash": _h(15)})
    events = tracker.on_head("b", {"number": "0x11", "hash": _h(99), "parentHash": _h(99)})
    assert all(type(e) in (NeedAncestor, Rejected) for e in events)
    # A two-block cycle with plausible numbers: A(#20, parent B), B(#19, parent A).
    tracker.on_head("c", {"number": "0x13", "hash": _h(201), "parentHash": _h(200)})
    tracker.on_head("c", {"number": "0x14", "hash": _h(200), "parentHash": _h(201)})
    assert tracker.tip is not None and tracker.tip.hash == _h(16)


def test_a_first_header_that_is_its_own_parent_is_refused_not_walked() -> None:
    """Regression (the fuzzer, in a clean CI clone): an anchor whose parentHash is its own hash
    (all zeros) ran the tracker out of memory; it is refused as malformed."""
    zero = "0x" + "00" * 32
    tracker = ChainTracker()
    events = tracker.on_head("a", {"number": "0x0", "hash": zero, "parentHash": zero})
    assert [(type(e), getattr(e, "reason", None)) for e in events] == [(Rejected, "malformed")]
    assert tracker.tip is None
    tracker.on_head("c", {"number": "0x1", "hash": _h(1), "parentHash": zero})
    assert tracker.tip is not None and tracker.tip.hash == _h(1)


@FUZZ
@given(HEADERS)
def test_a_header_with_any_field_of_any_type_is_accepted_or_rejected_with_a_reason(
    header: dict[str, Any],
) -> None:
    tracker = ChainTracker()
    for event in tracker.on_head("a", header):
        if type(event) is Rejected:
            assert event.reason in ("hash_mismatch", "malformed") and event.detail


# -- signer frames -------------------------------------------------------------------------------


class _Transport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


REPLIES = st.fixed_dictionaries(
    {},
    optional={
        "id": JSON | st.integers(0, 3),
        "result": JSON | st.fixed_dictionaries({"raw": HEXISH, "hash": HEXISH}),
        "error": JSON,
    },
)
STREAM_PARTS = (
    REPLIES.map(encode_frame)
    | JSON.map(lambda v: len(orjson.dumps(v)).to_bytes(4, "big") + orjson.dumps(v))
    | st.binary(max_size=64)
    | st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(4, "big"))
)


@FUZZ
@given(st.lists(STREAM_PARTS, max_size=8))
def test_any_byte_stream_from_the_signer_fails_requests_cleanly_and_never_raises(
    parts: list[bytes],
) -> None:
    loop = asyncio.new_event_loop()
    try:
        events: list[str] = []
        conn = _Connection(events.append)
        conn.transport = _Transport()  # type: ignore[assignment]
        futures = {i: loop.create_future() for i in range(4)}
        conn.pending.update(futures)
        for part in parts:
            conn.data_received(part)  # must not raise, whatever arrives
        conn.connection_lost(None)
        for fut in futures.values():
            assert fut.done()
            if fut.exception() is None:
                assert isinstance(fut.result(), dict)
    finally:
        loop.close()


def test_a_signer_reply_whose_id_is_a_list_is_a_protocol_error_not_a_crash() -> None:
    """Regression: ``pending.pop([])`` raised TypeError out of ``data_received``."""
    loop = asyncio.new_event_loop()
    try:
        events: list[str] = []
        conn = _Connection(events.append)
        conn.transport = _Transport()  # type: ignore[assignment]
        fut = loop.create_future()
        conn.pending[1] = fut
        conn.data_received(encode_frame({"id": [], "result": {}}))
        assert events[0] == "protocol_error" and conn.transport.aborted  # type: ignore[union-attr]
        assert isinstance(fut.exception(), ProtocolError)
    finally:
        loop.close()


@FUZZ
@given(JSON)
def test_any_error_object_from_the_signer_maps_to_a_remote_error(error: Any) -> None:
    exc = remote_error(error)
    assert isinstance(exc, RemoteError) and str(exc)


TX = {
    "type": 2,
    "chainId": 31337,
    "nonce": 3,
    "to": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "value": 5,
    "data": b"",
    "gas": 21000,
    "maxFeePerGas": 3 * 10**9,
    "maxPriorityFeePerGas": 10**9,
    "accessList": [],
}


@FUZZ
@given(HEXISH | st.binary(max_size=200).map(lambda b: "0x" + b.hex()), st.none() | HEXISH)
def test_any_signer_reply_is_verified_or_rejected_with_a_reason(raw: Any, tx_hash: Any) -> None:
    fields = tx_from_dict(TX)
    body = body_items(fields)
    msg_hash = keccak(signing_payload(fields, body))
    with pytest.raises(ReplyVerificationError) as info:
        ReplyVerifier().verify(fields, msg_hash, bytes.fromhex(DEV[2:]), raw, tx_hash, body)
    assert info.value.check


# -- intent API ----------------------------------------------------------------------------------


class _Chain:
    async def transaction_counts(self, sender: str) -> tuple[int, int]:
        return (0, 0)

    async def blocks(self, hashes: Any) -> dict[str, Any]:
        return {}

    async def receipts(self, tx_hashes: Any) -> dict[bytes, Any]:
        return {}

    async def base_fee(self) -> int | None:
        return 10**9

    async def mined_at(self, sender: str, nonce: int) -> None:
        return None


class _Fanout:
    """Takes every transaction at once (one endpoint that never answers)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def listen(self, on_result: object, on_written: object = None) -> None:
        pass

    def submit(self, raw: bytes, tx_hash: bytes, context: object = None) -> Submitted:
        self.sent.append(raw)
        return Submitted(written=1, last_ns=time.perf_counter_ns(), written_items=1)

    def submit_many(self, items: Sequence[tuple[bytes, bytes, object]]) -> Submitted:
        self.sent.extend(raw for raw, _, _ in items)
        return Submitted(
            written=len(items), last_ns=time.perf_counter_ns(), written_items=len(items)
        )


class _Ws:
    remote_address = ("127.0.0.1", 1)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, IntentApi, _Client, _Fanout]]:
    loop = asyncio.new_event_loop()
    book, journal = open_book(tmp_path / "j.db")
    fanout = _Fanout()
    manager = TxManager(
        chain_id=31337,
        book=book,
        journal=journal,
        signer=FakeSigner(),
        fanout=fanout,
        endpoints=1,
        chain=_Chain(),
    )
    intent_api = IntentApi(manager, chain_id=31337, accounts=[DEV], tokens=["t"], passthrough=None)
    intent_api.limits = type(intent_api.limits)(rate_per_second=1e9, burst=10**9)
    client = _Client(_Ws(), "t", intent_api.limits)  # type: ignore[arg-type]
    try:
        yield loop, intent_api, client, fanout
    finally:
        journal.close()
        loop.close()


METHODS = st.sampled_from(
    ["broadcaster_sendIntent", "broadcaster_getIntent", "broadcaster_cancelIntent",
     "broadcaster_subscribe", "broadcaster_unsubscribe", "eth_chainId", "eth_blockNumber",
     "eth_sendTransaction", "eth_sendRawTransaction", "eth_accounts", "eth_call", "nope"]
)  # fmt: skip
INTENT_FIELDS = st.dictionaries(
    st.sampled_from(
        [
            "from",
            "to",
            "value",
            "data",
            "gas",
            "maxFeePerGas",
            "maxPriorityFeePerGas",
            "validUntilBlock",
            "key",
            "nonce",
            "input",
            "chainId",
            "type",
        ]
    ),
    HEXISH | st.sampled_from([DEV, "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "0x5208"]),
    max_size=8,
)
REQUESTS = st.fixed_dictionaries(
    {"method": METHODS | JSON},
    optional={
        "jsonrpc": st.just("2.0") | JSON,
        "id": JSON,
        "params": st.lists(INTENT_FIELDS | JSON, max_size=2) | INTENT_FIELDS | JSON,
    },
)
API_MESSAGES = (
    REQUESTS.map(orjson.dumps)
    | st.lists(REQUESTS, max_size=3).map(orjson.dumps)
    | JSON.map(orjson.dumps)
    | st.binary(max_size=100)
    | st.builds(lambda r, n: orjson.dumps(r)[:n], REQUESTS, st.integers(0, 100))
    | st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)
    | st.just(b" " * (2 << 20))
)
STANDARD_CODES = {-32700, -32600, -32601, -32602, -32603, -32000, -32005}


@FUZZ
@given(message=API_MESSAGES)
def test_any_api_message_gets_a_json_rpc_answer_and_never_an_exception(
    api: tuple[asyncio.AbstractEventLoop, IntentApi, _Client, _Fanout], message: bytes
) -> None:
    loop, intent_api, client, _ = api
    reply = loop.run_until_complete(intent_api.handle_message(client, message))
    if reply is None:
        return  # notifications only
    decoded = orjson.loads(reply)
    for answer in decoded if isinstance(decoded, list) else [decoded]:
        assert answer["jsonrpc"] == "2.0"
        if "error" in answer:
            assert answer["error"]["code"] in STANDARD_CODES, answer
            assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]
            assert answer["error"]["code"] != -32603, f"internal error for {message[:200]!r}"
        else:
            assert "result" in answer


# -- config loader -------------------------------------------------------------------------------

FULL = render_config(
    chain_id=31337,
    clients=[("a", "ws://127.0.0.1:8545"), ("b", "ws://127.0.0.1:8546")],
    rpcs=[("a", "http://127.0.0.1:8545")],
    signer_url="unix:///run/enclave.sock",
    accounts=[DEV],
    api_listen="127.0.0.1:8650",
    tokens=["t"],
    metrics_listen="127.0.0.1:9650",
    journal_path="broadcaster.db",
    watchdog_seconds=5,
)


def test_every_truncation_of_a_full_config_is_a_config_or_a_config_error() -> None:
    for cut in range(len(FULL)):
        try:
            parse_config(FULL[:cut])
        except ConfigError as exc:
            assert exc.problems and all(p.message for p in exc.problems)


@pytest.mark.parametrize("depth", [10, 1000, 100_000])
def test_deeply_nested_documents_are_config_errors(depth: int) -> None:
    document: dict[str, Any] = {}
    inner = document
    for _ in range(depth):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(ConfigError):
        config_from_dict({"chain_id": document, "clients": list(itertools.repeat([], 3))})


def test_oversized_values_are_config_errors_that_do_not_echo_the_whole_value() -> None:
    huge = "x" * (8 << 20)
    with pytest.raises(ConfigError) as info:
        parse_config(FULL.replace('"ws://127.0.0.1:8546"', f'"{huge}"'))
    assert len(str(info.value)) < 10_000

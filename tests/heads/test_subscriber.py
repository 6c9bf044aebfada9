"""The subscriber and the hub against a scripted websocket node (no anvil: every frame chosen)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from heads.connection import FrameBoundaries
from heads.events import Extension, Head
from heads.hub import HeadHub
from heads.recording import Recorder, iter_recording
from heads.subscriber import (
    HeadFrame,
    InvalidFrame,
    ResponseFrame,
    SubscriptionOptions,
    backoff,
    parse_frame,
)
from tests.anvil import free_port
from tests.e2e.support import Probe, running, zero_backoff

SUB = "0x5ub"


def block_hash(n: int, fork: int = 0) -> str:
    return "0x" + f"{fork:04x}{n:060x}"


def header(n: int, fork: int = 0, parent_fork: int | None = None) -> dict[str, Any]:
    parent = fork if parent_fork is None else parent_fork
    return {"number": hex(n), "hash": block_hash(n, fork), "parentHash": block_hash(n - 1, parent)}


def notification(h: dict[str, Any], subscription: str = SUB) -> bytes:
    return orjson.dumps(
        {
            "jsonrpc": "2.0",
            "method": "eth_subscription",
            "params": {"subscription": subscription, "result": h},
        }
    )


class FakeNode:
    """Answers eth_subscribe and eth_getBlockByHash; the test pushes frames with ``send``."""

    def __init__(self) -> None:
        self.blocks: dict[str, dict[str, Any]] = {}
        self.connection: ServerConnection | None = None
        self.connections = 0
        self.requests: list[tuple[str, list[Any]]] = []
        self.subscribed = asyncio.Event()
        self.subscribe_error = False
        self.chain_id = "0x7a69"  # 31337
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.connection = ws
        with contextlib.suppress(ConnectionClosed):
            await self._serve(ws)

    async def _serve(self, ws: ServerConnection) -> None:
        async for message in ws:
            request = orjson.loads(message)
            self.requests.append((request["method"], request["params"]))
            if request["method"] == "eth_subscribe":
                if self.subscribe_error:
                    reply = {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32601}}
                    self.subscribe_error = False
                else:
                    reply = {"jsonrpc": "2.0", "id": request["id"], "result": SUB}
                await ws.send(orjson.dumps(reply).decode())
                self.subscribed.set()
            elif request["method"] == "eth_chainId":
                reply = {"jsonrpc": "2.0", "id": request["id"], "result": self.chain_id}
                await ws.send(orjson.dumps(reply).decode())
            elif request["method"] == "eth_getBlockByHash":
                result = self.blocks.get(request["params"][0])
                await ws.send(
                    orjson.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result})
                )

    async def send(self, frame: bytes | str) -> None:
        assert self.connection is not None
        await self.connection.send(frame.decode() if isinstance(frame, bytes) else frame)

    async def resubscribed(self) -> None:
        self.subscribed.clear()
        async with asyncio.timeout(10):
            await self.subscribed.wait()


@pytest.fixture
async def node() -> AsyncIterator[FakeNode]:
    fake = FakeNode()
    async with serve(fake.handler, "127.0.0.1", 0, compression=None) as server:
        fake.port = next(iter(server.sockets)).getsockname()[1]
        yield fake


def make_hub(node: FakeNode, probe: Probe, **kwargs: Any) -> HeadHub:
    options = SubscriptionOptions(
        watchdog=kwargs.pop("watchdog", None),
        chain_id=kwargs.pop("chain_id", None),
        backoff=zero_backoff,
    )
    return HeadHub(
        [("a", node.url)],
        on_events=probe.on_events,
        hooks=probe,
        options=options,
        **kwargs,
    )


# -- pure pieces -------------------------------------------------------------------------------


def test_parse_frame_reads_a_head_notification() -> None:
    frame = parse_frame(notification(header(5)), 1 << 20)
    assert frame == HeadFrame(SUB, header(5))


def test_parse_frame_reads_a_response_to_our_request() -> None:
    frame = parse_frame(b'{"jsonrpc":"2.0","id":7,"result":null}', 1 << 20)
    assert frame == ResponseFrame(7, None, None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"jsonrpc":"2.0","method":"eth_subscription","para', "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"[1, 2]", "not_notification"),
        (b'{"jsonrpc":"2.0","method":"eth_foo","params":{}}', "not_notification"),
        (b'{"jsonrpc":"2.0","id":"x","result":1}', "not_notification"),
        (b'{"hello":"world"}', "not_notification"),
        (notification({"number": "0x1", "hash": "0x01"}), "missing_fields"),
        (
            b'{"method":"eth_subscription","params":{"subscription":"0x1","result":5}}',
            "missing_fields",
        ),
        (notification(header(1)) + b" " * 100, "oversized"),
    ],
)
def test_parse_frame_classifies_every_bad_frame(raw: bytes, reason: str) -> None:
    frame = parse_frame(raw, len(notification(header(1))) + 10)
    assert type(frame) is InvalidFrame
    assert frame.reason == reason


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap() -> None:
    delays = backoff(initial=0.1, factor=2.0, cap=1.0, rng=random.Random(7))
    taken = [next(delays) for _ in range(40)]
    ceilings = [min(1.0, 0.1 * 2**n) for n in range(40)]
    assert all(0.0 <= d <= c for d, c in zip(taken, ceilings, strict=True))
    assert max(taken[10:]) > 0.5  # the cap is reached, not just approached
    assert len(set(taken)) == len(taken)  # jittered, not lock-step
    again = backoff(initial=0.1, factor=2.0, cap=1.0, rng=random.Random(7))
    assert [next(again) for _ in range(40)] == taken  # randomness injected: reproducible


def test_a_bad_url_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="websocket url"):
        HeadHub([("a", "http://127.0.0.1:1")])


def test_duplicate_client_names_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        HeadHub([("a", "ws://127.0.0.1:1"), ("a", "ws://127.0.0.1:2")])


# -- against the fake node -----------------------------------------------------------------------


async def test_heads_reach_the_consumer_synchronously_with_their_receive_time(
    node: FakeNode,
) -> None:
    seen_at: list[tuple[int, int]] = []
    order: list[str] = []

    def consumer(events: list[Any], client: str, recv_ns: int, header: Any) -> None:
        seen_at.append((recv_ns, time.perf_counter_ns()))
        order.append("consumer")
        probe.on_events(events, client, recv_ns)

    class OrderProbe(Probe):
        def on_head(self, client: str) -> None:
            order.append("hook")
            super().on_head(client)

    probe = OrderProbe()
    hub = HeadHub([("a", node.url)], on_events=consumer, hooks=probe)
    async with running(hub):
        await probe.until(lambda: hub.state("a").connected, "connected")
        for n in (1, 2, 3):
            await node.send(notification(header(n)))
            await probe.until(lambda n=n: len(probe.tip_changes()) == n, f"extension {n}")  # type: ignore[misc]
        # Each head arrived as one whole frame per read: handed on before websockets parsed it.
        ws = hub.subscriptions["a"]._ws
        assert ws is not None and ws.fast_frames == 3
    assert [type(e) for e in probe.tip_changes()] == [Extension] * 3
    assert hub.tracker.tip == Head(3, block_hash(3), block_hash(2))
    assert all(0 < recv <= called for recv, called in seen_at)
    # The consumer (a reorg reaction) runs before the metrics hook of the same frame.
    assert order == ["consumer", "hook"] * 3
    status = hub.status()[0]
    assert (status.heads, status.head_number, status.lag) == (3, 3, 0)


async def test_malformed_frames_are_counted_and_skipped_without_ending_the_subscription(
    node: FakeNode,
) -> None:
    probe = Probe()
    hub = make_hub(node, probe)
    async with running(hub):
        await probe.until(lambda: hub.state("a").connected, "connected")
        await node.send(notification(header(1)))
        await node.send(b"{not json")
        await node.send(b'{"jsonrpc":"2.0","method":"eth_subscription","params":{}}')
        await node.send(notification({"number": "0x2", "hash": block_hash(2)}))
        await node.send(b'{"jsonrpc":"2.0","id":999,"result":"0x1"}')  # nobody asked
        await node.send(notification(header(2), subscription="0xother"))
        await node.send(b"[]")
        await node.send(notification(header(2)))
        await probe.until(lambda: len(probe.tip_changes()) == 2, "head 2 after the garbage")
    invalid = hub.state("a").invalid
    assert invalid == {"malformed_json": 1, "missing_fields": 2, "not_notification": 3}
    assert sorted(reason for _, reason in probe.invalid) == sorted(invalid.elements())
    assert hub.state("a").connects == 1  # never reconnected over it


async def test_oversized_frames_are_counted_and_skipped(node: FakeNode) -> None:
    probe = Probe()
    options = SubscriptionOptions(watchdog=None, backoff=zero_backoff, max_frame=1000)
    hub = HeadHub([("a", node.url)], on_events=probe.on_events, hooks=probe, options=options)
    async with running(hub):
        await probe.until(lambda: hub.state("a").connected, "connected")
        await node.send(notification({**header(1), "extraData": "0x" + "00" * 1000}))
        await node.send(notification(header(1)))
        await probe.until(lambda: len(probe.tip_changes()) == 1, "head 1")
    assert hub.state("a").invalid == {"oversized": 1}


async def test_a_gap_is_filled_by_hash_from_the_announcing_client_and_recorded(
    node: FakeNode, tmp_path: Path
) -> None:
    probe = Probe()
    for n in (2, 3, 4):
        node.blocks[block_hash(n)] = header(n)
    with Recorder(tmp_path / "gap.jsonl") as recorder:
        hub = make_hub(node, probe, recorder=recorder)
        async with running(hub):
            await probe.until(lambda: hub.state("a").connected, "connected")
            await node.send(notification(header(1)))
            await node.send(notification(header(5)))  # 2, 3, 4 never announced
            await probe.until(lambda: hub.tracker.tip is not None and hub.tracker.tip.number == 5)
    asked = [params[0] for method, params in node.requests if method == "eth_getBlockByHash"]
    # The anchor (block 1) first asks for its parent to fill the window below it; then the gap
    # before block 5 is filled by hash, walking back.
    assert asked == [block_hash(0), block_hash(4), block_hash(3), block_hash(2)]
    assert [params[1] for method, params in node.requests if method == "eth_getBlockByHash"] == [
        False
    ] * 4
    extension = probe.tip_changes()[-1]
    assert type(extension) is Extension
    assert [h.number for h in extension.added] == [2, 3, 4, 5]
    lines = list(iter_recording(tmp_path / "gap.jsonl"))
    kinds = [(line.kind, line.header["number"] if line.header else line.event) for line in lines]
    assert kinds == [
        ("event", "connected"),
        ("head", "0x1"),
        ("head", "0x5"),
        ("block", "0x4"),
        ("block", "0x3"),
        ("block", "0x2"),
        ("event", "disconnected"),
    ]


async def test_an_ancestor_the_node_does_not_have_is_counted_and_the_head_stays_held(
    node: FakeNode,
) -> None:
    probe = Probe()
    hub = make_hub(node, probe)
    async with running(hub):
        await probe.until(lambda: hub.state("a").connected, "connected")
        await node.send(notification(header(1)))
        await node.send(notification(header(3)))
        await probe.until(lambda: ("a", block_hash(2)) in probe.missing, "a null answer")
    # Block 0 (the anchor's parent, asked for to fill the window) is missing too.
    assert sorted(probe.missing) == sorted([("a", block_hash(0)), ("a", block_hash(2))])
    assert hub.state("a").backfill_missing == 2
    assert hub.tracker.tip is not None and hub.tracker.tip.number == 1


async def test_the_subscription_comes_back_after_the_node_drops_the_connection(
    node: FakeNode,
) -> None:
    probe = Probe()
    hub = make_hub(node, probe)
    async with running(hub):
        await probe.until(lambda: hub.state("a").connected, "connected")
        await node.send(notification(header(1)))
        assert node.connection is not None
        await node.connection.close()
        await probe.until(lambda: probe.connected_count("a") == 2, "reconnected")
        await node.send(notification(header(2)))
        await probe.until(lambda: len(probe.tip_changes()) == 2, "head 2 after reconnect")
    assert probe.states[:3] == [("a", True), ("a", False), ("a", True)]
    assert node.connections == 2


async def test_a_subscribe_error_is_retried(node: FakeNode) -> None:
    node.subscribe_error = True
    probe = Probe()
    hub = make_hub(node, probe)
    async with running(hub):
        await probe.until(lambda: hub.state("a").connected, "connected on the second try")
    assert node.connections == 2
    assert "SubscribeFailed" in (hub.state("a").last_error or "")


async def test_a_silent_socket_trips_the_watchdog_and_is_replaced(node: FakeNode) -> None:
    probe = Probe()
    hub = make_hub(node, probe, watchdog=0.2)
    async with running(hub):
        await probe.until(lambda: probe.connected_count("a") >= 2, "a reconnect after silence")
    assert hub.state("a").watchdog_expiries >= 1
    assert probe.disconnected_count("a") >= 1


async def test_an_unreachable_node_is_retried_with_delays_from_the_injected_backoff() -> None:
    probe = Probe()
    taken: list[float] = []

    def recording_backoff() -> Iterator[float]:
        while True:
            taken.append(0.01)
            probe.on_head("backoff")  # wake the waiter
            yield 0.01

    options = SubscriptionOptions(watchdog=None, backoff=recording_backoff)
    port = free_port()  # nothing listens there
    hub = HeadHub([("a", f"ws://127.0.0.1:{port}")], hooks=probe, options=options)
    async with running(hub):
        await probe.until(lambda: len(taken) >= 3, "three attempts")
    assert not hub.state("a").connected
    assert probe.states == []  # never came up, so never reported down either
    assert "ConnectionRefused" in (hub.state("a").last_error or "")


async def test_a_fragmented_message_is_read_through_the_queue_and_still_handled(
    node: FakeNode,
) -> None:
    # Nodes send a head in one frame (handled inside data_received); a message split into
    # fragments takes websockets' ordinary recv() path and must reach the tracker all the same.
    probe = Probe()
    hub = make_hub(node, probe)
    async with running(hub):
        await probe.until(lambda: hub.state("a").connected, "connected")
        await node.send(notification(header(1)))
        text = notification(header(2)).decode()
        assert node.connection is not None
        await node.connection.send([text[:40], text[40:90], text[90:]])  # three fragments
        await node.send(notification(header(3)))
        await probe.until(lambda: len(probe.tip_changes()) == 3, "three extensions")
    assert hub.tracker.tip == Head(3, block_hash(3), block_hash(2))
    assert hub.state("a").heads == 3


async def test_a_consumer_that_raises_fails_the_hub_instead_of_being_swallowed(
    node: FakeNode,
) -> None:
    # The consumer runs inside the connection's data_received; its exception must not vanish
    # into websockets' protocol callback: the hub's task group fails with it (a bug is loud).
    probe = Probe()

    def consumer(events: list[Any], client: str, recv_ns: int, header: Any) -> None:
        raise RuntimeError("consumer bug")

    hub = HeadHub([("a", node.url)], on_events=consumer, hooks=probe)
    task = asyncio.get_running_loop().create_task(hub.run())
    try:
        await probe.until(lambda: hub.state("a").connected, "connected")
        await node.send(notification(header(1)))
        async with asyncio.timeout(10):
            with pytest.raises(ExceptionGroup) as failed:
                await task
        assert failed.group_contains(RuntimeError, match="consumer bug")
    finally:
        task.cancel()


# -- frame boundaries (the fast path's pure part) -------------------------------------------------


def _frame(opcode: int, fin: bool, payload: bytes, mask: bytes | None) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 1 << 16:
        head = bytes((first, bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, bit | 127)) + n.to_bytes(8, "big")
    return head + (mask or b"") + payload


_frames = st.lists(
    st.tuples(
        st.sampled_from([0x1, 0x2, 0x0, 0x9, 0xA, 0x8]),
        st.booleans(),
        st.sampled_from([0, 1, 125, 126, 127, 300, 65535, 65536]).map(lambda n: b"x" * n),
        st.one_of(st.none(), st.just(b"\x01\x02\x03\x04")),
    ),
    min_size=1,
    max_size=8,
)


@given(_frames, st.data())
def test_frame_boundaries_find_exactly_the_chunks_that_are_one_whole_frame(
    frames: list[tuple[int, bool, bytes, bytes | None]], data: st.DataObject
) -> None:
    encoded = [_frame(*f) for f in frames]
    stream = b"".join(encoded)
    starts, pos = [], 0
    for e in encoded:
        starts.append(pos)
        pos += len(e)
    ends = set(starts[1:]) | {len(stream)}
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12))) | ends)
    tracker = FrameBoundaries()
    begin = 0
    for end in cuts:
        chunk = stream[begin:end]
        got = tracker.whole_frame(chunk, limit=1 << 20)
        expected = None
        if begin in starts:
            i = starts.index(begin)
            opcode, fin, payload, mask = frames[i]
            whole = begin + len(encoded[i]) == end
            if whole and fin and opcode in (1, 2) and mask is None and len(payload) < 1 << 16:
                expected = payload
        assert got == expected, (begin, end)
        begin = end


async def test_a_node_of_another_chain_is_kept_out_with_an_error_naming_it(node: FakeNode) -> None:
    node.chain_id = "0x1"  # mainnet, while the service is configured for 31337
    probe = Probe()
    hub = make_hub(node, probe, chain_id=31337)
    async with running(hub):
        await probe.until(lambda: hub.state("a").chain_id_mismatches >= 2, "asked again")
        assert not hub.state("a").connected
    assert [m for m, _ in node.requests if m == "eth_subscribe"] == []  # never subscribed
    assert ("a", "chain_id_mismatch") in probe.invalid
    error = hub.state("a").last_error or ""
    assert "client a" in error and "0x1" in error and "31337" in error


async def test_a_node_of_the_configured_chain_is_subscribed_after_eth_chain_id(
    node: FakeNode,
) -> None:
    probe = Probe()
    hub = make_hub(node, probe, chain_id=31337)
    async with running(hub):
        await probe.until(lambda: hub.state("a").connected, "connected")
        await node.send(notification(header(1)))
        await probe.until(lambda: hub.tracker.tip is not None, "a head")
    assert [m for m, _ in node.requests][:2] == ["eth_chainId", "eth_subscribe"]


async def test_a_backfill_reply_that_is_not_the_block_asked_for_is_refused(node: FakeNode) -> None:
    probe = Probe()
    node.blocks[block_hash(2)] = header(2, fork=7, parent_fork=0)  # another block at that hash
    hub = make_hub(node, probe)
    async with running(hub):
        await probe.until(lambda: hub.state("a").connected, "connected")
        await node.send(notification(header(1)))
        await node.send(notification(header(3)))  # 2 missing: asked for by hash
        await probe.until(lambda: ("a", "wrong_block") in probe.invalid, "refused")
    assert hub.tracker.tip is not None and hub.tracker.tip.number == 1
    assert hub.tracker.get(block_hash(2, fork=7)) is None

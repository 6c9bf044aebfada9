"""Auth signatures never crowd the signer (``AUTH_SIGNS_IN_FLIGHT``): the enclave answers in
arrival order, so a head re-targeting many private intents at several auth builders must not put
hundreds of ``sign_auth`` requests ahead of a reorg's transaction re-signs. Every body is still
signed and sent, in order per endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from broadcaster.rpc.orderflow import AUTH_SIGNS_IN_FLIGHT, OrderflowSender
from signer_client.flashbots import auth_signing_hash, body_hash, header_value
from signer_client.signing import LocalKey
from tests.builder_double import BuilderDouble
from tests.enclave.running import AUTH_KEY

KEY = LocalKey(AUTH_KEY)
PER_ENDPOINT = 60


@pytest.fixture
async def builders() -> AsyncIterator[list[BuilderDouble]]:
    doubles = [BuilderDouble("http://127.0.0.1:9/", require_auth=True) for _ in range(3)]
    for double in doubles:
        await double.__aenter__()
    try:
        yield doubles
    finally:
        for double in doubles:
            await double.__aexit__(None, None, None)


async def test_auth_signatures_are_windowed_over_every_endpoint(
    builders: list[BuilderDouble],
) -> None:
    in_flight = peak = 0

    async def sign(body: bytes) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)  # an enclave round trip: others may start meanwhile
        await asyncio.sleep(0)
        in_flight -= 1
        return header_value(KEY.address_bytes, KEY.sign_hash(auth_signing_hash(body_hash(body))))

    results: list[str] = []
    done = asyncio.Event()
    total = PER_ENDPOINT * len(builders)

    def on_result(rpc: str, method: str, result: str) -> None:
        results.append(result)
        if len(results) == total:
            done.set()

    sender = OrderflowSender(
        [(f"b{i}", b.url, "builder", "flashbots") for i, b in enumerate(builders)],
        on_result=on_result,
        sign_auth=sign,
        timeout=30.0,
    )
    await sender.connect()
    for block in range(PER_ENDPOINT):  # queued before the workers run: one burst
        sender.to_builders("eth_sendBundle", {"txs": ["0x02"], "blockNumber": hex(block)})
    worker = asyncio.create_task(sender.run())
    try:
        async with asyncio.timeout(60):
            await done.wait()
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await sender.aclose()
    assert results == ["accepted"] * total
    assert peak <= AUTH_SIGNS_IN_FLIGHT, peak
    for double in builders:
        blocks = [int(r.params["blockNumber"], 16) for r in double.sends()]
        assert sorted(blocks) == list(range(PER_ENDPOINT))


async def test_a_reactions_bundle_is_signed_first_and_on_the_urgent_lane(
    builders: list[BuilderDouble],
) -> None:
    """A body offered inside ``urgent()`` (``Router.submit`` of a reaction's send) is queued
    ahead of the backlog and its auth signature asked for on the signer's urgent lane."""
    from signer_client import urgent
    from signer_client.priority import URGENT

    asked: list[tuple[int, bool]] = []  # (blockNumber, urgent) in the order signs were asked

    async def sign(body: bytes) -> str:
        import orjson

        asked.append((int(orjson.loads(body)["params"][0]["blockNumber"], 16), URGENT.get()))
        await asyncio.sleep(0)
        return header_value(KEY.address_bytes, KEY.sign_hash(auth_signing_hash(body_hash(body))))

    results: list[str] = []
    done = asyncio.Event()

    def on_result(rpc: str, method: str, result: str) -> None:
        results.append(result)
        if len(results) == PER_ENDPOINT + 2:
            done.set()

    builder = builders[0]
    sender = OrderflowSender(
        [("b0", builder.url, "builder", "flashbots")],
        on_result=on_result,
        sign_auth=sign,
        timeout=30.0,
    )
    await sender.connect()
    for block in range(PER_ENDPOINT):
        sender.to_builders("eth_sendBundle", {"txs": ["0x02"], "blockNumber": hex(block)})
    with urgent():
        for block in (1000, 1001):
            sender.to_builders("eth_sendBundle", {"txs": ["0x02"], "blockNumber": hex(block)})
    worker = asyncio.create_task(sender.run())
    try:
        async with asyncio.timeout(60):
            await done.wait()
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await sender.aclose()
    assert asked[:2] == [(1000, True), (1001, True)], asked[:4]
    assert asked[2:] == [(b, False) for b in range(PER_ENDPOINT)]
    sent = [int(r.params["blockNumber"], 16) for r in builder.sends()]
    assert sent[:2] == [1000, 1001], sent[:4]


async def test_a_reactions_bundle_is_not_dropped_by_a_full_queue_of_ordinary_ones(
    builders: list[BuilderDouble],
) -> None:
    """A full queue (``queue_size`` ordinary bodies waiting for auth signatures) still takes a
    reaction's bundle, ahead of them (as ``Lane.full`` gives urgent jobs as many places again):
    dropped, the reaction's bundle would be the one lost while the backlog it jumps is kept."""
    from signer_client import urgent

    reports: list[tuple[str, str, str]] = []

    async def sign(body: bytes) -> str:
        return header_value(KEY.address_bytes, KEY.sign_hash(auth_signing_hash(body_hash(body))))

    sender = OrderflowSender(
        [("b0", builders[0].url, "builder", "flashbots")],
        on_result=lambda rpc, method, outcome: reports.append((rpc, method, outcome)),
        sign_auth=sign,
        queue_size=4,
    )
    await sender.connect()
    try:
        for block in range(5):  # the fifth ordinary one finds the queue full
            sender.to_builders("eth_sendBundle", {"txs": ["0x02"], "blockNumber": hex(block)})
        assert [r[2] for r in reports] == ["dropped"]
        with urgent():
            sender.to_builders("eth_sendBundle", {"txs": ["0x02"], "blockNumber": hex(1000)})
        assert [r[2] for r in reports] == ["dropped"], reports  # the reaction's one kept
        queue = sender.builders[0].queue
        assert len(queue) == 5 and b'"0x3e8"' in queue[0][2]
    finally:
        await sender.aclose()

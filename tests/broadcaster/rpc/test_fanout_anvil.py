"""The fan-out against real anvil nodes, over kept-alive HTTP and websockets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from broadcaster.rpc.error_table import ErrorKind
from broadcaster.rpc.fanout import Endpoint, FanOut
from tests.anvil import Anvil
from tests.broadcaster.rpc.fanout_helpers import Collector, quiet_anvil, signed_transfer

pytestmark = pytest.mark.e2e  # every test broadcasts to real anvil nodes


@pytest.fixture
def two_anvils() -> Iterator[tuple[Anvil, Anvil]]:
    # --no-mining: transactions stay in the pool, so resends and replacements meet them there.
    with quiet_anvil("--no-mining") as a, quiet_anvil("--no-mining") as b:
        yield a, b


def endpoints_of(a: Anvil, b: Anvil) -> list[Endpoint]:
    return [
        Endpoint("a-http", a.http_url),
        Endpoint("a-ws", a.ws_url),
        Endpoint("b-http", b.http_url),
        Endpoint("b-ws", b.ws_url),
    ]


async def pooled(node: Anvil, tx_hash: bytes) -> dict[str, object] | None:
    found: dict[str, object] | None = await asyncio.to_thread(
        node.rpc, "eth_getTransactionByHash", "0x" + tx_hash.hex()
    )
    return found


async def test_a_signed_tx_reaches_every_endpoint_and_lands_in_each_nodes_pool(
    two_anvils: tuple[Anvil, Anvil],
) -> None:
    a, b = two_anvils
    seen = Collector()
    raw, tx_hash = signed_transfer(0)
    async with FanOut(
        endpoints_of(a, b), on_result=seen.on_result, on_written=seen.on_written
    ) as fanout:
        done = fanout.submit(raw, tx_hash, context="intent-1")
        await seen.until(lambda: len(seen.finals()) == 4)

    assert sorted(r.endpoint for r in seen.finals()) == ["a-http", "a-ws", "b-http", "b-ws"]
    # Each node gets the bytes twice (http and ws): one fresh accept, one "already imported".
    assert {r.kind for r in seen.finals()} == {ErrorKind.ACCEPTED}
    assert all(r.tx_hash == tx_hash and r.context == "intent-1" for r in seen.results)
    assert all(r.latency_s is not None and r.latency_s >= 0 for r in seen.results)
    # The connections were opened by start(): every write was done inside submit().
    assert (done.written, done.queued, done.refused) == (4, 0, 0)
    assert seen.writes == []
    assert all(r.written for r in seen.results)
    for node in (a, b):
        tx = await pooled(node, tx_hash)
        assert tx is not None
        assert tx["hash"] == "0x" + tx_hash.hex()
        assert tx["blockNumber"] is None  # pending in the pool, not mined


async def test_resending_the_same_bytes_is_classified_accepted_over_http_and_ws(
    two_anvils: tuple[Anvil, Anvil],
) -> None:
    a, _ = two_anvils
    seen = Collector()
    raw, tx_hash = signed_transfer(0)
    endpoints = [Endpoint("http", a.http_url), Endpoint("ws", a.ws_url)]
    async with FanOut(endpoints, on_result=seen.on_result) as fanout:
        fanout.submit(raw, tx_hash)
        await seen.until(lambda: len(seen.finals()) == 2)
        fanout.submit(raw, tx_hash)
        await seen.until(lambda: len(seen.finals()) == 4)

    resends = seen.finals()[2:]
    assert {r.kind for r in resends} == {ErrorKind.ACCEPTED}
    # anvil 1.7.1's wording for a duplicate, as the classifier table expects it
    assert {r.message for r in resends} == {"transaction already imported"}
    assert {r.code for r in resends} == {-32003}


async def test_an_underpriced_replacement_is_classified_underpriced(
    two_anvils: tuple[Anvil, Anvil],
) -> None:
    a, _ = two_anvils
    seen = Collector()
    first_raw, first_hash = signed_transfer(0, value=1)
    # Same nonce, same fees, different payload: below geth's +10% replace rule.
    second_raw, second_hash = signed_transfer(0, value=2)
    endpoints = [Endpoint("http", a.http_url), Endpoint("ws", a.ws_url)]
    async with FanOut(endpoints, on_result=seen.on_result) as fanout:
        fanout.submit(first_raw, first_hash)
        await seen.until(lambda: len(seen.finals()) == 2)
        fanout.submit(second_raw, second_hash)
        await seen.until(lambda: len(seen.finals()) == 4)

    replacement = [r for r in seen.finals() if r.tx_hash == second_hash]
    assert {r.kind for r in replacement} == {ErrorKind.UNDERPRICED}
    assert {r.message for r in replacement} == {"replacement transaction underpriced"}
    assert await pooled(a, first_hash) is not None
    assert await pooled(a, second_hash) is None


async def test_a_mined_nonce_is_classified_nonce_too_low_and_a_fee_below_base_fee_too(
    two_anvils: tuple[Anvil, Anvil],
) -> None:
    a, _ = two_anvils
    seen = Collector()
    raw, tx_hash = signed_transfer(0)
    cheap_raw, cheap_hash = signed_transfer(1, max_fee=1, tip=1)
    endpoints = [Endpoint("http", a.http_url), Endpoint("ws", a.ws_url)]
    async with FanOut(endpoints, on_result=seen.on_result) as fanout:
        fanout.submit(raw, tx_hash)
        await seen.until(lambda: len(seen.finals()) == 2)
        await asyncio.to_thread(a.rpc, "evm_mine")
        fanout.submit(raw, tx_hash)
        fanout.submit(cheap_raw, cheap_hash)
        await seen.until(lambda: len(seen.finals()) == 6)

    again = [r for r in seen.finals()[2:] if r.tx_hash == tx_hash]
    cheap = [r for r in seen.finals() if r.tx_hash == cheap_hash]
    assert {r.kind for r in again} == {ErrorKind.NONCE_TOO_LOW}
    assert {r.kind for r in cheap} == {ErrorKind.FEE_CAP_TOO_LOW}


async def test_many_transactions_in_a_row_keep_their_order_and_all_land(
    two_anvils: tuple[Anvil, Anvil],
) -> None:
    a, b = two_anvils
    seen = Collector()
    txs = [signed_transfer(nonce) for nonce in range(20)]
    async with FanOut(endpoints_of(a, b), on_result=seen.on_result) as fanout:
        for raw, tx_hash in txs:
            fanout.submit(raw, tx_hash)
        await seen.until(lambda: len(seen.finals()) == 4 * len(txs))

    assert {r.kind for r in seen.finals()} == {ErrorKind.ACCEPTED}
    for node in (a, b):
        pending = await asyncio.to_thread(node.rpc, "txpool_content")
        by_nonce = pending["pending"]
        assert sum(len(v) for v in by_nonce.values()) == len(txs)


def test_the_fan_out_works_under_uvloop_too(two_anvils: tuple[Anvil, Anvil]) -> None:
    # The service runs on uvloop, whose transports are only duck-typed asyncio.Transports.
    a, b = two_anvils

    async def scenario() -> Collector:
        seen = Collector()
        async with FanOut(endpoints_of(a, b), on_result=seen.on_result) as fanout:
            for nonce in range(3):
                fanout.submit(*signed_transfer(nonce))
            await seen.until(lambda: len(seen.finals()) == 12)
        return seen

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        seen = runner.run(scenario())
    assert {r.kind for r in seen.finals()} == {ErrorKind.ACCEPTED}


@pytest.mark.parametrize("scheme", ["http", "ws"])
async def test_a_batch_of_consecutive_nonces_is_accepted_one_by_one_and_lands_in_the_pool(
    two_anvils: tuple[Anvil, Anvil], scheme: str
) -> None:
    a, _ = two_anvils
    seen = Collector()
    txs = [signed_transfer(nonce) for nonce in range(5)]
    url = a.http_url if scheme == "http" else a.ws_url
    async with FanOut(
        [Endpoint(scheme, url)], on_result=seen.on_result, on_written=seen.on_written
    ) as fanout:
        done = fanout.submit_many(
            [(raw, tx_hash, nonce) for nonce, (raw, tx_hash) in enumerate(txs)]
        )
        assert done.written == 5  # one write, before submit_many returned
        await seen.until(lambda: len(seen.finals()) == 5)

    stats = fanout.stats()[scheme]
    assert (stats.batches, stats.batched_jobs, stats.batch_refusals) == (1, 5, 0)
    assert {r.written_ns for r in seen.results} == {done.last_ns}
    # Each job answered on its own: a fresh accept (no message) carrying its own hash.
    assert [(r.tx_hash, r.kind, r.message, r.context) for r in seen.results] == [
        (tx_hash, ErrorKind.ACCEPTED, None, nonce) for nonce, (_, tx_hash) in enumerate(txs)
    ]
    pool = await asyncio.to_thread(a.rpc, "txpool_content")
    [by_nonce] = pool["pending"].values()
    assert {int(n): tx["hash"] for n, tx in by_nonce.items()} == {
        nonce: "0x" + tx_hash.hex() for nonce, (_, tx_hash) in enumerate(txs)
    }
    for _, tx_hash in txs:
        found = await pooled(a, tx_hash)
        assert found is not None
        assert found["blockNumber"] is None

"""RPC faults: endpoints that time out, answer 5xx, answer every txpool error string, or lie.

The service broadcasts to five endpoints: one honest (anvil behind a recorder), one that never
answers, one that answers 503, one that answers each ``eth_sendRawTransaction`` with the next
txpool error string of ``broadcaster/rpc/error_table.py`` (until every one was served), and one that
says ``already known`` without passing the transaction on. It follows two clients: anvil itself,
and anvil behind a proxy that rewrites ``timestamp`` in every ``newHeads`` frame (the hash no
longer matches the fields: a lying node). Checked:

- every intent is mined exactly once (the honest endpoint carries them);
- the faults are counted per endpoint and kind in ``broadcast_errors_total{rpc,kind}``; the
  lying client's headers in ``rejected_headers_total`` and ``invalid_messages_total``; its lies
  never move the tip (the tracker's chain is anvil's chain);
- the service never stops.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broadcaster.api.client import BroadcasterClient
from broadcaster.dev.anvil import start_anvil, start_enclave
from broadcaster.rpc.chain_reader import ChainReader
from broadcaster.rpc.error_table import MESSAGE_RULES
from tests.reliability.common import (
    TOKEN,
    ChaosProxy,
    assert_exactly_once,
    knob,
    report,
    running_service,
    send_valued,
    service_config,
    until,
)
from tests.reliability.rpc_recorder import RecordingRpc

pytestmark = pytest.mark.e2e  # real anvil nodes behind faulty endpoints

INTENTS = knob("RELIABILITY_RPC_INTENTS", 12)
_TIMESTAMP = re.compile(rb'("timestamp":"0x[0-9a-f]*)([0-9a-f])"')


def lie_about_the_timestamp(data: bytes) -> bytes:
    """Change the last hex digit of ``timestamp`` (same length: the websocket frame stays valid)."""
    if b"eth_subscription" not in data:
        return data
    return _TIMESTAMP.sub(
        lambda m: m.group(1) + (b"1" if m.group(2) != b"1" else b"2") + b'"', data
    )


async def test_faulty_and_lying_endpoints_are_routed_around_and_counted(tmp_path: Path) -> None:
    values: list[int] = []
    ids: list[str] = []
    async with (
        start_anvil("chain", block_time=1) as node,
        start_enclave(tmp_path / "enclave") as signer_url,
        RecordingRpc(node.http_url) as honest,
        RecordingRpc(node.http_url, "stall") as stall,
        RecordingRpc(node.http_url, "5xx") as five,
        RecordingRpc(node.http_url, "txpool") as txpool,
        RecordingRpc(node.http_url, "liar") as liar,
        ChaosProxy(node.port, rewrite=lie_about_the_timestamp) as lying_client,
        ChaosProxy(node.port) as honest_client,
    ):
        # The honest client lags a little, so the liar announces each block first: a header
        # already known by hash is not verified again, so only a first announcement can lie.
        honest_client.slow(0.2)
        config = service_config(
            tmp_path,
            clients=[("anvil", honest_client.ws_url), ("liar", lying_client.ws_url)],
            rpcs=[
                ("stall", stall.url),
                ("5xx", five.url),
                ("txpool", txpool.url),
                ("liar", liar.url),
                ("honest", honest.url),
            ],
            signer_url=signer_url,
        )
        async with (
            running_service(config) as running,
            await BroadcasterClient.connect(running.api_url, token=TOKEN) as api,
        ):
            # At least INTENTS intents, and on until the txpool endpoint has answered with every
            # string of the table (each broadcast takes the next one).
            while len(values) < INTENTS or (
                len(set(txpool.served)) < len(MESSAGE_RULES) and len(values) < 400
            ):
                await send_valued(api, values, ids, 70_000)
                await until(lambda: len(txpool.raws) >= len(values), "the txpool endpoint asked")

            async def all_included() -> bool:
                states = [await api.get_intent(i) for i in ids]
                return all(s["status"] in ("included", "finalized") for s in states)

            await until(all_included, "every intent included", limit=120, step=0.5)
            await until(lambda: bool(running.samples("broadcaster_rejected_headers_total")),
                        "a rejected header")  # fmt: skip
            await until(
                lambda: "stall,timeout" in running.samples("broadcaster_broadcast_errors_total"),
                "the stalled endpoint's timeouts",
            )
            rejected = running.samples("broadcaster_rejected_headers_total")
            invalid = running.samples("broadcaster_invalid_messages_total")
            errors = running.samples("broadcaster_broadcast_errors_total")
            hub = running.service.hub
            assert hub is not None
            window = hub.tracker.canonical_chain()[-20:]
            for head in window:
                block = await node.rpc("eth_getBlockByNumber", hex(head.number), False)
                assert block["hash"] == head.hash, "a lie reached the canonical chain"
            assert running.alive()
        mined = await assert_exactly_once(node, values)

    report(
        "rpc-faults",
        intents=len(values),
        mined=len(mined),
        broadcast_errors=errors,
        txpool_strings_served=len(txpool.served),
        txpool_distinct_strings=len(set(txpool.served)),
        liar_already_known=len(liar.served),
        rejected_headers=rejected,
        invalid_messages=invalid,
    )
    assert errors.get("stall,timeout"), "timeouts not counted"
    assert errors.get("5xx,transient"), "5xx not counted"
    assert any(k.startswith("txpool,") for k in errors), "txpool errors not counted"
    assert len(set(txpool.served)) == len(MESSAGE_RULES), "not every txpool string was served"
    assert rejected.get("liar,hash_mismatch"), "lying headers not counted"
    assert invalid.get("liar,header_hash_mismatch")
    assert not any(k.startswith("anvil,") for k in rejected), "honest headers rejected"


async def test_a_stalled_endpoint_listed_first_costs_one_timeout_not_one_per_read() -> None:
    """Regression: ChainReader asked the endpoints in config order on every read, so a stalled
    first endpoint cost a full timeout on each (inclusion tracking crawled at one read per 5 s)."""
    async with (
        start_anvil("chain") as node,
        RecordingRpc(node.http_url, "stall") as stall,
        RecordingRpc(node.http_url) as honest,
    ):
        reader = ChainReader([stall.url, honest.url], timeout=0.5)
        try:
            for _ in range(5):
                assert await reader.call("eth_chainId") == "0x7a69"
        finally:
            await reader.close()
    assert stall.requests == 1 and honest.requests == 5

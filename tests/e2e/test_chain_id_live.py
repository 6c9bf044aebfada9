"""A head client and a broadcast RPC of another chain, on real anvils (DESIGN.md §3 trust).

The service is configured for chain 31337 with two head clients and two RPCs; one of each is an
anvil of chain 1 that is ahead (it has mined more blocks). Both are kept out, each named in the
log and counted (``invalid_messages_total{reason="chain_id_mismatch"}``): the tip and the API's
block number are the real chain's, never the other chain's height, and our transaction goes to
the right chain.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from broadcaster.api.client import GWEI, BroadcasterClient
from broadcaster.dev.anvil import start_anvil, start_enclave
from tests.reliability.common import TOKEN, running_service, service_config, until

pytestmark = pytest.mark.e2e  # real anvils, real enclave app

RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


async def test_a_client_and_an_rpc_of_another_chain_are_kept_out_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    async with (
        start_anvil("ours") as ours,
        start_anvil("theirs", "--chain-id", "1") as theirs,
        start_enclave(tmp_path / "enclave") as signer_url,
    ):
        for _ in range(50):
            await theirs.rpc("evm_mine")  # the other chain is far ahead
        config = service_config(
            tmp_path,
            clients=[("good", ours.ws_url), ("wrong", theirs.ws_url)],
            rpcs=[("rpc-good", ours.http_url), ("rpc-wrong", theirs.http_url)],
            signer_url=signer_url,
        )
        async with running_service(config) as running:
            service = running.service
            hub = service.hub
            assert hub is not None
            await until(lambda: hub.state("wrong").chain_id_mismatches >= 1, "wrong client asked")
            await until(lambda: hub.state("good").connected, "good client up")
            await ours.rpc("evm_mine")
            await until(lambda: hub.tracker.tip is not None, "a tip")
            assert not hub.state("wrong").connected
            assert (
                running.metric(
                    "broadcaster_invalid_messages_total", client="wrong", reason="chain_id_mismatch"
                )
                >= 1
            )
            assert (
                running.metric(
                    "broadcaster_invalid_messages_total",
                    client="rpc-wrong",
                    reason="chain_id_mismatch",
                )
                == 1
            )
            async with await BroadcasterClient.connect(running.api_url, token=TOKEN) as bot:
                height = int(await bot.request("eth_blockNumber"), 16)
                assert height == int(await ours.rpc("eth_blockNumber"), 16) < 50
                sent = await bot.send_intent(
                    to=RECIPIENT, value=1, gas=21_000, max_fee_per_gas=3 * GWEI,
                    max_priority_fee_per_gas=GWEI,
                )  # fmt: skip

                async def included() -> bool:
                    return (await bot.get_intent(sent["id"]))["status"] == "included"

                await until(included, "our transaction included")
            assert await ours.rpc("eth_getTransactionReceipt", sent["hash"]) is not None
            assert await theirs.rpc("eth_getTransactionByHash", sent["hash"]) is None
    errors = " ".join(r.getMessage() for r in caplog.records)
    assert "client wrong" in errors and "rpc rpc-wrong" in errors

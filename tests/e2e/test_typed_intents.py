"""Blob (EIP-4844) and set-code (EIP-7702) *intents* end to end: the real service, the real
enclave app with its real policy (``allowed_delegates``, ``max_fee_per_blob_gas``), real anvil on
Prague over real websockets; reorgs made with ``anvil_reorg``.

What it pins: a self-sponsored delegation intent is signed by the enclave (the authorization at
the tx nonce + 1), mined, reorged out, re-signed and mined once, and the next intent takes the
nonce after both (no gap, no gap fill); a blob intent goes out in its network form, is mined,
reorged out and replaced at +100% on all three fees and mined once; a delegate outside the
policy is a clear JSON-RPC error and the service carries on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broadcaster.api.client import GWEI, ApiError, BroadcasterClient
from broadcaster.dev.anvil import DEV_ADDRESS, start_anvil, start_enclave
from broadcaster.dev.stack import DevStack, dev_stack

pytestmark = pytest.mark.e2e

RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
DELEGATE = "0x5FbDB2315678afecb367f032d93F642f64180aa3"  # in the enclave's allowed_delegates
NOT_ALLOWED = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
BLOB = "0x" + b"".join(b"\0" + i.to_bytes(31, "big") for i in range(4096)).hex()
POLICY = f'allowed_delegates = ["{DELEGATE}"]\nmax_fee_per_blob_gas = 100000000000\n'


@pytest.fixture(params=[True, False], ids=["presigned", "live-resign"])
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[DevStack]:
    """Replacements signed ahead of the reorg (blob fees doubled ahead too), and at reaction."""
    async with (
        start_anvil("anvil", "--hardfork", "prague") as node,
        start_enclave(tmp_path / "enclave", policy=POLICY) as signer_url,
        dev_stack(tmp_path, node=node, signer_url=signer_url, presign=request.param) as running,
    ):
        yield running


@pytest.fixture
async def bot(stack: DevStack) -> AsyncIterator[BroadcasterClient]:
    async with await BroadcasterClient.connect(stack.api_url, token=stack.token) as client:
        yield client


async def until(predicate: Any, what: str, limit: float = 30.0) -> None:
    """Poll an async predicate until it holds (a deadline, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + limit
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def included(bot: BroadcasterClient, intent_id: str, *, not_hash: str | None = None) -> bool:
    got = await bot.get_intent(intent_id)
    return bool(got["status"] == "included" and got["hash"] != not_hash)


async def nonce_of(stack: DevStack) -> int:
    return int(await stack.node.rpc("eth_getTransactionCount", DEV_ADDRESS, "latest"), 16)


async def reorg_out(stack: DevStack, tx_hash: str) -> None:
    """Drop the block holding ``tx_hash`` and one empty block on top (``anvil_reorg`` depth 2).

    The empty block first: anvil 1.7.1 (automine) prunes a mined tx from its pool after the
    block is in; a reorg made right then sometimes put the tx straight back into the new
    branch (then nothing was dropped and nothing is re-signed, correctly, but it tests nothing).
    """
    node = stack.node
    receipt = await node.rpc("eth_getTransactionReceipt", tx_hash)
    await node.rpc("evm_mine")
    tip = int(await node.rpc("eth_blockNumber"), 16)
    await node.rpc("anvil_reorg", tip - int(receipt["blockNumber"], 16) + 1, [])


async def mined_once(stack: DevStack, bot: BroadcasterClient, intent_id: str) -> dict[str, Any]:
    """The intent's final hash is mined in the canonical block it names; no other hash it had
    is mined anywhere. Returns the mined transaction."""
    got = await bot.get_intent(intent_id)
    node = stack.node
    receipt = await node.rpc("eth_getTransactionReceipt", got["hash"])
    assert receipt is not None and receipt["status"] == "0x1", receipt
    canonical = await node.rpc("eth_getBlockByNumber", receipt["blockNumber"], False)
    assert canonical["hash"] == receipt["blockHash"] == got["block"]["hash"]
    for other in got["hashes"]:
        if other != got["hash"]:
            assert await node.rpc("eth_getTransactionReceipt", other) is None
    tx = await node.rpc("eth_getTransactionByHash", got["hash"])
    return {**tx, "receipt": receipt, "hashes": got["hashes"]}


async def test_a_self_sponsored_delegation_intent_is_mined_reorged_re_signed_and_leaves_no_gap(
    stack: DevStack, bot: BroadcasterClient
) -> None:
    node = stack.node
    await node.rpc("evm_mine")  # keep the intent out of block 1 (anvil_reorg below)
    start = await nonce_of(stack)
    answer = await bot.request(
        "broadcaster_sendIntent",
        {"to": RECIPIENT, "gas": hex(100_000), "maxFeePerGas": hex(10 * GWEI),
         "maxPriorityFeePerGas": hex(GWEI), "authorizationList": [{"address": DELEGATE}]},
    )  # fmt: skip
    assert answer["nonce"] == hex(start)
    await until(lambda: included(bot, answer["id"]), "the delegation mined")
    first = await bot.get_intent(answer["id"])
    designator = "0xef0100" + DELEGATE[2:].lower()
    assert await node.rpc("eth_getCode", DEV_ADDRESS, "latest") == designator
    assert await nonce_of(stack) == start + 2  # the tx's nonce and the authorization's

    await reorg_out(stack, first["hash"])
    await until(
        lambda: included(bot, answer["id"], not_hash=first["hash"]), "the re-signed delegation"
    )
    tx = await mined_once(stack, bot, answer["id"])
    assert int(tx["type"], 16) == 4 and int(tx["nonce"], 16) == start
    [auth] = tx["authorizationList"]
    assert (auth["address"].lower(), int(auth["nonce"], 16)) == (DELEGATE.lower(), start + 1)
    assert int(tx["maxFeePerGas"], 16) >= 11 * GWEI  # +10% over the first
    assert await node.rpc("eth_getCode", DEV_ADDRESS, "latest") == designator

    after = await bot.send_intent(to=RECIPIENT, value=1, gas=21_000, max_fee_per_gas=10 * GWEI,
                                  max_priority_fee_per_gas=GWEI)  # fmt: skip
    assert after["nonce"] == hex(start + 2)  # not start + 1: that is the authorization's
    await until(lambda: included(bot, after["id"]), "the next intent")
    assert await nonce_of(stack) == start + 3
    got = await bot.get_intent(after["id"])
    assert len(got["hashes"]) == 1  # no gap ever opened: nothing was re-signed or filled


async def test_a_blob_intent_is_mined_reorged_replaced_at_double_fees_and_mined_once(
    stack: DevStack, bot: BroadcasterClient
) -> None:
    node = stack.node
    await node.rpc("evm_mine")  # anvil 1.7.1 keeps a blob tx reorged out of block 1 pending
    start = await nonce_of(stack)
    answer = await bot.request(
        "broadcaster_sendIntent",
        {"to": RECIPIENT, "gas": hex(21_000), "maxFeePerGas": hex(10 * GWEI),
         "maxPriorityFeePerGas": hex(GWEI), "maxFeePerBlobGas": hex(GWEI), "blobs": [BLOB]},
    )  # fmt: skip
    assert answer["nonce"] == hex(start)
    await until(lambda: included(bot, answer["id"]), "the blob tx mined")
    first = await bot.get_intent(answer["id"])
    mined = await node.rpc("eth_getTransactionReceipt", first["hash"])
    assert mined["blobGasUsed"] == hex(131_072)

    await reorg_out(stack, first["hash"])
    await until(lambda: included(bot, answer["id"], not_hash=first["hash"]), "the blob re-sign")
    tx = await mined_once(stack, bot, answer["id"])
    assert int(tx["type"], 16) == 3 and int(tx["nonce"], 16) == start
    assert int(tx["maxFeePerBlobGas"], 16) == 2 * GWEI  # +100%
    assert int(tx["maxFeePerGas"], 16) >= 20 * GWEI
    assert int(tx["maxPriorityFeePerGas"], 16) >= 2 * GWEI
    assert tx["receipt"]["blobGasUsed"] == hex(131_072)
    assert len(tx["blobVersionedHashes"]) == 1
    assert await nonce_of(stack) == start + 1


async def test_a_delegate_outside_the_policy_is_a_clear_json_rpc_error_and_the_service_goes_on(
    stack: DevStack, bot: BroadcasterClient
) -> None:
    with pytest.raises(ApiError) as caught:
        await bot.request(
            "broadcaster_sendIntent",
            {"to": RECIPIENT, "gas": hex(100_000), "maxFeePerGas": hex(10 * GWEI),
             "authorizationList": [{"address": NOT_ALLOWED}]},
        )  # fmt: skip
    assert caught.value.code == -32000
    assert "delegate_not_allowed" in caught.value.message or "allowed_delegates" in str(
        caught.value.message
    ), caught.value.message
    after = await bot.send_intent(to=RECIPIENT, value=1, gas=21_000, max_fee_per_gas=10 * GWEI,
                                  max_priority_fee_per_gas=GWEI)  # fmt: skip
    await until(lambda: included(bot, after["id"]), "the next intent")
    assert await nonce_of(stack) == int(after["nonce"], 16) + 1  # any hole was filled

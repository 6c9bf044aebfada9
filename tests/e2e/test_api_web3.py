"""A web3.py bot pointed at the broadcaster unchanged (issue 5: "web3.py's WebSocketProvider").

The bot builds ``AsyncWeb3(WebSocketProvider(url))`` with only an ``Authorization`` header added
(websockets 17's ``connect(additional_headers=...)``, which web3 8 passes ``websocket_kwargs``
to). Everything then goes through the broadcaster: the Ethereum methods it serves itself
(``eth_chainId``, ``eth_blockNumber``, ``eth_sendTransaction``, ``eth_sendRawTransaction``) and
the read-only ones it passes through to its RPC (``eth_estimateGas``, ``eth_getBlockByNumber``,
``eth_getTransactionReceipt``...). The chain is a real anvil (automine) and signing is done by
the real enclave app.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import AsyncWeb3, WebSocketProvider

from broadcaster.api.client import GWEI, ApiError, BroadcasterClient
from broadcaster.dev.anvil import DEV_ADDRESS
from broadcaster.dev.stack import DevStack, dev_stack

RECIPIENT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # anvil account 2
# anvil account 1: signs elsewhere (eth_account) and only hands the broadcaster the bytes
OUTSIDE_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
OUTSIDE_ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
WAIT = 20.0  # seconds before a wait counts as a hang (not a timing assertion)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[DevStack]:
    async with dev_stack(tmp_path) as running:
        yield running


@pytest.fixture
async def w3(stack: DevStack) -> AsyncIterator[AsyncWeb3[Any]]:
    provider = WebSocketProvider(
        stack.api_url,
        websocket_kwargs={
            "additional_headers": {"Authorization": f"Bearer {stack.token}"},
            "proxy": None,  # 127.0.0.1 only, whatever the environment says
        },
    )
    async with AsyncWeb3(provider) as web3:
        yield web3


@pytest.fixture
async def bot(stack: DevStack) -> AsyncIterator[BroadcasterClient]:
    async with await BroadcasterClient.connect(stack.api_url, token=stack.token) as client:
        yield client


async def mined(stack: DevStack, tx_hash: str) -> dict[str, Any]:
    """The node's receipt for ``tx_hash`` once anvil has mined it."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while (receipt := await stack.node.rpc("eth_getTransactionReceipt", tx_hash)) is None:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{tx_hash} was not mined")
        await asyncio.sleep(0.05)
    assert isinstance(receipt, dict)
    return receipt


async def tracked_as_included(bot: BroadcasterClient, intent_id: str) -> dict[str, Any]:
    """``broadcaster_getIntent`` once the broadcaster has seen the intent included."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while (intent := await bot.get_intent(intent_id))["status"] not in ("included", "finalized"):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{intent_id} is still {intent['status']}")
        await asyncio.sleep(0.05)
    return intent


def intent_of(stack: DevStack, tx_hash: str) -> str:
    """The intent id the broadcaster booked the transaction ``tx_hash`` under."""
    manager = stack.service.manager
    assert manager is not None
    record = manager.book.by_hash(bytes.fromhex(tx_hash.removeprefix("0x")))
    assert record is not None, f"{tx_hash} is not tracked"
    return record.intent.id


async def test_chain_id_and_block_number_come_from_the_broadcaster(
    stack: DevStack, w3: AsyncWeb3[Any]
) -> None:
    assert await w3.eth.chain_id == 31337
    assert await w3.eth.block_number == int(await stack.node.rpc("eth_blockNumber"), 16)
    assert await w3.eth.accounts == [DEV_ADDRESS]


async def test_send_transaction_with_explicit_gas_and_fees_is_signed_tracked_and_mined(
    stack: DevStack, w3: AsyncWeb3[Any], bot: BroadcasterClient
) -> None:
    tx_hash = await w3.eth.send_transaction(
        {
            "from": DEV_ADDRESS,
            "to": RECIPIENT,
            "value": 12_345,
            "gas": 21_000,
            "maxFeePerGas": 3 * GWEI,
            "maxPriorityFeePerGas": GWEI,
        }
    )
    receipt = await mined(stack, tx_hash.to_0x_hex())
    assert receipt["status"] == "0x1"
    tx = await stack.node.rpc("eth_getTransactionByHash", tx_hash.to_0x_hex())
    assert tx["from"].lower() == DEV_ADDRESS.lower()
    assert tx["to"].lower() == RECIPIENT.lower()
    assert int(tx["value"], 16) == 12_345
    assert int(tx["maxFeePerGas"], 16) == 3 * GWEI

    intent = await tracked_as_included(bot, intent_of(stack, tx_hash.to_0x_hex()))
    assert intent["hash"] == tx_hash.to_0x_hex()
    assert intent["block"]["hash"] == receipt["blockHash"]


async def test_send_transaction_without_gas_or_fees_is_filled_in_and_mined(
    stack: DevStack, w3: AsyncWeb3[Any], bot: BroadcasterClient
) -> None:
    # web3.py fills the fees through the pass-through (eth_maxPriorityFeePerGas,
    # eth_getBlockByNumber); the broadcaster estimates the gas (eth_estimateGas).
    tx_hash = await w3.eth.send_transaction({"from": DEV_ADDRESS, "to": RECIPIENT, "value": 7})
    receipt = await mined(stack, tx_hash.to_0x_hex())
    assert receipt["status"] == "0x1"
    tx = await stack.node.rpc("eth_getTransactionByHash", tx_hash.to_0x_hex())
    assert int(tx["gas"], 16) >= 21_000
    await tracked_as_included(bot, intent_of(stack, tx_hash.to_0x_hex()))


async def test_raw_send_without_gas_through_the_json_api_is_estimated_too(
    stack: DevStack, bot: BroadcasterClient
) -> None:
    # The bare JSON-RPC: no gas, no fees, no from (one account configured).
    tx_hash = await bot.request("eth_sendTransaction", {"to": RECIPIENT, "value": "0x1"})
    receipt = await mined(stack, tx_hash)
    assert receipt["status"] == "0x1"
    tx = await stack.node.rpc("eth_getTransactionByHash", tx_hash)
    assert tx["from"].lower() == DEV_ADDRESS.lower()
    assert int(tx["maxPriorityFeePerGas"], 16) == GWEI  # the default tip
    assert int(tx["maxFeePerGas"], 16) > GWEI  # base fee headroom on top


async def test_a_transaction_the_node_cannot_estimate_is_refused_naming_gas(
    stack: DevStack, bot: BroadcasterClient
) -> None:
    with pytest.raises(ApiError) as refused:
        # contract creation whose init code is PUSH1 0 PUSH1 0 REVERT
        await bot.request("eth_sendTransaction", {"data": "0x60006000fd"})
    assert refused.value.code == -32602
    assert "gas" in refused.value.message
    assert "could not estimate" in refused.value.message
    manager = stack.service.manager
    assert manager is not None
    assert manager.book.pending_count(DEV_ADDRESS.lower()) == 0  # nothing was booked


async def test_send_raw_transaction_signed_elsewhere_is_tracked_and_mined(
    stack: DevStack, w3: AsyncWeb3[Any], bot: BroadcasterClient
) -> None:
    nonce = await w3.eth.get_transaction_count(OUTSIDE_ADDRESS)  # pass-through to the node
    signed = Account.sign_transaction(
        {
            "type": 2,
            "chainId": 31337,
            "nonce": nonce,
            "to": RECIPIENT,
            "value": 99,
            "gas": 21_000,
            "maxFeePerGas": 3 * GWEI,
            "maxPriorityFeePerGas": GWEI,
        },
        OUTSIDE_KEY,
    )
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    assert tx_hash == signed.hash

    receipt = await mined(stack, tx_hash.to_0x_hex())
    assert receipt["from"].lower() == OUTSIDE_ADDRESS.lower()
    tracked_id = intent_of(stack, tx_hash.to_0x_hex())
    assert tracked_id == f"raw-{signed.hash.hex().removeprefix('0x')}"
    intent = await tracked_as_included(bot, tracked_id)
    assert intent["from"] == OUTSIDE_ADDRESS
    assert intent["hash"] == tx_hash.to_0x_hex()
    assert int(intent["nonce"], 16) == nonce

    # The same bytes again are "already known": same hash, nothing booked twice.
    assert await w3.eth.send_raw_transaction(signed.raw_transaction) == signed.hash

    # Receipts are read through the broadcaster's pass-through.
    through_api = await w3.eth.get_transaction_receipt(tx_hash)
    assert through_api["transactionHash"] == tx_hash
    assert through_api["blockHash"].to_0x_hex() == receipt["blockHash"]
    assert through_api["status"] == 1

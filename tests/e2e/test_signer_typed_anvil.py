"""EIP-7702 and EIP-4844 transactions signed by the real enclave app (real socket, real policy),
mined by real anvil on Prague, reorged out with ``anvil_reorg`` and re-signed at their nonce.

The signer level, below the intent API (``tests/e2e/test_typed_intents.py`` drives intents with
``authorizationList`` / ``blobs`` through the service): what it pins is that the enclave's bytes
are what a Prague node takes and mines, and that the re-sign after a reorg passes the enclave's
nonce protection (+10% for type 4, +100% on all three fees for a blob, a +10% blob bump refused).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broadcaster.tx.blobs import network_form, sidecar
from signer_client import PolicyDenied, SignerClient
from tests.anvil import Anvil, running_anvil
from tests.enclave.running import (
    ALLOWED_DELEGATE,
    ALLOWED_TO,
    ANVIL_ADDRESS,
    OTHER_ADDRESS,
    Enclave,
    running_enclave,
)


@pytest.fixture
def node() -> Iterator[Anvil]:
    # No automine: anvil mines on its own task, so a receipt read right after the send races it.
    # ``evm_mine`` returns once the block is in: every "mined" below is deterministic.
    with running_anvil("--hardfork", "prague", "--no-mining") as anvil:
        yield anvil


@pytest.fixture
def signer(tmp_path: Path) -> Iterator[Enclave]:
    with running_enclave(tmp_path, f"unix://{tmp_path}/e.sock") as enclave:
        yield enclave


def _mined(node: Anvil, tx_hash: bytes) -> dict[str, Any]:
    receipt = node.rpc("eth_getTransactionReceipt", "0x" + tx_hash.hex())
    assert receipt is not None and receipt["status"] == "0x1", receipt
    return receipt  # type: ignore[no-any-return]


def _send(node: Anvil, raw: bytes, expected_hash: bytes) -> None:
    """Send, check the node computes our hash, and mine one block."""
    assert node.rpc("eth_sendRawTransaction", "0x" + raw.hex()) == "0x" + expected_hash.hex()
    node.rpc("evm_mine")


async def test_a_delegation_signed_by_the_enclave_is_mined_reorged_out_and_re_signed(
    node: Anvil, signer: Enclave
) -> None:
    nonce = int(node.rpc("eth_getTransactionCount", ANVIL_ADDRESS, "latest"), 16)
    authority_nonce = int(node.rpc("eth_getTransactionCount", OTHER_ADDRESS, "latest"), 16)
    designator = "0xef0100" + ALLOWED_DELEGATE[2:].lower()
    async with await SignerClient.connect(signer.url) as client:
        auth = await client.sign_authorization(
            {"chainId": 31337, "address": ALLOWED_DELEGATE, "nonce": authority_nonce},
            OTHER_ADDRESS,
        )
        tx: dict[str, Any] = {
            "type": 4, "chainId": 31337, "nonce": nonce, "to": ALLOWED_TO, "value": 0,
            "data": b"", "gas": 100_000, "maxFeePerGas": 10 * 10**9,
            "maxPriorityFeePerGas": 10**9, "accessList": [], "authorizationList": [auth],
        }  # fmt: skip
        first = await client.sign_transaction(tx, ANVIL_ADDRESS)
        _send(node, first.raw, first.hash)
        _mined(node, first.hash)
        assert node.rpc("eth_getCode", OTHER_ADDRESS, "latest") == designator

        node.rpc("anvil_reorg", 1, [])  # the block and its transaction are gone
        assert node.rpc("eth_getTransactionReceipt", "0x" + first.hash.hex()) is None
        assert node.rpc("eth_getCode", OTHER_ADDRESS, "latest") == "0x"

        bumped = {**tx, "maxFeePerGas": 11 * 10**9, "maxPriorityFeePerGas": 11 * 10**8}
        again = await client.sign_transaction(bumped, ANVIL_ADDRESS)
        assert again.hash != first.hash
        _send(node, again.raw, again.hash)
        _mined(node, again.hash)
    assert node.rpc("eth_getCode", OTHER_ADDRESS, "latest") == designator
    assert int(node.rpc("eth_getTransactionCount", OTHER_ADDRESS, "latest"), 16) == (
        authority_nonce + 1  # the authorization consumed the authority's nonce
    )


async def test_a_blob_transaction_is_mined_reorged_out_and_re_signed_at_double_fees(
    node: Anvil, signer: Enclave
) -> None:
    blob = b"".join(b"\0" + i.to_bytes(31, "big") for i in range(4096))
    car = sidecar([blob])
    # anvil 1.7.1, automining: after reorging out block 1 (genesis's child) a new blob tx stayed
    # pending (a 1559 one did not); an empty block first keeps the blob out of block 1.
    node.rpc("evm_mine")
    nonce = int(node.rpc("eth_getTransactionCount", ANVIL_ADDRESS, "latest"), 16)
    tx: dict[str, Any] = {
        "type": 3, "chainId": 31337, "nonce": nonce, "to": ALLOWED_TO, "value": 0, "data": b"",
        "gas": 21_000, "maxFeePerGas": 10 * 10**9, "maxPriorityFeePerGas": 10**9,
        "accessList": [], "maxFeePerBlobGas": 10**9, "blobVersionedHashes": car.versioned_hashes,
    }  # fmt: skip
    async with await SignerClient.connect(signer.url) as client:
        first = await client.sign_transaction(tx, ANVIL_ADDRESS)
        _send(node, network_form(first.raw, car), first.hash)
        receipt = _mined(node, first.hash)
        assert receipt["blobGasUsed"] == hex(131_072)

        node.rpc("anvil_reorg", 1, [])
        assert node.rpc("eth_getTransactionReceipt", "0x" + first.hash.hex()) is None

        doubled = {**tx, "maxFeePerGas": 20 * 10**9, "maxPriorityFeePerGas": 2 * 10**9}
        with pytest.raises(PolicyDenied) as info:  # the blob fee only +10%: geth would refuse it
            await client.sign_transaction(
                {**doubled, "maxFeePerBlobGas": 11 * 10**8}, ANVIL_ADDRESS
            )
        assert info.value.rule == "nonce_conflict"
        again = await client.sign_transaction(
            {**doubled, "maxFeePerBlobGas": 2 * 10**9}, ANVIL_ADDRESS
        )
        _send(node, network_form(again.raw, car), again.hash)
        _mined(node, again.hash)

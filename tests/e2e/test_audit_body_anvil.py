"""The body checker against real anvil blocks: every sender recovered, the transactions root and
the header hash recomputed (broadcaster.audit.body; issue 18)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from broadcaster.audit.body import BodyRefused, check_block
from tests.anvil import DEV_KEY, Anvil

pytestmark = pytest.mark.e2e

OTHER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil's 2nd
TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
GWEI = 10**9


def signed(key: str, nonce: int, kind: int) -> Any:
    tx: dict[str, Any] = {"nonce": nonce, "to": TO, "value": nonce + 1, "gas": 60_000,
                          "chainId": 31337, "data": b"\x01\x02" * (nonce % 3)}  # fmt: skip
    if kind == 0:
        tx["gasPrice"] = 3 * GWEI
    elif kind == 1:
        tx.update(type=1, gasPrice=3 * GWEI, accessList=[{"address": TO, "storageKeys": [
            "0x" + "00" * 31 + "01"]}])  # fmt: skip
    else:
        tx.update(type=2, maxFeePerGas=3 * GWEI, maxPriorityFeePerGas=GWEI)
    return Account.sign_transaction(tx, key)


def mined_block(anvil: Anvil, raws: list[str]) -> dict[str, Any]:
    anvil.rpc("evm_setAutomine", False)
    for raw in raws:
        anvil.rpc("eth_sendRawTransaction", raw)
    anvil.rpc("evm_mine")
    block: dict[str, Any] = anvil.rpc("eth_getBlockByNumber", "latest", True)
    assert len(block["transactions"]) == len(raws)
    return block


def test_a_real_block_of_130_mixed_transactions_verifies_and_every_sender_is_recovered(
    anvil: Anvil,
) -> None:
    """130 transactions (legacy EIP-155, EIP-2930 and EIP-1559, two senders) in one anvil
    block: more than 128 keys, so the trie holds ``rlp(128) = 0x8180`` next to the one-byte
    keys. The recomputed root equals anvil's ``transactionsRoot``; the senders are the signers'."""
    ours = Account.from_key(DEV_KEY).address.lower()
    other = Account.from_key(OTHER_KEY).address.lower()
    txs = [signed(DEV_KEY, n, n % 3) for n in range(70)]
    txs += [signed(OTHER_KEY, n, (n + 1) % 3) for n in range(60)]
    block = mined_block(anvil, ["0x" + t.raw_transaction.hex() for t in txs])
    checked = check_block(block, block["hash"])
    assert checked.verified
    senders = {("0x" + tx.hash.hex()): tx.sender for tx in checked.block.txs}
    want = {"0x" + t.hash.hex(): (ours if i < 70 else other) for i, t in enumerate(txs)}
    assert senders == want


def test_an_empty_block_a_one_transaction_block_and_an_eip7702_block_verify(
    anvil: Anvil,
) -> None:
    """The empty trie's root; a single leaf; a type-4 (EIP-7702) transaction with its signed
    authorization list (anvil's default hardfork, Prague, takes it)."""
    anvil.rpc("evm_mine")
    empty = anvil.rpc("eth_getBlockByNumber", "latest", True)
    assert check_block(empty, empty["hash"]).verified
    block = mined_block(anvil, ["0x" + signed(DEV_KEY, 0, 2).raw_transaction.hex()])
    assert check_block(block, block["hash"]).verified
    auth = Account.sign_authorization({"chainId": 31337, "address": TO, "nonce": 0}, OTHER_KEY)
    set_code = Account.sign_transaction(
        {"type": 4, "chainId": 31337, "nonce": 1, "to": TO, "value": 0, "gas": 100_000,
         "maxFeePerGas": 3 * GWEI, "maxPriorityFeePerGas": GWEI, "data": b"",
         "authorizationList": [auth]},
        DEV_KEY,
    )  # fmt: skip
    block = mined_block(anvil, ["0x" + set_code.raw_transaction.hex()])
    assert block["transactions"][0]["type"] == "0x4"
    checked = check_block(block, block["hash"])
    assert checked.verified
    assert checked.block.txs[0].sender == Account.from_key(DEV_KEY).address.lower()


def test_a_real_block_with_one_transaction_changed_added_or_dropped_is_refused(
    anvil: Anvil,
) -> None:
    """The liar's edits to a real block, each caught: a ``from`` rewritten is ignored (the
    sender is recovered), a transaction added with a consistent hash and signature breaks the
    root, one dropped breaks the root, a value changed breaks its hash, a header field changed
    breaks the header hash."""
    block = mined_block(
        anvil, ["0x" + signed(DEV_KEY, n, 2).raw_transaction.hex() for n in range(3)]
    )
    ours = Account.from_key(DEV_KEY).address.lower()

    relabelled = {**block, "transactions": [{**t, "from": TO} for t in block["transactions"]]}
    checked = check_block(relabelled, block["hash"])
    assert checked.verified and {t.sender for t in checked.block.txs} == {ours}

    # An injected tx, consistent in itself (another key's, labelled as ours).
    other = signed(OTHER_KEY, 0, 2)
    planted = {**block["transactions"][0], "hash": "0x" + other.hash.hex(), "from": ours,
               "r": hex(other.r), "s": hex(other.s), "yParity": hex(other.v),
               "v": hex(other.v), "nonce": "0x0", "value": "0x1", "input": "0x"}  # fmt: skip
    cases = {
        "transactions_root": {**block, "transactions": [*block["transactions"], planted]},
        "transactions_root ": {**block, "transactions": block["transactions"][:2]},
        "tx_hash": {**block, "transactions": [
            {**block["transactions"][0], "value": "0x999"}, *block["transactions"][1:]]},
        "header_hash": {**block, "gasUsed": hex(int(block["gasUsed"], 16) + 1)},
    }  # fmt: skip
    for reason, answer in cases.items():
        with pytest.raises(BodyRefused) as refused:
            check_block(answer, block["hash"])
        assert refused.value.reason == reason.strip(), reason


def test_an_anvil_block_with_a_blob_transaction_verifies(anvil: Anvil) -> None:
    """anvil's ``transactionsRoot`` over a blob transaction is the trie of its *network* form
    (the sidecar its block object lists): accepted only because it is exactly the header's root
    (the inclusion scan proves a blob intent's block with it; issue 18)."""
    from broadcaster.tx.blobs import BLOB_SIZE, network_form, sidecar

    car = sidecar([b"\x00" * BLOB_SIZE])
    tx = Account.sign_transaction(
        {"type": 3, "chainId": 31337, "nonce": 0, "to": TO, "value": 0, "gas": 50_000,
         "maxFeePerGas": 10 * GWEI, "maxPriorityFeePerGas": GWEI, "maxFeePerBlobGas": 10 * GWEI,
         "blobVersionedHashes": list(car.versioned_hashes)},
        DEV_KEY,
    )  # fmt: skip
    anvil.rpc("evm_setAutomine", False)
    raw = network_form(bytes(tx.raw_transaction), car)
    anvil.rpc("eth_sendRawTransaction", "0x" + raw.hex(), timeout=90)
    anvil.rpc("evm_mine")
    block: dict[str, Any] = anvil.rpc("eth_getBlockByNumber", "latest", True)
    checked = check_block(block, block["hash"])
    assert checked.verified and checked.block.txs[0].hash == bytes(tx.hash)
    tampered = {
        **block,
        "transactions": [{**block["transactions"][0], "proofs": ["0x" + "c0" + "11" * 47]}],
    }
    with pytest.raises(BodyRefused, match="transactions_root"):
        check_block(tampered, block["hash"])

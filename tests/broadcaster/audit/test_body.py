"""The body checker's pure parts: a sender recovered from each transaction type's signature, as
an RPC lists it (the trie and header checks against real anvil blocks are in
tests/e2e/test_audit_body_anvil.py)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from broadcaster.audit.body import BodyRefused, ordered_trie_root, recovered_tx
from broadcaster.dev.rpc_objects import tx_object
from signer_client.txcodec import decode_raw

KEY = "0x" + "42" * 32
SENDER = Account.from_key(KEY).address.lower()
TO = "0x" + "33" * 20


def rpc_object(signed: Any) -> dict[str, Any]:
    """What ``eth_getBlockByHash(h, true)`` lists for ``signed`` (geth's field names), with a
    ``from`` that lies: the checker must not read it."""
    raw = bytes(signed.raw_transaction)
    decoded = decode_raw(raw)
    out = tx_object(decoded, "0x" + bytes(signed.hash).hex()) | {"from": "0x" + "ee" * 20}
    if decoded.fields.type >= 2:
        out["gasPrice"] = "0x7"  # geth's effective price of a mined tx: not a signed field
    return out


BASE: dict[str, Any] = {"nonce": 3, "gas": 90_000, "to": TO, "value": 5, "data": b"\x01\x02"}
FEES = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
CASES: dict[str, dict[str, Any]] = {
    "legacy, no chain id": {**BASE, "gasPrice": 10**9},
    "legacy EIP-155": {**BASE, "gasPrice": 10**9, "chainId": 1},
    "legacy contract creation": {**BASE, "to": None, "gasPrice": 10**9, "chainId": 1},
    "EIP-2930": {**BASE, "type": 1, "gasPrice": 10**9, "chainId": 1,
                 "accessList": [{"address": TO, "storageKeys": ["0x" + "00" * 31 + "07"]}]},
    "EIP-1559": {**BASE, "type": 2, "chainId": 1, **FEES},
    "EIP-4844": {**BASE, "type": 3, "chainId": 1, **FEES, "maxFeePerBlobGas": 10**9,
                 "blobVersionedHashes": ["0x01" + "ab" * 31]},
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_the_sender_is_recovered_from_the_signature_not_read_from_the_rpc(case: str) -> None:
    signed = Account.sign_transaction(CASES[case], KEY)
    tx, encoding = recovered_tx(rpc_object(signed))
    assert tx.sender == SENDER  # not the "from" the object claims
    assert tx.hash == bytes(signed.hash) and tx.nonce == 3
    assert encoding == bytes(signed.raw_transaction)


def test_an_eip7702_transaction_s_sender_is_recovered() -> None:
    auth = Account.sign_authorization({"chainId": 1, "address": TO, "nonce": 0}, "0x" + "43" * 32)
    signed = Account.sign_transaction(
        {**BASE, "type": 4, "chainId": 1, **FEES, "authorizationList": [auth]}, KEY
    )
    tx, _ = recovered_tx(rpc_object(signed))
    assert tx.sender == SENDER and tx.hash == bytes(signed.hash)


def test_fields_that_do_not_encode_to_the_hash_or_a_bad_signature_are_refused() -> None:
    good = rpc_object(Account.sign_transaction(CASES["EIP-1559"], KEY))
    for change, reason in (
        ({"value": "0x6"}, "tx_hash"),
        ({"to": "0x" + "44" * 20}, "tx_hash"),
        ({"s": "0x0"}, "signature"),
        ({"yParity": "0x2"}, "signature"),
        ({"nonce": "three"}, "malformed"),
        ({"maxFeePerGas": None}, "malformed"),
    ):
        with pytest.raises(BodyRefused) as refused:
            recovered_tx({**good, **change})
        assert refused.value.reason == reason, change
    with pytest.raises(BodyRefused) as refused:
        recovered_tx("0x" + "11" * 32)  # a hash: the block was asked for without objects
    assert refused.value.reason == "malformed"


def test_the_empty_trie_root_is_the_one_every_empty_block_names() -> None:
    assert ordered_trie_root([]).hex() == (
        "56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"
    )

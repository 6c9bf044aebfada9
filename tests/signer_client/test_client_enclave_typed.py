"""Types 3 and 4 and authorizations through the real enclave app over a real socket, with its
real policy (``tests/enclave/running.py``: one allowed delegate, a blob fee cap)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from eth_account import Account

from signer_client import PolicyDenied, SignerClient
from signer_client.errors import ReplyVerificationError
from tests.enclave.running import (
    ALLOWED_DELEGATE,
    ALLOWED_TO,
    ANVIL_ADDRESS,
    ANVIL_KEY,
    OTHER_ADDRESS,
    OTHER_KEY,
    Enclave,
)

_nonces = itertools.count(5000)


def typed(tx_type: int, **overrides: Any) -> dict[str, Any]:
    tx: dict[str, Any] = {
        "type": tx_type, "chainId": 31337, "nonce": next(_nonces), "to": ALLOWED_TO,
        "value": 0, "data": b"\x12\x34", "gas": 100000, "maxFeePerGas": 30 * 10**9,
        "maxPriorityFeePerGas": 2 * 10**9, "accessList": [],
    }  # fmt: skip
    if tx_type == 3:
        tx.update(maxFeePerBlobGas=10**9, blobVersionedHashes=["0x01" + "ab" * 31])
    tx.update(overrides)
    return tx


async def test_sign_authorization_returns_eth_accounts_signed_item_checked_against_the_sender(
    enclave: Enclave,
) -> None:
    request = {"chainId": 31337, "address": ALLOWED_DELEGATE, "nonce": next(_nonces)}
    async with await SignerClient.connect(enclave.url) as client:
        signed = await client.sign_authorization(request, OTHER_ADDRESS)
    expected = Account.sign_authorization(request, OTHER_KEY)
    assert (signed.chain_id, signed.address, signed.nonce) == (
        expected.chain_id, expected.address, expected.nonce,
    )  # fmt: skip
    assert (signed.y_parity, signed.r, signed.s) == (expected.y_parity, expected.r, expected.s)
    assert signed.authorization_hash == bytes(expected.authorization_hash)
    assert signed.authority == bytes.fromhex(OTHER_ADDRESS[2:]) == expected.authority
    assert signed.as_dict()["address"] == ALLOWED_DELEGATE


async def test_a_type_4_with_the_enclaves_authorization_and_a_type_3_sign_as_eth_account(
    enclave: Enclave,
) -> None:
    async with await SignerClient.connect(enclave.url) as client:
        authorization = await client.sign_authorization(
            {"chainId": 31337, "address": ALLOWED_DELEGATE, "nonce": 0}, OTHER_ADDRESS
        )
        for request in (typed(4, authorizationList=[authorization]), typed(3)):
            signed = await client.sign_transaction(request, ANVIL_ADDRESS)
            expected = Account.sign_transaction(
                {**request, "authorizationList": [authorization.as_dict()]}
                if request["type"] == 4 else request,
                ANVIL_KEY,
            )  # fmt: skip
            assert signed.raw == bytes(expected.raw_transaction)
            assert signed.tx_type == request["type"]


async def test_the_enclave_refuses_a_delegation_outside_its_list_and_a_blob_fee_above_its_cap(
    enclave: Enclave,
) -> None:
    wrong = "0x" + "66" * 20
    foreign = Account.sign_authorization(
        {"chainId": 31337, "address": wrong, "nonce": 0}, OTHER_KEY
    )
    async with await SignerClient.connect(enclave.url) as client:
        with pytest.raises(PolicyDenied) as info:
            await client.sign_authorization(
                {"chainId": 31337, "address": wrong, "nonce": 0}, OTHER_ADDRESS
            )
        assert info.value.rule == "delegate_not_allowed"
        with pytest.raises(PolicyDenied) as info:
            await client.sign_authorization(
                {"chainId": 0, "address": ALLOWED_DELEGATE, "nonce": 0}, OTHER_ADDRESS
            )
        assert info.value.rule == "chain_id"
        with pytest.raises(PolicyDenied) as info:
            await client.sign_transaction(typed(4, authorizationList=[foreign]), ANVIL_ADDRESS)
        assert info.value.rule == "delegate_not_allowed"
        with pytest.raises(PolicyDenied) as info:
            await client.sign_transaction(typed(3, maxFeePerBlobGas=10**11 + 1), ANVIL_ADDRESS)
        assert info.value.rule == "blob_fee_cap"


def test_an_authorization_reply_by_another_key_or_over_another_request_is_refused() -> None:
    from signer_client.verify import ReplyVerifier

    chain, delegate, nonce = 31337, bytes.fromhex(ALLOWED_DELEGATE[2:]), 4
    sender = bytes.fromhex(ANVIL_ADDRESS[2:])
    good = Account.sign_authorization(
        {"chainId": chain, "address": ALLOWED_DELEGATE, "nonce": nonce}, ANVIL_KEY
    )
    sig = good.r.to_bytes(32, "big") + good.s.to_bytes(32, "big") + bytes((good.y_parity,))
    verifier = ReplyVerifier()
    assert (
        verifier.verify_authorization(chain, delegate, nonce, sender, "0x" + sig.hex()).r == good.r
    )
    by_other = Account.sign_authorization(
        {"chainId": chain, "address": ALLOWED_DELEGATE, "nonce": nonce}, OTHER_KEY
    )
    other_sig = (
        by_other.r.to_bytes(32, "big")
        + by_other.s.to_bytes(32, "big")
        + bytes((by_other.y_parity,))
    )
    high_s = sig[:32] + (0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141 - good.s
                         ).to_bytes(32, "big") + bytes((1 - good.y_parity,))  # fmt: skip
    for bad, check in [
        (other_sig, "sender"),  # someone else's key
        (sig, "sender"),  # checked below against another nonce: the signer swapped the request
        (high_s, "low_s"),
        (sig[:64] + b"\x02", "signature"),
        (sig[:10], "format"),
    ]:
        asked_nonce = nonce + 1 if bad is sig else nonce
        with pytest.raises(ReplyVerificationError) as info:
            verifier.verify_authorization(chain, delegate, asked_nonce, sender, "0x" + bad.hex())
        assert info.value.check == check

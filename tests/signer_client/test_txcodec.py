"""The fast encoders are byte-identical to eth-account, proven over random transactions."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer_client.errors import TxDecodeError, TxFieldError
from signer_client.rlp import decode, encode_bytes, encode_int, encode_list_payload
from signer_client.signing import LocalKey, to_checksum_address
from signer_client.txcodec import decode_raw, signing_hash, tx_from_dict, tx_to_wire

ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"

uint256 = st.integers(min_value=0, max_value=2**256 - 1)
uint64 = st.integers(min_value=0, max_value=2**64 - 1)
small = st.integers(min_value=0, max_value=2**40)
quantity = st.one_of(small, uint256)
address = st.binary(min_size=20, max_size=20).map(to_checksum_address)
access_list = st.lists(
    st.fixed_dictionaries(
        {
            "address": address,
            "storageKeys": st.lists(
                st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex()), max_size=3
            ),
        }
    ),
    max_size=3,
)
keys = st.binary(min_size=32, max_size=32).filter(
    lambda b: 0 < int.from_bytes(b, "big") < 2**256 - 2**129
)


@st.composite
def transactions(draw: st.DrawFn) -> dict[str, Any]:
    tx_type = draw(st.sampled_from([0, 1, 2]))
    tx: dict[str, Any] = {
        "nonce": draw(st.one_of(small, uint64)),
        "gas": draw(st.one_of(st.integers(21000, 30_000_000), uint64)),
        "value": draw(quantity),
        "data": draw(st.binary(max_size=300)),
    }
    to = draw(st.one_of(st.none(), address))
    if to is not None:
        tx["to"] = to
    chain_id = draw(st.one_of(st.integers(1, 2**32), st.integers(1, 2**63)))
    if tx_type == 2:
        tx.update(
            type=2,
            chainId=chain_id,
            maxFeePerGas=draw(quantity),
            maxPriorityFeePerGas=draw(quantity),
            accessList=draw(access_list),
        )
    elif tx_type == 1:
        tx.update(type=1, chainId=chain_id, gasPrice=draw(quantity), accessList=draw(access_list))
    else:
        tx["gasPrice"] = draw(quantity)
        if draw(st.booleans()):
            tx["chainId"] = chain_id
    return tx


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tx=transactions(), key=keys)
def test_signing_matches_eth_account_byte_for_byte(tx: dict[str, Any], key: bytes) -> None:
    expected = Account.sign_transaction(tx, key)
    local = LocalKey(key)
    signed = local.sign(tx_from_dict(tx))
    assert signed.raw == bytes(expected.raw_transaction)
    assert signed.hash == bytes(expected.hash)
    assert signed.sender == Account.from_key(key).address


@settings(max_examples=300, deadline=None)
@given(tx=transactions())
def test_decoding_a_signed_transaction_gives_back_the_request(tx: dict[str, Any]) -> None:
    fields = tx_from_dict(tx)
    raw = LocalKey(ANVIL_KEY).sign(fields).raw
    decoded = decode_raw(raw)
    assert decoded.fields == fields
    assert decode_raw(bytes(Account.sign_transaction(tx, ANVIL_KEY).raw_transaction)) == decoded


@settings(max_examples=200, deadline=None)
@given(tx=transactions())
def test_the_wire_form_round_trips_to_the_same_fields(tx: dict[str, Any]) -> None:
    fields = tx_from_dict(tx)
    assert tx_from_dict(tx_to_wire(fields)) == fields


@settings(max_examples=200, deadline=None)
@given(tx=transactions())
def test_the_signing_hash_is_what_eth_account_signs(tx: dict[str, Any]) -> None:
    signed = Account.sign_transaction(tx, ANVIL_KEY)
    recovered = Account.recover_transaction(signed.raw_transaction)
    assert recovered == ANVIL_ADDRESS
    # Re-derive the hash from the decoded fields and check the signature verifies over it.
    decoded = decode_raw(bytes(signed.raw_transaction))
    from signer_client.signing import recover_pubkey

    pub = recover_pubkey(signing_hash(decoded.fields), decoded.y_parity, decoded.r, decoded.s)
    assert pub == LocalKey(ANVIL_KEY).public_key


@given(
    payload=st.recursive(st.binary(max_size=80), lambda c: st.lists(c, max_size=5), max_leaves=20)
)
def test_rlp_decode_inverts_encode(payload: Any) -> None:
    def enc(item: Any) -> bytes:
        if isinstance(item, bytes):
            return encode_bytes(item)
        return encode_list_payload(b"".join(enc(i) for i in item))

    assert decode(enc(payload)) == payload


@given(value=uint256)
def test_integers_encode_without_leading_zeros(value: int) -> None:
    import rlp

    assert encode_int(value) == rlp.encode(value)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x02",
        b"\x03\xc0",
        b"\x02\xc1\x80",
        bytes.fromhex("81" + "05"),  # non-canonical single byte
        bytes.fromhex("c9808080808080808080") + b"\x00",  # trailing byte
    ],
)
def test_malformed_raw_transactions_are_rejected(raw: bytes) -> None:
    with pytest.raises(TxDecodeError):
        decode_raw(raw)


@pytest.mark.parametrize(
    ("tx", "field"),
    [
        (
            {"type": 2, "chainId": 1, "nonce": 0, "gas": 21000, "maxFeePerGas": 1},
            "maxPriorityFeePerGas",
        ),
        ({"chainId": 1, "nonce": 0, "gas": 21000, "gasPrice": 1, "to": "0x12"}, "to"),
        ({"chainId": 1, "nonce": -1, "gas": 21000, "gasPrice": 1}, "nonce"),
        ({"chainId": 1, "nonce": 0, "gas": 1, "gasPrice": 1, "blobs": []}, "blobs"),
        ({"type": 2, "chainId": 1, "nonce": 0, "gas": 1, "gasPrice": 1}, "gasPrice"),
    ],
)
def test_malformed_request_dicts_name_the_bad_field(tx: dict[str, Any], field: str) -> None:
    with pytest.raises(TxFieldError) as info:
        tx_from_dict(tx)
    assert info.value.field == field

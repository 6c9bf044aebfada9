"""Types 3 (EIP-4844) and 4 (EIP-7702) and authorizations: byte-identical to eth-account, proven
over random transactions; decoded strictly, both as signed bytes and as signing payloads."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer_client.authorization import authorization_hash
from signer_client.errors import TxDecodeError, TxFieldError
from signer_client.payload import decode_payload, split_signed
from signer_client.signing import LocalKey, signed_from_raw
from signer_client.txcodec import (
    body_items,
    decode_raw,
    signing_payload,
    tx_from_dict,
    tx_to_wire,
)
from tests.signer_client.test_txcodec import (
    ANVIL_ADDRESS,
    ANVIL_KEY,
    access_list,
    address,
    keys,
    quantity,
    small,
    uint64,
    uint256,
)

blob_hash = st.binary(min_size=31, max_size=31).map(lambda b: "0x01" + b.hex())
unsigned_authorization = st.fixed_dictionaries(
    {"chainId": st.one_of(small, uint256), "address": address, "nonce": st.one_of(small, uint64)}
)


@st.composite
def authorizations(draw: st.DrawFn) -> Any:
    """A signed authorization in one of the forms eth-account takes: its own signed object, or
    the dict; signed for real by a random key, or with arbitrary (y, r, s)."""
    unsigned = draw(unsigned_authorization)
    if draw(st.booleans()):
        signed = Account.sign_authorization(unsigned, draw(keys))
        return signed if draw(st.booleans()) else {
            **unsigned, "yParity": signed.y_parity, "r": signed.r, "s": signed.s,
        }  # fmt: skip
    return {
        **unsigned,
        "yParity": draw(st.integers(0, 1)),
        "r": draw(st.integers(1, 2**256 - 1)),
        "s": draw(st.integers(1, 2**256 - 1)),
    }


@st.composite
def typed_transactions(draw: st.DrawFn) -> dict[str, Any]:
    tx_type = draw(st.sampled_from([3, 4]))
    tx: dict[str, Any] = {
        "type": tx_type,
        "chainId": draw(st.one_of(st.integers(1, 2**32), st.integers(1, 2**63))),
        "nonce": draw(st.one_of(small, uint64)),
        "gas": draw(st.one_of(st.integers(21000, 30_000_000), uint64)),
        "to": draw(address),
        "value": draw(quantity),
        "data": draw(st.binary(max_size=300)),
        "maxFeePerGas": draw(quantity),
        "maxPriorityFeePerGas": draw(quantity),
        "accessList": draw(access_list),
    }
    if tx_type == 3:
        tx["maxFeePerBlobGas"] = draw(quantity)
        tx["blobVersionedHashes"] = draw(st.lists(blob_hash, min_size=1, max_size=6))
    else:
        tx["authorizationList"] = draw(st.lists(authorizations(), min_size=1, max_size=4))
    return tx


_settings = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(tx=typed_transactions(), key=keys)
def test_types_3_and_4_sign_byte_for_byte_as_eth_account(tx: dict[str, Any], key: bytes) -> None:
    expected = Account.sign_transaction(tx, key)
    signed = LocalKey(key).sign(tx_from_dict(tx))
    assert signed.raw == bytes(expected.raw_transaction)
    assert signed.hash == bytes(expected.hash)
    assert signed.sender == Account.from_key(key).address


@_settings
@given(tx=typed_transactions())
def test_a_signed_type_3_or_4_decodes_back_to_the_request_and_its_sender(
    tx: dict[str, Any],
) -> None:
    fields = tx_from_dict(tx)
    theirs = bytes(Account.sign_transaction(tx, ANVIL_KEY).raw_transaction)
    assert decode_raw(theirs).fields == fields
    assert decode_raw(LocalKey(ANVIL_KEY).sign(fields).raw) == decode_raw(theirs)
    decoded, signed = signed_from_raw(theirs)
    assert decoded == fields and signed.sender == ANVIL_ADDRESS
    assert tx_from_dict(tx_to_wire(fields)) == fields


@_settings
@given(tx=typed_transactions())
def test_the_enclave_reads_back_exactly_the_fields_of_a_type_3_or_4_payload(
    tx: dict[str, Any],
) -> None:
    fields = tx_from_dict(tx)
    body = body_items(fields)
    assert decode_payload(signing_payload(fields, body)) == (fields, body)
    raw = LocalKey(ANVIL_KEY).sign(fields).raw
    assert split_signed(raw, fields, body) is not None


@_settings
@given(tx=typed_transactions(), data=st.data())
def test_a_mutated_type_3_or_4_payload_is_refused_or_is_the_canonical_encoding_of_what_it_says(
    tx: dict[str, Any], data: st.DataObject
) -> None:
    payload = bytearray(signing_payload(tx_from_dict(tx)))
    at = data.draw(st.integers(1, len(payload) - 1))
    payload[at] = data.draw(st.integers(0, 255))
    try:
        fields, body = decode_payload(bytes(payload))
    except TxDecodeError:
        return
    assert signing_payload(fields, body) == bytes(payload)


@settings(max_examples=200, deadline=None)
@given(unsigned=unsigned_authorization, key=keys)
def test_an_authorization_signs_as_eth_account_sign_authorization(
    unsigned: dict[str, Any], key: bytes
) -> None:
    expected = Account.sign_authorization(unsigned, key)
    address_bytes = bytes.fromhex(unsigned["address"][2:])
    msg_hash = authorization_hash(unsigned["chainId"], address_bytes, unsigned["nonce"])
    assert msg_hash == bytes(expected.authorization_hash)
    sig = LocalKey(key).sign_hash(msg_hash)
    assert (int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]) == (
        expected.r,
        expected.s,
        expected.y_parity,
    )


BASE3: dict[str, Any] = {
    "type": 3, "chainId": 1, "nonce": 0, "gas": 21000, "to": "0x" + "22" * 20,
    "maxFeePerGas": 1, "maxPriorityFeePerGas": 1, "maxFeePerBlobGas": 1,
    "blobVersionedHashes": ["0x01" + "33" * 31],
}  # fmt: skip
AUTH = {"chainId": 1, "address": "0x" + "11" * 20, "nonce": 0, "yParity": 0, "r": 1, "s": 1}
BASE4: dict[str, Any] = {
    **{k: v for k, v in BASE3.items() if k not in ("maxFeePerBlobGas", "blobVersionedHashes")},
    "type": 4, "authorizationList": [AUTH],
}  # fmt: skip


@pytest.mark.parametrize(
    ("tx", "field"),
    [
        ({**BASE3, "to": None}, "to"),
        ({**BASE4, "to": None}, "to"),
        ({**BASE3, "blobVersionedHashes": []}, "blobVersionedHashes"),
        ({**BASE3, "blobVersionedHashes": ["0x02" + "33" * 31]}, "blobVersionedHashes[0]"),
        ({**BASE3, "blobVersionedHashes": ["0x01" + "33" * 30]}, "blobVersionedHashes[0]"),
        ({k: v for k, v in BASE3.items() if k != "maxFeePerBlobGas"}, "maxFeePerBlobGas"),
        ({**BASE4, "authorizationList": []}, "authorizationList"),
        ({**BASE4, "authorizationList": [{**AUTH, "yParity": 2}]}, "authorizationList[0].yParity"),
        ({**BASE4, "authorizationList": [{**AUTH, "address": "0x11"}]},
         "authorizationList[0].address"),
        ({**BASE4, "authorizationList": [{**AUTH, "nonce": 2**64}]}, "authorizationList[0].nonce"),
        ({**BASE4, "type": 2}, "authorizationList"),
        ({**BASE3, "type": 2}, "maxFeePerBlobGas"),
        ({**BASE3, "type": 5}, "type"),
    ],
)  # fmt: skip
def test_malformed_type_3_and_4_requests_name_the_bad_field(tx: dict[str, Any], field: str) -> None:
    with pytest.raises(TxFieldError) as info:
        tx_from_dict(tx)
    assert info.value.field == field


def test_the_type_is_inferred_from_blob_or_authorization_fields_as_eth_account_does() -> None:
    assert tx_from_dict({k: v for k, v in BASE3.items() if k != "type"}).type == 3
    assert tx_from_dict({k: v for k, v in BASE4.items() if k != "type"}).type == 4

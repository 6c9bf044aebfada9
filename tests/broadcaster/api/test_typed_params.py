"""Intent params of blob (type 3) and set-code (type 4) transactions: what is accepted, and that
every bad one is a ``ParamError`` naming the field (the API's ``-32602``)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from broadcaster.api.intents import IntentDefaults, ParamError, idempotency_conflict, parse_intent
from broadcaster.tx.blobs import BLOB_SIZE
from nonce import AuthItem

SENDER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
SENDER = Account.from_key(SENDER_KEY).address.lower()
OTHER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
OTHER = Account.from_key(OTHER_KEY).address.lower()
DELEGATE = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
TO = "0x" + "22" * 20
DEFAULTS = IntentDefaults(chain_id=31337, accounts=[SENDER])
BASE: dict[str, Any] = {"to": TO, "gas": 100_000, "maxFeePerGas": 10, "maxPriorityFeePerGas": 1}
BLOB = "0x" + b"".join(b"\0" + i.to_bytes(31, "big") for i in range(4096)).hex()


def _signed(key: str = OTHER_KEY, chain_id: int = 31337, nonce: int = 5) -> dict[str, Any]:
    auth = Account.sign_authorization(
        {"chainId": chain_id, "address": DELEGATE, "nonce": nonce}, key
    )
    return {"chainId": hex(chain_id), "address": DELEGATE, "nonce": hex(nonce),
            "yParity": hex(auth.y_parity), "r": hex(auth.r), "s": hex(auth.s)}  # fmt: skip


def _error(params: dict[str, Any]) -> ParamError:
    with pytest.raises(ParamError) as caught:
        parse_intent(params, DEFAULTS)
    return caught.value


def test_an_authorization_to_sign_becomes_a_type_4_self_sponsored_intent_of_two_nonces() -> None:
    intent = parse_intent({**BASE, "authorizationList": [{"address": DELEGATE}]}, DEFAULTS)
    assert intent.tx_type == 4
    assert intent.authorizations == (AuthItem(31337, DELEGATE),)
    assert intent.nonce_span == 2


def test_a_pre_signed_authorization_is_kept_with_its_signature_and_costs_one_nonce() -> None:
    item = _signed()
    intent = parse_intent({**BASE, "authorizationList": [{**item, "authority": OTHER}]}, DEFAULTS)
    [auth] = intent.authorizations
    assert (auth.chain_id, auth.address, auth.nonce) == (31337, DELEGATE, 5)
    assert auth.signature == (int(item["yParity"], 16), int(item["r"], 16), int(item["s"], 16))
    assert intent.nonce_span == 1


def test_a_blob_intent_carries_its_blobs_and_blob_fee() -> None:
    intent = parse_intent({**BASE, "blobs": [BLOB], "maxFeePerBlobGas": "0x7"}, DEFAULTS)
    assert intent.tx_type == 3
    assert intent.blobs == (bytes.fromhex(BLOB[2:]),)
    assert intent.max_fee_per_blob_gas == 7


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"blobs": ["0x00"]}, "blobs[0]", f"exactly {BLOB_SIZE} bytes, got 1"),
        ({"blobs": [BLOB] * 7}, "blobs", "at most 6"),
        ({"blobs": []}, "blobs", "1 to 6"),
        ({"blobs": ["0x" + "ff" * BLOB_SIZE]}, "blobs[0]", "BLS modulus"),
        ({"blobs": ["zz"]}, "blobs[0]", "hex"),
        ({"maxFeePerBlobGas": None}, "maxFeePerBlobGas", "required"),
        ({"to": None}, "to", "create no contracts"),
        ({"type": 2}, "type", "takes blobs"),
        ({"gasPrice": 5, "maxFeePerGas": None, "maxPriorityFeePerGas": None}, "gasPrice", ""),
        ({"authorizationList": [{"address": DELEGATE}]}, "authorizationList", "not both"),
    ],
)
def test_a_bad_blob_intent_names_the_field(change: dict[str, Any], field: str, words: str) -> None:
    params = {**BASE, "blobs": [BLOB], "maxFeePerBlobGas": 7, **change}
    error = _error({k: v for k, v in params.items() if v is not None})
    assert error.field == field, error
    assert words in error.reason, error


@pytest.mark.parametrize(
    ("item", "field", "words"),
    [
        ({"address": DELEGATE, "nonce": 1}, "authorizationList[0].nonce", "nonce + 1"),
        ({"address": DELEGATE, "chainId": 1}, "authorizationList[0].chainId", "chain is 31337"),
        ({"address": "0x12"}, "authorizationList[0].address", "20-byte"),
        ({"address": DELEGATE, "extra": 1}, "authorizationList[0].extra", "unknown field"),
        ({**_signed(), "authority": SENDER}, "authorizationList[0].authority", "mismatch"),
        (_signed(SENDER_KEY), "authorizationList[0]", "signed by the sender itself"),
        (_signed(chain_id=1), "authorizationList[0].chainId", "chain is 31337"),
        ({**_signed(), "s": hex(2**255)}, "authorizationList[0].s", "low-s"),
        ({**_signed(), "yParity": "0x2"}, "authorizationList[0].yParity", "0 or 1"),
        ({k: v for k, v in _signed().items() if k != "nonce"}, "authorizationList[0].nonce",
         "required"),
        ("nope", "authorizationList[0]", "expected an object"),
    ],
)  # fmt: skip
def test_a_bad_authorization_names_the_field(item: Any, field: str, words: str) -> None:
    error = _error({**BASE, "authorizationList": [item]})
    assert error.field == field, error
    assert words in error.reason, error


def test_two_authorizations_for_the_enclave_are_refused() -> None:
    error = _error({**BASE, "authorizationList": [{"address": DELEGATE}] * 2})
    assert error.field == "authorizationList"
    assert "at most one" in error.reason


def test_a_chain_id_0_authorization_is_taken_when_asked_for() -> None:
    intent = parse_intent(
        {**BASE, "authorizationList": [{"address": DELEGATE, "chainId": 0}]}, DEFAULTS
    )
    assert intent.authorizations[0].chain_id == 0


def test_a_blob_fee_on_a_1559_intent_is_refused() -> None:
    error = _error({**BASE, "maxFeePerBlobGas": 1})
    assert error.field == "maxFeePerBlobGas"


def test_a_retry_with_other_blobs_or_authorizations_is_an_idempotency_conflict() -> None:
    blob = {**BASE, "key": "k", "blobs": [BLOB], "maxFeePerBlobGas": 7}
    other = "0x" + "00" * (BLOB_SIZE - 1) + "01"
    first = parse_intent(blob, DEFAULTS)
    assert idempotency_conflict(blob, parse_intent(blob, DEFAULTS), first) is None
    again = {**blob, "blobs": [other]}
    assert idempotency_conflict(again, parse_intent(again, DEFAULTS), first) == "blobs"
    fee = {**blob, "maxFeePerBlobGas": 8}
    assert idempotency_conflict(fee, parse_intent(fee, DEFAULTS), first) == "maxFeePerBlobGas"
    auth = {**BASE, "key": "k", "authorizationList": [{"address": DELEGATE}]}
    moved = {**auth, "authorizationList": [{"address": TO}]}
    assert (
        idempotency_conflict(moved, parse_intent(moved, DEFAULTS), parse_intent(auth, DEFAULTS))
        == "authorizationList"
    )


def test_an_authorization_pre_signed_by_another_account_of_this_broadcaster_is_refused() -> None:
    """A tenant that may send only from SENDER cannot delegate OTHER (another tenant's account,
    or our own other account) with a signature of OTHER's it holds: that would consume OTHER's
    nonce behind its own intents, outside the token's accounts."""
    tenant = IntentDefaults(chain_id=31337, accounts=[SENDER], managed=[SENDER, OTHER])
    with pytest.raises(ParamError) as caught:
        parse_intent({**BASE, "authorizationList": [_signed()]}, tenant)
    assert caught.value.field == "authorizationList[0]"
    assert f"signed by {OTHER}, an account of this broadcaster" in caught.value.reason
    # An authority outside the broadcaster's accounts is a sponsored delegation: taken.
    assert parse_intent({**BASE, "authorizationList": [_signed()]}, DEFAULTS).tx_type == 4


def test_a_thousand_authorizations_are_refused_before_any_is_recovered() -> None:
    error = _error({**BASE, "authorizationList": [_signed()] * 1000})
    assert error.field == "authorizationList"
    assert "1 to 16" in error.reason

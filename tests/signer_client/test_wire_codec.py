"""The hot-path decoders are pinned to the slow, obvious encoders.

``decode_payload`` (what the enclave reads, protocol 2) must accept a payload only when it is the
one canonical encoding of the fields it returns; ``split_signed`` (the client's cheap reply check)
must accept a raw transaction only when it is exactly our encoding of the request plus a signature.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer_client.errors import TxDecodeError
from signer_client.payload import decode_payload, split_signed
from signer_client.rlp import encode_bytes, encode_int, encode_list_payload
from signer_client.signing import LocalKey
from signer_client.txcodec import (
    TxFields,
    body_items,
    decode_raw,
    encode_signed,
    signing_payload,
    tx_from_dict,
)
from tests.signer_client.test_txcodec import ANVIL_KEY, transactions

KEY = LocalKey(ANVIL_KEY)
TO = bytes.fromhex("3c44cdddb6a900fa2b585dd299e03d12fa4293bc")


def fields(**overrides: Any) -> TxFields:
    base = TxFields(
        type=2, chain_id=31337, nonce=7, gas=21000, to=TO, value=10**15, data=b"\x01\x02",
        max_fee_per_gas=30 * 10**9, max_priority_fee_per_gas=10**9,
    )  # fmt: skip
    return base._replace(**overrides)


# ---------------------------------------------------------------- decode_payload


@settings(max_examples=300, deadline=None)
@given(tx=transactions())
def test_decode_payload_inverts_signing_payload(tx: dict[str, Any]) -> None:
    f = tx_from_dict(tx)
    assert decode_payload(signing_payload(f)) == (f, body_items(f))


def _mutations(data: bytes, draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append"]))
    i = draw(st.integers(0, len(data) - 1))
    byte = draw(st.integers(0, 255))
    if kind == "flip":
        return data[:i] + bytes((byte,)) + data[i + 1 :]
    if kind == "insert":
        return data[:i] + bytes((byte,)) + data[i:]
    if kind == "delete":
        return data[:i] + data[i + 1 :]
    if kind == "truncate":
        return data[:i]
    return data + bytes((byte,))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tx=transactions(), data=st.data())
def test_a_tampered_payload_is_refused_or_is_itself_canonical(
    tx: dict[str, Any], data: st.DataObject
) -> None:
    payload = signing_payload(tx_from_dict(tx))
    tampered = _mutations(payload, data.draw)
    try:
        decoded, body = decode_payload(tampered)
    except TxDecodeError:
        return
    # Accepted: then it is exactly the canonical payload of what the policy will check.
    assert signing_payload(decoded) == tampered
    assert body == body_items(decoded)


def _typed(items: list[bytes], tx_type: int = 2) -> bytes:
    return bytes((tx_type,)) + encode_list_payload(b"".join(items))


GOOD_ITEMS = [
    encode_int(31337), encode_int(7), encode_int(10**9), encode_int(30 * 10**9),
    encode_int(21000), encode_bytes(TO), encode_int(10**15), encode_bytes(b"\x01\x02"), b"\xc0",
]  # fmt: skip


def _with(index: int, item: bytes) -> bytes:
    items = list(GOOD_ITEMS)
    items[index] = item
    return _typed(items)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"", "empty"),
        (b"\x03" + encode_list_payload(b"".join(GOOD_ITEMS)), "type 3, 1559 fields"),
        (_typed(GOOD_ITEMS) + b"\x00", "trailing byte"),
        (_with(1, b"\x81\x07"), "a single byte below 0x80 wrapped in a prefix"),
        (_with(1, b"\x00"), "zero written as 0x00 instead of 0x80"),
        (_with(4, b"\x83\x00\x52\x08"), "integer with a leading zero"),
        (_with(5, encode_bytes(TO[:19])), "to of 19 bytes"),
        (_with(1, encode_bytes(b"\x01" * 9)), "nonce above 64 bits"),
        (_with(0, encode_bytes(b"\x01" * 9)), "chain id above 64 bits"),
        (_with(6, encode_bytes(b"\x01" * 33)), "value above 256 bits"),
        (_with(8, b"\x80"), "access list written as a string"),
        (_typed(GOOD_ITEMS[:8]), "access list missing"),
        (_typed([*GOOD_ITEMS, b"\x80"]), "extra item after the access list"),
        (_typed([*GOOD_ITEMS[:8], b"\xc1\x80"]), "access list entry that is not a pair"),
        (_typed(GOOD_ITEMS, 1), "type 1 with type 2's fields"),
        (
            b"\x02\xf8\x05" + b"".join(GOOD_ITEMS)[:5],
            "long-form list prefix for a short list",
        ),
        (
            encode_list_payload(b"".join(GOOD_ITEMS[1:8])),
            "legacy payload with 7 items",
        ),
        (
            encode_list_payload(
                b"".join([*GOOD_ITEMS[1:2], *GOOD_ITEMS[3:8], b"\x01", b"\x80\x01"])
            ),
            "EIP-155 payload whose trailing items are not 0, 0",
        ),
    ],
)
def test_malformed_payloads_are_refused(payload: bytes, why: str) -> None:
    with pytest.raises(TxDecodeError):
        decode_payload(payload)


def test_the_reference_payload_is_accepted() -> None:
    assert decode_payload(_typed(GOOD_ITEMS))[0] == fields()


# ---------------------------------------------------------------- split_signed


@settings(max_examples=200, deadline=None)
@given(tx=transactions())
def test_split_signed_reads_back_the_signature_of_our_own_encoding(tx: dict[str, Any]) -> None:
    f = tx_from_dict(tx)
    raw = KEY.sign(f).raw
    decoded = decode_raw(raw)
    assert split_signed(raw, f, body_items(f)) == (decoded.y_parity, decoded.r, decoded.s)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tx=transactions(), data=st.data())
def test_split_signed_accepts_a_tampered_raw_only_if_it_is_still_exactly_the_request(
    tx: dict[str, Any], data: st.DataObject
) -> None:
    f = tx_from_dict(tx)
    body = body_items(f)
    tampered = _mutations(KEY.sign(f).raw, data.draw)
    parts = split_signed(tampered, f, body)
    if parts is None:  # refused: then the strict decoder reads no copy of the request either
        try:
            decoded = decode_raw(tampered)
        except TxDecodeError:
            return
        assert decoded.fields != f
        return
    y, r, s = parts
    assert encode_signed(f, y, r.to_bytes(32, "big"), s.to_bytes(32, "big"), body) == tampered
    assert decode_raw(tampered).fields == f


_R = int.from_bytes(b"\x5a" * 32, "big")
_S = int.from_bytes(b"\x3c" * 32, "big")


@pytest.mark.parametrize("tx_type", [0, 1, 2])
@pytest.mark.parametrize("y", [0, 1])
@pytest.mark.parametrize(
    ("r", "s"),
    [(_R, _S), (_R >> 8, _S), (_R, _S >> 8), (_R >> 200, _S >> 16), (1, 1)],
    ids=["32-byte r and s", "short r", "short s", "both short", "one-byte r and s"],
)
def test_split_signed_reads_every_signature_shape_as_the_strict_decoder_does(
    tx_type: int, y: int, r: int, s: int
) -> None:
    """The in-place read of the common shape and the item-by-item path agree on every shape."""
    f = (
        fields(type=tx_type)
        if tx_type == 2
        else fields(
            type=tx_type, gas_price=10**9, max_fee_per_gas=None, max_priority_fee_per_gas=None
        )
    )
    body = body_items(f)
    raw = encode_signed(f, y, r.to_bytes(32, "big"), s.to_bytes(32, "big"), body)
    decoded = decode_raw(raw)
    assert split_signed(raw, f, body) == (decoded.y_parity, decoded.r, decoded.s) == (y, r, s)


def _sig_tail(y_item: bytes, r_item: bytes, s_item: bytes) -> bytes:
    body = body_items(fields())
    payload = body + y_item + r_item + s_item
    return b"\x02" + encode_list_payload(payload)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (_sig_tail(b"\x00", b"\xa0" + b"\x5a" * 32, b"\xa0" + b"\x3c" * 32), "yParity as 0x00"),
        (_sig_tail(b"\x02", b"\xa0" + b"\x5a" * 32, b"\xa0" + b"\x3c" * 32), "yParity 2"),
        (_sig_tail(b"\x81\x01", b"\x9f" + b"\x5a" * 31, b"\xa0" + b"\x3c" * 32), "wrapped 1"),
        (
            _sig_tail(b"\x80", b"\xa0\x00" + b"\x5a" * 31, b"\xa0" + b"\x3c" * 32),
            "32-byte r with a leading zero",
        ),
        (
            _sig_tail(b"\x01", b"\xa0" + b"\x5a" * 32, b"\xa0\x00" + b"\x3c" * 31),
            "32-byte s with a leading zero",
        ),
        (
            _sig_tail(b"\x01", b"\xa0" + b"\x5a" * 32, b"\xa0" + b"\x3c" * 32 + b"\x80"),
            "an item after s",
        ),
        (_sig_tail(b"\x01", b"\xb8\x20" + b"\x5a" * 32, b"\x9f" + b"\x3c" * 31), "long-form r"),
    ],
)
def test_split_signed_refuses_non_canonical_signature_items(raw: bytes, why: str) -> None:
    assert split_signed(raw, fields(), body_items(fields())) is None


def test_split_signed_refuses_a_legacy_v_for_another_chain() -> None:
    f = tx_from_dict({"chainId": 1, "nonce": 0, "gas": 21000, "gasPrice": 1, "to": "0x" + TO.hex()})
    raw = KEY.sign(f).raw
    other = f._replace(chain_id=5)
    assert split_signed(raw, other, body_items(other)) is None


def test_a_signer_speaking_protocol_1_is_refused() -> None:
    from signer_client.errors import ProtocolError
    from signer_client.protocol import PROTOCOL_VERSION, parse_hello

    hello = {"protocol": 1, "mode": "dev", "addresses": [], "chain_ids": [1], "policy_hash": "0x"}
    assert PROTOCOL_VERSION == 2
    with pytest.raises(ProtocolError):
        parse_hello(hello)
    assert parse_hello({**hello, "protocol": 2}).protocol == 2

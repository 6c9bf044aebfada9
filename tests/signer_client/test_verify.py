"""Reply verification refuses every tampering, through the cheap byte check and the explanation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from signer_client.errors import ReplyVerificationError
from signer_client.signing import LocalKey
from signer_client.txcodec import (
    SECP256K1_N,
    TxFields,
    body_items,
    decode_raw,
    encode_signed,
    keccak,
    signing_hash,
    tx_from_dict,
)
from signer_client.verify import ReplyVerifier
from tests.enclave.running import ALLOWED_TO, ANVIL_KEY, OTHER_KEY

KEY = LocalKey(ANVIL_KEY)
REQUEST = tx_from_dict(
    {"type": 2, "chainId": 31337, "nonce": 7, "to": ALLOWED_TO, "value": 12345,
     "data": b"\x01\x02", "gas": 50000, "maxFeePerGas": 30 * 10**9,
     "maxPriorityFeePerGas": 10**9, "accessList": []}
)  # fmt: skip
LEGACY = tx_from_dict(
    {"chainId": 31337, "nonce": 7, "to": ALLOWED_TO, "value": 1, "gas": 21000, "gasPrice": 10**9}
)


def resign(f: TxFields, raw: bytes, *, y: int | None = None, s: int | None = None) -> bytes:
    d = decode_raw(raw)
    return encode_signed(
        f,
        d.y_parity if y is None else y,
        d.r.to_bytes(32, "big"),
        (d.s if s is None else s).to_bytes(32, "big"),
    )


def check(request: TxFields, raw: bytes, hash_hex: str | None = None, *, body: bool = True) -> str:
    """Verify a reply; return the failed check's name, or "ok"."""
    try:
        ReplyVerifier().verify(
            request,
            signing_hash(request),
            KEY.address_bytes,
            "0x" + raw.hex(),
            hash_hex,
            body_items(request) if body else None,
        )
    except ReplyVerificationError as exc:
        return exc.check
    return "ok"


Tamper = Callable[[TxFields, bytes], bytes]
TAMPERINGS: list[tuple[str, Tamper, str]] = [
    ("value", lambda f, raw: resign(f._replace(value=f.value + 1), raw), "field:value"),
    ("to", lambda f, raw: resign(f._replace(to=b"\x01" * 20), raw), "field:to"),
    ("nonce", lambda f, raw: resign(f._replace(nonce=f.nonce + 1), raw), "field:nonce"),
    ("chain", lambda f, raw: resign(f._replace(chain_id=1), raw), "field:chain_id"),
    ("data", lambda f, raw: resign(f._replace(data=f.data + b"\xff"), raw), "field:data"),
    ("gas", lambda f, raw: resign(f._replace(gas=f.gas + 1), raw), "field:gas"),
    ("wrong key", lambda f, raw: LocalKey(OTHER_KEY).sign(f).raw, "sender"),
    ("flipped y parity", lambda f, raw: resign(f, raw, y=1 - decode_raw(raw).y_parity), "sender"),
    (
        "high s",
        lambda f, raw: resign(
            f, raw, y=1 - decode_raw(raw).y_parity, s=SECP256K1_N - decode_raw(raw).s
        ),
        "low_s",
    ),
    ("s zero", lambda f, raw: resign(f, raw, s=0), "low_s"),
    ("trailing byte", lambda f, raw: raw + b"\x00", "decode"),
    ("truncated", lambda f, raw: raw[:-1], "decode"),
    ("empty", lambda f, raw: b"", "decode"),
]


@pytest.mark.parametrize("request_fields", [REQUEST, LEGACY], ids=["1559", "legacy"])
@pytest.mark.parametrize(("name", "tamper", "expected"), TAMPERINGS, ids=[t[0] for t in TAMPERINGS])
@pytest.mark.parametrize("body", [True, False], ids=["body given", "body rebuilt"])
def test_every_tampering_is_refused_with_its_check(
    request_fields: TxFields, name: str, tamper: Tamper, expected: str, body: bool
) -> None:
    honest = KEY.sign(request_fields).raw
    assert check(request_fields, honest, body=body) == "ok"
    assert check(request_fields, tamper(request_fields, honest), body=body) == expected


@pytest.mark.parametrize("request_fields", [REQUEST, LEGACY], ids=["1559", "legacy"])
@pytest.mark.parametrize(("name", "tamper", "expected"), TAMPERINGS, ids=[t[0] for t in TAMPERINGS])
def test_every_tampering_is_refused_once_the_senders_key_is_cached_too(
    request_fields: TxFields, name: str, tamper: Tamper, expected: str
) -> None:
    """After a good reply the sender's public key is cached (no keccak of the recovered key):
    the comparison against the cached key must refuse exactly what the first check refuses."""
    verifier = ReplyVerifier()
    msg_hash = signing_hash(request_fields)
    honest = KEY.sign(request_fields).raw
    verifier.verify(request_fields, msg_hash, KEY.address_bytes, "0x" + honest.hex(), None)
    with pytest.raises(ReplyVerificationError) as info:
        verifier.verify(
            request_fields,
            msg_hash,
            KEY.address_bytes,
            "0x" + tamper(request_fields, honest).hex(),
            None,
            body_items(request_fields),
        )
    assert info.value.check == expected
    # and the cache still holds the right key: the honest reply passes again
    verifier.verify(request_fields, msg_hash, KEY.address_bytes, "0x" + honest.hex(), None)


def test_a_reply_by_another_key_is_refused_for_a_sender_whose_key_is_cached() -> None:
    verifier = ReplyVerifier()
    other = LocalKey(OTHER_KEY)
    for signer in (KEY, other):  # both keys cached, each for its own address
        signed = signer.sign(REQUEST)
        verifier.verify(REQUEST, signing_hash(REQUEST), signer.address_bytes, signed.raw_hex, None)
    with pytest.raises(ReplyVerificationError) as info:
        verifier.verify(REQUEST, signing_hash(REQUEST), KEY.address_bytes,
                        other.sign(REQUEST).raw_hex, None)  # fmt: skip
    assert info.value.check == "sender"


def test_a_non_canonical_signature_encoding_is_refused() -> None:
    honest = KEY.sign(REQUEST).raw
    d = decode_raw(honest)
    body = body_items(REQUEST)
    r = d.r.to_bytes(32, "big")
    padded_s = b"\xa1\x00" + d.s.to_bytes(32, "big")  # s with a leading zero byte
    sig = (b"\x01" if d.y_parity else b"\x80") + b"\xa0" + r + padded_s
    raw = b"\x02" + bytes((0xF8, len(body) + len(sig))) + body + sig
    assert check(REQUEST, raw) == "decode"


def test_a_claimed_hash_must_be_keccak_of_raw_and_may_be_left_out() -> None:
    raw = KEY.sign(REQUEST).raw
    assert check(REQUEST, raw, "0x" + keccak(raw).hex()) == "ok"
    assert check(REQUEST, raw, None) == "ok"
    assert check(REQUEST, raw, "0x" + bytes(32).hex()) == "hash"


def test_malformed_reply_strings_are_format_errors() -> None:
    verifier = ReplyVerifier()
    msg_hash = signing_hash(REQUEST)
    for raw_hex, hash_hex in (("0xzz", None), (None, None), ("0x00", 5)):
        with pytest.raises(ReplyVerificationError) as info:
            verifier.verify(REQUEST, msg_hash, KEY.address_bytes, raw_hex, hash_hex)
        assert info.value.check == "format"


def test_the_verified_transaction_carries_the_raw_bytes_their_hash_and_the_sender() -> None:
    expected = KEY.sign(REQUEST)
    verifier = ReplyVerifier()
    for _ in range(2):  # the second time through the cached public key
        signed = verifier.verify(
            REQUEST, signing_hash(REQUEST), KEY.address_bytes, expected.raw_hex, None
        )
        assert signed == expected


def test_the_verified_transaction_is_the_frozen_dataclass_the_constructor_builds() -> None:
    """``new_signed`` (the verifier's and ``LocalKey.sign``'s constructor) gives the very object
    ``SignedTx(...)`` gives: every field set, equal, the same hash, and still frozen."""
    import dataclasses

    from signer_client.signing import SignedTx, new_signed

    args = (b"\x02raw", b"\x11" * 32, "0xSender", 7, 31337, 2)
    fast, slow = new_signed(*args), SignedTx(*args)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert dataclasses.astuple(fast) == args
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.nonce = 8  # type: ignore[misc]
    signed = ReplyVerifier().verify(
        REQUEST, signing_hash(REQUEST), KEY.address_bytes, KEY.sign(REQUEST).raw_hex, None
    )
    assert type(signed) is SignedTx and signed.sender == KEY.address and signed.nonce == 7


@pytest.mark.parametrize("request_fields", [REQUEST, LEGACY], ids=["1559", "legacy"])
def test_r_and_s_swapped_is_refused(request_fields: TxFields) -> None:
    from signer_client.txcodec import SECP256K1_HALF_N

    honest = KEY.sign(request_fields).raw
    d = decode_raw(honest)
    swapped = encode_signed(
        request_fields, d.y_parity, d.s.to_bytes(32, "big"), d.r.to_bytes(32, "big")
    )
    # s takes r's place: high unless r happens to be below n/2, then another signer recovers.
    assert check(request_fields, swapped) == ("low_s" if d.r > SECP256K1_HALF_N else "sender")

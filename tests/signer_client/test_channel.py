"""The reply channel: a MAC only the attested key's holder (or the client) can compute, checked
on the exact bytes received."""

from __future__ import annotations

import coincurve
import orjson
import pytest

from signer_client.channel import derive_mac_key, open_sealed, seal
from signer_client.errors import ReplyVerificationError


def keys() -> tuple[bytes, bytes]:
    enclave, client = coincurve.PrivateKey(), coincurve.PrivateKey()
    nonce = b"\x07" * 32
    a = derive_mac_key(enclave.secret, client.public_key.format(), nonce)
    b = derive_mac_key(client.secret, enclave.public_key.format(compressed=False), nonce)
    return a, b


def test_both_ends_derive_the_same_key_and_a_sealed_reply_opens_to_the_exact_bytes() -> None:
    a, b = keys()
    assert a == b
    body = orjson.dumps({"id": 7, "result": {"raw": "0x02f8"}})
    sealed = seal(a, body)
    assert orjson.loads(sealed)["mac"]  # still one JSON object
    assert open_sealed(b, sealed) == body


@pytest.mark.parametrize(
    "forge",
    [
        lambda s, k: s.replace(b'"0x02f8"', b'"0x02f9"'),  # the relay edits the reply
        lambda s, k: seal(b"\x00" * 32, orjson.dumps({"id": 7, "result": {}})),  # its own key
        lambda s, k: orjson.dumps({"id": 7, "result": {"raw": "0x02f8"}}),  # no MAC at all
        lambda s, k: b"{}",
    ],
)
def test_a_reply_the_attested_enclave_did_not_seal_is_refused(forge: object) -> None:
    a, _ = keys()
    sealed = seal(a, orjson.dumps({"id": 7, "result": {"raw": "0x02f8"}}))
    with pytest.raises(ReplyVerificationError) as info:
        open_sealed(a, forge(sealed, a))  # type: ignore[operator]
    assert info.value.check == "channel"


def test_a_key_that_is_not_a_curve_point_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        derive_mac_key(b"\x01" * 32, b"\x02" + b"\x00" * 32, b"")

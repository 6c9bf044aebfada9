"""The direct libsecp256k1 calls give exactly coincurve's public-API results."""

from __future__ import annotations

import coincurve
from hypothesis import given
from hypothesis import strategies as st

from signer_client import secp
from signer_client.txcodec import SECP256K1_N

secrets = st.integers(1, SECP256K1_N - 1).map(lambda k: k.to_bytes(32, "big"))
hashes = st.binary(min_size=32, max_size=32)


def test_the_fast_path_is_in_use() -> None:
    assert secp.FAST  # with the pinned coincurve; the fallback exists for a future one


@given(secret=secrets, msg_hash=hashes)
def test_sign_and_recover_match_coincurve(secret: bytes, msg_hash: bytes) -> None:
    key = coincurve.PrivateKey(secret)
    sig = secp.sign_recoverable(secret, msg_hash)
    assert sig == key.sign_recoverable(msg_hash, hasher=None)
    assert sig == secp._sign_slow(secret, msg_hash)
    public = key.public_key.format(compressed=False)
    assert secp.recover_uncompressed(sig, msg_hash) == public
    assert secp._recover_slow(sig, msg_hash) == public


@given(msg_hash=hashes)
def test_unrecoverable_signatures_give_none_on_both_paths(msg_hash: bytes) -> None:
    n = SECP256K1_N.to_bytes(32, "big")
    one = (1).to_bytes(32, "big")
    for sig in (
        bytes(32) + one + b"\x00",  # r = 0
        n + one + b"\x00",  # r = n
        one + n + b"\x01",  # s = n
        one + one + b"\x04",  # recid out of range (libsecp256k1 would abort, not fail)
        one + one,  # short
    ):
        assert secp.recover_uncompressed(sig, msg_hash) is None
        if len(sig) == 65 and sig[64] <= 3:
            assert secp._recover_slow(sig, msg_hash) is None

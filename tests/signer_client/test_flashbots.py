"""The ``X-Flashbots-Signature`` header (DESIGN.md 5a), pinned to the reference construction:
eth-account's EIP-191 ``personal_sign`` of the text ``0x`` + hex(keccak256(body)), as Flashbots'
docs compute it (ethers ``wallet.signMessage(utils.id(body))``)."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import given
from hypothesis import strategies as st

from signer_client.errors import ReplyVerificationError, TransactionError
from signer_client.flashbots import auth_signing_hash, body_hash, header_value, recover_header
from signer_client.payload import decode_payload
from signer_client.signing import LocalKey
from signer_client.txcodec import keccak
from tests.enclave.running import ANVIL_ADDRESS, AUTH_ADDRESS, AUTH_KEY

BODY = b'{"jsonrpc":"2.0","id":1,"method":"eth_sendBundle","params":[{"txs":["0x02"]}]}'


def header_of(body: bytes, key: str = AUTH_KEY) -> str:
    local = LocalKey(key)
    return header_value(local.address_bytes, local.sign_hash(auth_signing_hash(body_hash(body))))


def test_the_header_is_eth_accounts_personal_sign_of_the_hex_body_hash() -> None:
    text = "0x" + keccak(BODY).hex()
    reference = Account.sign_message(encode_defunct(text=text), AUTH_KEY)
    assert header_of(BODY) == f"{AUTH_ADDRESS}:0x{bytes(reference.signature).hex()}"


def test_recover_header_names_the_signer_and_accepts_v_0_or_1() -> None:
    value = header_of(BODY)
    assert recover_header(value, BODY) == bytes.fromhex(AUTH_ADDRESS[2:])
    address, sig = value.split(":")
    raw = bytes.fromhex(sig[2:])
    go_style = f"{address}:0x{(raw[:64] + bytes((raw[64] - 27,))).hex()}"  # crypto.Sign's v
    assert recover_header(go_style, BODY) == bytes.fromhex(AUTH_ADDRESS[2:])


@pytest.mark.parametrize(
    ("value", "body", "why"),
    [
        (header_of(BODY), BODY + b" ", "signed by"),  # another body
        (ANVIL_ADDRESS + ":" + header_of(BODY).split(":")[1], BODY, "signed by"),  # claims another
        ("nonsense", BODY, "expected"),
        (AUTH_ADDRESS + ":0x1234", BODY, "65-byte"),
        (AUTH_ADDRESS + ":0x" + "zz" * 65, BODY, "not hex"),
        (AUTH_ADDRESS + ":0x" + "11" * 64 + "05", BODY, "bad signature v"),
    ],
)
def test_a_header_that_does_not_verify_is_refused_saying_why(
    value: str, body: bytes, why: str
) -> None:
    with pytest.raises(ReplyVerificationError, match=why):
        recover_header(value, body)


@given(st.binary(min_size=32, max_size=32))
def test_the_auth_preimage_is_never_a_transaction_or_authorization_payload(digest: bytes) -> None:
    """Domain separation: the auth key signs keccak256 of a preimage that starts with 0x19 and is
    exactly the EIP-191 text wrapping; no transaction signing payload (RLP list or EIP-2718 type
    byte 0x01-0x04) nor EIP-7702 authorization (0x05) starts with 0x19."""
    preimage = b"\x19Ethereum Signed Message:\n66" + b"0x" + digest.hex().encode()
    assert auth_signing_hash(digest) == keccak(preimage)
    assert preimage[0] not in range(0x01, 0x06) and preimage[0] < 0xC0
    with pytest.raises(TransactionError):
        decode_payload(preimage)


def test_a_body_hash_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        auth_signing_hash(b"\x00" * 31)


def test_a_malleated_high_s_header_is_refused_as_the_relay_refuses_it() -> None:
    """The same signature with ``s`` -> ``n - s`` and ``v`` flipped still recovers the key, but
    the relay (go-ethereum ``crypto.VerifySignature``) refuses a high-s signature: the builder
    doubles check what the relay checks."""
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    address, sig = header_of(BODY).split(":")
    raw = bytes.fromhex(sig[2:])
    high_s = (n - int.from_bytes(raw[32:64], "big")).to_bytes(32, "big")
    flipped = bytes((55 - raw[64],))  # 27 <-> 28
    with pytest.raises(ReplyVerificationError, match="low-s"):
        recover_header(f"{address}:0x{(raw[:32] + high_s + flipped).hex()}", BODY)

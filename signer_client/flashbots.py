"""The ``X-Flashbots-Signature`` request header (DESIGN.md section 5a), pure functions.

Flashbots' relay and every builder that copies it authenticate a JSON-RPC request by the header
``X-Flashbots-Signature: <address>:<signature>``: ``signature`` is the EIP-191 ``personal_sign``
(version ``0x45``, "Ethereum Signed Message") of the *text* ``keccak256(body)`` written as
``0x`` + 64 lowercase hex digits (ethers' ``wallet.signMessage(utils.id(body))``, go-ethereum's
``Keccak256Hash(body).Hex()``), 65 bytes ``r || s || v`` with ``v`` = 27 or 28, 0x-hex.

The split, and why the auth key can sign nothing else: the broadcaster sends only the 32-byte
``keccak256(body)`` (:func:`body_hash`) to the enclave's ``sign_auth`` method, and the enclave
itself wraps it (:func:`auth_signing_hash`): the preimage it signs always begins
``0x19 "Ethereum Signed Message:\\n66" "0x"`` followed by 64 hex characters. Every other hash the
enclave signs has another first byte -- a legacy transaction's is an RLP list (``0xc0``-``0xff``),
a typed one's its type byte (``0x01``-``0x04``, EIP-2718), an EIP-7702 authorization's ``0x05``,
the audit head's ``"e"`` -- so an auth signature equals one of theirs only if keccak256 has a
collision. On top, the auth key is a separate key (``[policy] auth_address``): the enclave holds
it apart from the transaction keys, so no transaction or authorization is ever signed with it,
and ``sign_auth`` never uses a transaction key.
"""

from __future__ import annotations

from signer_client.errors import ReplyVerificationError
from signer_client.secp import recover_uncompressed
from signer_client.signing import to_checksum_address
from signer_client.txcodec import SECP256K1_HALF_N, SECP256K1_N, keccak

__all__ = [
    "HEADER",
    "auth_signing_hash",
    "body_hash",
    "header_value",
    "recover_header",
]

HEADER = "X-Flashbots-Signature"
_PREFIX = b"\x19Ethereum Signed Message:\n66"  # EIP-191 0x45; 66 = len("0x" + 64 hex digits)


def body_hash(body: bytes) -> bytes:
    """``keccak256`` of the exact request body bytes (what the header authenticates)."""
    return keccak(body)


def auth_signing_hash(digest: bytes) -> bytes:
    """The hash the auth key signs for a body whose ``keccak256`` is ``digest``: EIP-191's
    ``keccak256("\\x19Ethereum Signed Message:\\n66" || "0x" || hex(digest))``."""
    if len(digest) != 32:
        raise ValueError(f"a body hash is 32 bytes, got {len(digest)}")
    return keccak(_PREFIX + b"0x" + digest.hex().encode())


def header_value(address: bytes, sig65: bytes) -> str:
    """``<EIP-55 address>:0x<r || s || v>`` with ``v`` = 27 + recovery id (ethers' form)."""
    if len(sig65) != 65 or sig65[64] > 1:
        raise ValueError("expected a 65-byte signature with recovery id 0 or 1")
    sig = sig65[:64] + bytes((27 + sig65[64],))
    return f"{to_checksum_address(address)}:0x{sig.hex()}"


def recover_header(value: str, body: bytes) -> bytes:
    """The address whose key signed ``body`` in header ``value``; raises
    :class:`ReplyVerificationError` when the header is malformed or names another address.

    Accepts ``v`` as 27/28 or 0/1 (go-ethereum's ``crypto.Sign`` gives 0/1), only a low-s
    signature, as Flashbots' ``go-utils/signature.Verify`` does."""
    address_text, sep, sig_text = value.partition(":")
    if not sep or not address_text.startswith("0x") or not sig_text.startswith("0x"):
        raise ReplyVerificationError("flashbots_header", "expected <0xaddress>:<0xsignature>")
    try:
        claimed = bytes.fromhex(address_text[2:])
        sig = bytes.fromhex(sig_text[2:])
    except ValueError:
        raise ReplyVerificationError("flashbots_header", "address or signature not hex") from None
    if len(claimed) != 20 or len(sig) != 65:
        raise ReplyVerificationError(
            "flashbots_header", "expected a 20-byte address and a 65-byte signature"
        )
    v = sig[64] - 27 if sig[64] >= 27 else sig[64]
    if v not in (0, 1):
        raise ReplyVerificationError("flashbots_header", f"bad signature v {sig[64]}")
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")
    if not (0 < r < SECP256K1_N and 0 < s <= SECP256K1_HALF_N):
        # The relay's go-ethereum crypto.VerifySignature refuses a malleable (high-s) one: so
        # does this check, as the builder doubles' rule (EIP-2 low-s; our signer makes no other).
        raise ReplyVerificationError("flashbots_header", "signature not canonical (EIP-2 low-s)")
    pub = recover_uncompressed(sig[:64] + bytes((v,)), auth_signing_hash(body_hash(body)))
    if pub is None:
        raise ReplyVerificationError("flashbots_header", "signature recovers no key")
    signer = keccak(pub[1:])[12:]
    if signer != claimed:
        raise ReplyVerificationError(
            "flashbots_header",
            f"signed by {to_checksum_address(signer)}, not {to_checksum_address(claimed)}",
        )
    return signer

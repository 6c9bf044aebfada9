"""Local signing with a cached key, and sender recovery.

The hot path is: :func:`signing_payload` -> keccak256 -> ``PrivateKey.sign_recoverable(hash,
hasher=None)`` (libsecp256k1, RFC 6979 deterministic nonces, low-s normalised as EIP-2 requires)
-> :func:`encode_signed`. Deterministic nonces matter beyond speed: signing the same payload
twice yields the same bytes, so a retried request can never produce two different transactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields as dataclass_fields

import coincurve

from signer_client.errors import TxDecodeError, TxFieldError
from signer_client.secp import sign_recoverable
from signer_client.txcodec import (
    TxFields,
    body_items,
    decode_raw,
    encode_signed,
    keccak,
    signing_hash,
    signing_payload,
)

__all__ = [
    "LocalKey",
    "SignedTx",
    "address_from_pubkey",
    "recover_pubkey",
    "signed_from_raw",
    "to_checksum_address",
]


@dataclass(frozen=True, slots=True)
class SignedTx:
    """A signed transaction, ready to broadcast: ``raw`` bytes and ``hash = keccak256(raw)``."""

    raw: bytes
    hash: bytes
    sender: str  # EIP-55 checksummed
    nonce: int
    chain_id: int | None
    tx_type: int

    @property
    def raw_hex(self) -> str:
        return "0x" + self.raw.hex()

    @property
    def hash_hex(self) -> str:
        return "0x" + self.hash.hex()


_SIGNED_FIELDS = ("raw", "hash", "sender", "nonce", "chain_id", "tx_type")
assert tuple(f.name for f in dataclass_fields(SignedTx)) == _SIGNED_FIELDS  # all set below
_new = object.__new__
_set_raw, _set_hash, _set_sender, _set_nonce, _set_chain, _set_type = (
    SignedTx.__dict__[name].__set__ for name in _SIGNED_FIELDS
)


def new_signed(
    raw: bytes, tx_hash: bytes, sender: str, nonce: int, chain_id: int | None, tx_type: int
) -> SignedTx:
    """``SignedTx(...)`` at half the cost, for the hot paths (every verified reply): the frozen
    dataclass's ``__init__`` goes through ``object.__setattr__`` once per field (1.7 us); the
    slots' own descriptors set them directly (0.9 us). The same object: equal, hashed and frozen
    alike (``tests/signer_client/test_verify.py``)."""
    tx = _new(SignedTx)
    _set_raw(tx, raw)
    _set_hash(tx, tx_hash)
    _set_sender(tx, sender)
    _set_nonce(tx, nonce)
    _set_chain(tx, chain_id)
    _set_type(tx, tx_type)
    return tx


def to_checksum_address(address: bytes) -> str:
    """EIP-55 mixed-case checksum encoding of a 20-byte address."""
    lower = address.hex()
    digest = keccak(lower.encode()).hex()
    return "0x" + "".join(
        c.upper() if int(d, 16) >= 8 else c for c, d in zip(lower, digest[:40], strict=True)
    )


def address_from_pubkey(pubkey: coincurve.PublicKey) -> bytes:
    """The last 20 bytes of keccak256 of the uncompressed public key (without the 0x04 tag)."""
    return keccak(pubkey.format(compressed=False)[1:])[12:]


def recover_pubkey(msg_hash: bytes, y_parity: int, r: int, s: int) -> bytes:
    """Uncompressed public key (65 bytes) that produced ``(r, s, y)`` over ``msg_hash``."""
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((y_parity,))
    pub = coincurve.PublicKey.from_signature_and_message(sig, msg_hash, hasher=None)
    return pub.format(compressed=False)


class LocalKey:
    """One secp256k1 private key, parsed once and kept as a ``coincurve.PrivateKey``."""

    __slots__ = ("_key", "_secret", "address", "address_bytes", "public_key")

    def __init__(self, secret: bytes | str) -> None:
        if isinstance(secret, str):
            text = secret.strip()
            text = text[2:] if text[:2] in ("0x", "0X") else text
            try:
                secret = bytes.fromhex(text)
            except ValueError:
                raise TxFieldError("key", "a private key is 32 bytes of hex") from None
        if len(secret) != 32:
            raise TxFieldError("key", "a private key is 32 bytes")
        try:
            self._key = coincurve.PrivateKey(secret)
        except ValueError as exc:
            raise TxFieldError("key", "not a valid secp256k1 private key") from exc
        self._secret = secret
        self.public_key: bytes = self._key.public_key.format(compressed=False)
        self.address_bytes: bytes = keccak(self.public_key[1:])[12:]
        self.address: str = to_checksum_address(self.address_bytes)

    @property
    def secret(self) -> bytes:
        """The 32-byte private key (the enclave derives its channel and sealing keys from it)."""
        return self._secret

    def sign_hash(self, msg_hash: bytes) -> bytes:
        """65 bytes ``r || s || recid`` over a 32-byte hash (no re-hashing)."""
        return sign_recoverable(self._secret, msg_hash)

    def sign_fields(self, f: TxFields) -> tuple[bytes, bytes, bytes]:
        """Sign ``f``; return ``(raw, tx_hash, signing_hash)``."""
        body = body_items(f)
        msg_hash = keccak(signing_payload(f, body))
        sig = sign_recoverable(self._secret, msg_hash)
        raw = encode_signed(f, sig[64], sig[:32], sig[32:64], body)
        return raw, keccak(raw), msg_hash

    def sign(self, f: TxFields) -> SignedTx:
        raw, tx_hash, _ = self.sign_fields(f)
        return new_signed(raw, tx_hash, self.address, f.nonce, f.chain_id, f.type)


def signed_from_raw(raw: bytes) -> tuple[TxFields, SignedTx]:
    """Decode raw signed bytes (``eth_sendRawTransaction``) and recover who signed them.

    Raises ``TxDecodeError`` for bytes that are not a canonical legacy / EIP-2930 / EIP-1559
    transaction, or whose signature does not recover.
    """
    decoded = decode_raw(raw)
    fields = decoded.fields
    try:
        pubkey = recover_pubkey(signing_hash(fields), decoded.y_parity, decoded.r, decoded.s)
    except (ValueError, TypeError) as exc:
        raise TxDecodeError(f"signature does not recover: {exc}") from exc
    sender = to_checksum_address(keccak(pubkey[1:])[12:])
    return fields, SignedTx(raw, keccak(raw), sender, fields.nonce, fields.chain_id, fields.type)

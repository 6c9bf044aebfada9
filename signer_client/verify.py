"""Reply verification: never trust the signer's answer (DESIGN.md section 6).

For every ``sign_transaction`` reply we decode the returned raw transaction with our own strict
decoder, compare every field with what we asked for, check ``hash == keccak256(raw)``, check the
signature is canonical (``0 < r < n``, ``0 < s <= n/2``: EIP-2 low-s, which geth's txpool requires)
and recover the sender with libsecp256k1 over the signing hash *we* computed from the request.
Only then is the transaction handed out; a failure raises :class:`ReplyVerificationError`.
"""

from __future__ import annotations

import coincurve

from signer_client.errors import ReplyVerificationError, TxDecodeError
from signer_client.signing import SignedTx, to_checksum_address
from signer_client.txcodec import SECP256K1_HALF_N, SECP256K1_N, TxFields, decode_raw, keccak

__all__ = ["ReplyVerifier"]

_FIELD_NAMES = TxFields.__slots__


class ReplyVerifier:
    """Checks replies; caches each sender's public key so later checks skip a keccak."""

    __slots__ = ("_pubkeys",)

    def __init__(self) -> None:
        self._pubkeys: dict[bytes, tuple[bytes, str]] = {}

    def verify(
        self, fields: TxFields, msg_hash: bytes, sender: bytes, raw_hex: object, hash_hex: object
    ) -> SignedTx:
        """Return the verified :class:`SignedTx` or raise :class:`ReplyVerificationError`."""
        if not isinstance(raw_hex, str) or not isinstance(hash_hex, str):
            raise ReplyVerificationError("format", "raw and hash must be 0x-hex strings")
        try:
            raw = bytes.fromhex(raw_hex[2:])
            claimed = bytes.fromhex(hash_hex[2:])
        except ValueError:
            raise ReplyVerificationError("format", "raw or hash is not hex") from None
        try:
            decoded = decode_raw(raw)
        except TxDecodeError as exc:
            raise ReplyVerificationError("decode", str(exc)) from exc
        if decoded.fields != fields:
            for name in _FIELD_NAMES:
                if getattr(decoded.fields, name) != getattr(fields, name):
                    got, want = getattr(decoded.fields, name), getattr(fields, name)
                    raise ReplyVerificationError(f"field:{name}", f"signed {got!r}, asked {want!r}")
        tx_hash = keccak(raw)
        if tx_hash != claimed:
            raise ReplyVerificationError("hash", "claimed hash is not keccak256(raw)")
        r, s = decoded.r, decoded.s
        if not 0 < r < SECP256K1_N:
            raise ReplyVerificationError("signature", "r out of range")
        if not 0 < s <= SECP256K1_HALF_N:
            raise ReplyVerificationError("low_s", "s is not in the lower half of the order (EIP-2)")
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((decoded.y_parity,))
        try:
            pub = coincurve.PublicKey.from_signature_and_message(sig, msg_hash, hasher=None)
        except Exception as exc:  # coincurve raises a bare Exception on unrecoverable input
            raise ReplyVerificationError("signature", "public key not recoverable") from exc
        pub_bytes = pub.format(compressed=False)
        known = self._pubkeys.get(sender)
        if known is None:
            if keccak(pub_bytes[1:])[12:] != sender:
                raise ReplyVerificationError("sender", "signature recovers to another address")
            known = self._pubkeys[sender] = (pub_bytes, to_checksum_address(sender))
        elif pub_bytes != known[0]:
            raise ReplyVerificationError("sender", "signature recovers to another address")
        return SignedTx(raw, tx_hash, known[1], fields.nonce, fields.chain_id, fields.type)

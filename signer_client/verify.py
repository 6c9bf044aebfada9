"""Reply verification: never trust the signer's answer (DESIGN.md section 6).

For every ``sign_transaction`` reply we prove, before the transaction is handed out:

1. *The raw transaction is exactly what we asked for.* ``raw`` must be our own canonical encoding
   of the requested fields followed by a signature (:func:`~signer_client.payload.split_signed`:
   one byte comparison against the RLP body we already built for the request, then the three
   signature integers). Equal bytes mean every field matches by construction, with no decode into
   fields and no field-by-field compare. When that check fails we decode ``raw`` with the strict
   decoder only to say *which* field differs (``field:<name>``) or that it does not decode.
2. The hash handed out is ``keccak256(raw)``, computed here; a hash the signer sent along (the
   enclave app no longer does, protocol 2) must equal it.
3. The signature is canonical: ``0 < r < n`` and ``0 < s <= n/2`` (EIP-2 low-s, which geth's
   txpool requires).
4. It is by the expected sender *with the transmitted recovery id*: libsecp256k1 recovers the
   public key from ``(y_parity, r, s)`` over the signing hash *we* computed from the request, and
   it must equal the sender's key (whose address is checked once against the sender, then cached).
   Recover-and-compare rather than ``verify``: ``verify`` ignores ``y_parity``, and a wrong one
   would make every node recover some other sender from these bytes. (Measured with coincurve's
   libsecp256k1 here: ``secp256k1_ecdsa_verify`` against the cached, parsed key takes ~37 us, the
   recovery ~42 us. The 5 us are not worth it: ``verify`` only proves ``x(R)``, and telling ``R``
   from ``-R`` afterwards with the calls libsecp256k1 exposes takes a second multiplication.)

A failure raises :class:`ReplyVerificationError` whose ``check`` names the failed step.
"""

from __future__ import annotations

from typing import NoReturn

from signer_client.authorization import SignedAuthorization, authorization_hash
from signer_client.errors import ReplyVerificationError, TxDecodeError
from signer_client.payload import split_signed
from signer_client.secp import recover_uncompressed
from signer_client.signing import SignedTx, new_signed, to_checksum_address
from signer_client.txcodec import (
    SECP256K1_HALF_N,
    SECP256K1_N,
    TxFields,
    body_items,
    decode_raw,
    keccak,
)

__all__ = ["ReplyVerifier"]

_FIELD_NAMES = TxFields._fields
_fromhex = bytes.fromhex


class ReplyVerifier:
    """Checks replies; caches each sender's public key so later checks skip a keccak."""

    __slots__ = ("_pubkeys",)

    def __init__(self) -> None:
        self._pubkeys: dict[bytes, tuple[bytes, str]] = {}

    def verify(
        self,
        fields: TxFields,
        msg_hash: bytes,
        sender: bytes,
        raw_hex: object,
        hash_hex: object,
        body: bytes | None = None,
    ) -> SignedTx:
        """Return the verified :class:`SignedTx` or raise :class:`ReplyVerificationError`.

        ``msg_hash`` is ``signing_hash(fields)``; ``body`` is ``body_items(fields)`` when the caller
        has it already (the client built it for the request). ``hash_hex`` may be ``None``: the
        enclave (protocol 2) leaves the hash out, since we compute ``keccak256(raw)`` ourselves
        anyway; a signer that does send one must send the right one.
        """
        if type(raw_hex) is not str or (hash_hex is not None and type(hash_hex) is not str):
            raise ReplyVerificationError("format", "raw and hash must be 0x-hex strings")
        try:
            raw = _fromhex(raw_hex[2:])
            claimed = None if hash_hex is None else _fromhex(hash_hex[2:])
        except ValueError:
            raise ReplyVerificationError("format", "raw or hash is not hex") from None
        parts = split_signed(raw, fields, body_items(fields) if body is None else body)
        if parts is None:
            _explain_mismatch(raw, fields)
        y_parity, r, s = parts
        tx_hash = keccak(raw)
        if claimed is not None and tx_hash != claimed:
            raise ReplyVerificationError("hash", "claimed hash is not keccak256(raw)")
        if not 0 < r < SECP256K1_N:
            raise ReplyVerificationError("signature", "r out of range")
        if not 0 < s <= SECP256K1_HALF_N:
            raise ReplyVerificationError("low_s", "s is not in the lower half of the order (EIP-2)")
        pub = recover_uncompressed(
            r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((y_parity,)), msg_hash
        )
        if pub is None:
            raise ReplyVerificationError("signature", "public key not recoverable")
        known = self._pubkeys.get(sender)
        if known is None:
            if keccak(pub[1:])[12:] != sender:
                raise ReplyVerificationError("sender", "signature recovers to another address")
            known = self._pubkeys[sender] = (pub, to_checksum_address(sender))
        elif pub != known[0]:
            raise ReplyVerificationError("sender", "signature recovers to another address")
        return new_signed(raw, tx_hash, known[1], fields.nonce, fields.chain_id, fields.type)

    def verify_authorization(
        self, chain_id: int, address: bytes, nonce: int, sender: bytes, sig_hex: object
    ) -> SignedAuthorization:
        """A ``sign_authorization`` reply (``signature``: 65 bytes ``r || s || yParity``, 0x-hex)
        must be a canonical (low-s) signature by ``sender`` over *our* EIP-7702 hash of the
        request, so the item we return delegates exactly what was asked, signed by whom we asked.
        """
        if type(sig_hex) is not str or sig_hex[:2] != "0x" or len(sig_hex) != 132:
            raise ReplyVerificationError("format", "signature must be 65 bytes of 0x-hex")
        try:
            sig = _fromhex(sig_hex[2:])
        except ValueError:
            raise ReplyVerificationError("format", "signature is not hex") from None
        r, s, y_parity = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
        if y_parity > 1:
            raise ReplyVerificationError("signature", "yParity must be 0 or 1")
        if not 0 < r < SECP256K1_N:
            raise ReplyVerificationError("signature", "r out of range")
        if not 0 < s <= SECP256K1_HALF_N:
            raise ReplyVerificationError("low_s", "s is not in the lower half of the order (EIP-2)")
        msg_hash = authorization_hash(chain_id, address, nonce)
        pub = recover_uncompressed(sig, msg_hash)
        if pub is None or keccak(pub[1:])[12:] != sender:
            raise ReplyVerificationError("sender", "signature recovers to another address")
        return SignedAuthorization(chain_id, address, nonce, y_parity, r, s, sender, msg_hash)


def _explain_mismatch(raw: bytes, fields: TxFields) -> NoReturn:
    """``raw`` is not our encoding of ``fields``: raise saying why (the slow, obvious path)."""
    try:
        decoded = decode_raw(raw)
    except TxDecodeError as exc:
        raise ReplyVerificationError("decode", str(exc)) from exc
    for name in _FIELD_NAMES:
        got, want = getattr(decoded.fields, name), getattr(fields, name)
        if got != want:
            raise ReplyVerificationError(f"field:{name}", f"signed {got!r}, asked {want!r}")
    # decode_raw is canonical-only, so equal fields with a bad split means a bad signature part
    # (a legacy v that does not match the chain id cannot reach here: chain_id would differ).
    raise ReplyVerificationError("decode", "raw is not the canonical encoding of the request")

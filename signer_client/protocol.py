"""Messages of the signer wire protocol, version 2 (DESIGN.md section 6).

Every frame body is a JSON object. Requests ``{"id": int, "method": str, "params": {...}}``;
replies ``{"id": int, "result": {...}}`` or ``{"id": int, "error": {"code", "reason"[, "rule"]}}``.
Many requests may be in flight on one connection; replies come back in any order, matched by id.

Version history: 1 sent the transaction as a JSON dict of hex quantities and replied with the
hash too; 2 sends the signing payload (no JSON tx parsing in the enclave, no re-encoding before
hashing) and replies with the raw bytes only. ``hello`` reports the version and the client refuses
a signer that speaks another.

Methods:

``hello`` -> ``{"protocol", "mode", "addresses", "chain_ids", "policy_hash", "log_public_key"}``
``sign_transaction`` ``{"sender", "payload"}`` -> ``{"raw"}`` (0x-hex; a ``"hash"`` may come
  along and is then checked, but the client computes ``keccak256(raw)`` itself). ``payload`` is
  the unsigned EIP-155 / EIP-2718 signing payload (:func:`signer_client.txcodec.signing_payload`),
  whose keccak256 is what gets signed; the signer decodes it strictly
  (:func:`signer_client.payload.decode_payload`) and applies its policy to the decoded fields.
  The dict form ``{"sender", "tx"}`` (``tx`` as :func:`signer_client.txcodec.tx_to_wire` makes
  it) is still accepted.
``attestation`` ``{"nonce"}`` -> ``{"document"}`` (0x-hex COSE_Sign1 bytes, see ``attestation.py``)
``audit_head`` -> ``{"seq", "hash", "signature"}``: the newest audit-log entry, an anchor for the
  verifier, signed by the log key (``enclave.audit.head_digest``).
``audit_entries`` ``{"from_seq", "limit"}`` -> ``{"entries": [...], "head": {...}}``: committed
  entries from ``from_seq`` on (at most 1,000 per call) and the signed head *at the last entry
  returned* (the log's current head when none is), so every page is authenticated by its own
  head; ``evicted`` error when the enclave no longer holds ``from_seq``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from signer_client.errors import ProtocolError

__all__ = [
    "ERROR_CODES",
    "PROTOCOL_VERSION",
    "SignerInfo",
    "error_reply",
    "hello_info_bytes",
    "parse_hello",
]

PROTOCOL_VERSION = 2

#: Error codes a server may send; clients map them with :func:`signer_client.errors.remote_error`.
ERROR_CODES = (
    "policy_denied",  # with "rule": which policy rule refused
    "unknown_sender",  # no key for that address
    "bad_request",  # malformed params or transaction
    "unknown_method",
    "internal",
)


@dataclass(frozen=True, slots=True)
class SignerInfo:
    """What ``hello`` told us about the signer."""

    protocol: int
    mode: str  # "dev" or "nitro"
    addresses: tuple[str, ...]
    chain_ids: tuple[int, ...]
    policy_hash: str
    log_public_key: str


def parse_hello(result: object) -> SignerInfo:
    if not isinstance(result, dict):
        raise ProtocolError("hello: result is not an object")
    try:
        info = SignerInfo(
            protocol=int(result["protocol"]),
            mode=str(result["mode"]),
            addresses=tuple(str(a) for a in result["addresses"]),
            chain_ids=tuple(int(c) for c in result["chain_ids"]),
            policy_hash=str(result["policy_hash"]),
            log_public_key=str(result.get("log_public_key", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"hello: malformed result ({exc!r})") from exc
    if info.protocol != PROTOCOL_VERSION:
        raise ProtocolError(f"signer speaks protocol {info.protocol}, we speak {PROTOCOL_VERSION}")
    return info


def hello_info_bytes(result: dict[str, Any]) -> bytes:
    """Canonical bytes of a hello result; the attestation's ``user_data`` commits to their hash."""
    import orjson

    fields = ("protocol", "mode", "addresses", "chain_ids", "policy_hash", "log_public_key")
    return orjson.dumps({k: result.get(k) for k in fields}, option=orjson.OPT_SORT_KEYS)


def head_digest(seq: int, head: str) -> bytes:
    """What an ``audit_head`` signature covers: ``keccak256("enclave-audit-head" 0x00 ||
    seq (8 bytes, big-endian) || hash (32 bytes))``."""
    from signer_client.txcodec import keccak

    return keccak(b"enclave-audit-head\x00" + seq.to_bytes(8, "big") + bytes.fromhex(head[2:]))


def error_reply(request_id: object, code: str, reason: str, **extra: str) -> dict[str, Any]:
    return {"id": request_id, "error": {"code": code, "reason": reason, **extra}}

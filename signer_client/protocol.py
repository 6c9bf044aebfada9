"""Messages of the signer wire protocol, version 1 (DESIGN.md section 6).

Every frame body is a JSON object. Requests ``{"id": int, "method": str, "params": {...}}``;
replies ``{"id": int, "result": {...}}`` or ``{"id": int, "error": {"code", "reason"[, "rule"]}}``.
Many requests may be in flight on one connection; replies come back in any order, matched by id.

Methods:

``hello`` -> ``{"protocol", "mode", "addresses", "chain_ids", "policy_hash", "log_public_key"}``
``sign_transaction`` ``{"sender", "tx"}`` -> ``{"raw", "hash"}`` (0x-hex; ``tx`` in wire form, see
  :func:`signer_client.txcodec.tx_to_wire`)
``attestation`` ``{"nonce"}`` -> ``{"document"}`` (0x-hex COSE_Sign1 bytes, see ``attestation.py``)
``audit_head`` -> ``{"seq", "hash"}``: the newest audit-log entry, an anchor for the verifier.
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

PROTOCOL_VERSION = 1

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


def error_reply(request_id: object, code: str, reason: str, **extra: str) -> dict[str, Any]:
    return {"id": request_id, "error": {"code": code, "reason": reason, **extra}}

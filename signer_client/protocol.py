"""Messages of the signer wire protocol, version 2 (DESIGN.md section 6).

Every frame body is a JSON object. Requests ``{"id": int, "method": str, "params": {...}}``;
replies ``{"id": int, "result": {...}}`` or ``{"id": int, "error": {"code", "reason"[, "rule"]}}``.
Many requests may be in flight on one connection; replies come back in any order, matched by id.

Version history: 1 sent the transaction as a JSON dict of hex quantities and replied with the
hash too; 2 sends the signing payload (no JSON tx parsing in the enclave, no re-encoding before
hashing) and replies with the raw bytes only. ``hello`` reports the version and the client refuses
a signer that speaks another.

Methods:

``hello`` ``{"lane"?}`` -> ``{"protocol", "mode", "addresses", "chain_ids", "policy_hash",
  "log_public_key"}``. ``"lane": "urgent"`` makes the connection the client's urgent lane: the
  enclave answers it as soon as it reads it, ahead of the ordinary connections' queued requests
  (``enclave/server.py``, ``BATCH``); ``"ordinary"`` or none is the default. Any other value is
  a ``bad_request``. The reply is the same on both lanes.
``sign_transaction`` ``{"sender", "payload"}`` -> ``{"raw"}`` (0x-hex; a ``"hash"`` may come
  along and is then checked, but the client computes ``keccak256(raw)`` itself). ``payload`` is
  the unsigned EIP-155 / EIP-2718 signing payload (:func:`signer_client.txcodec.signing_payload`),
  whose keccak256 is what gets signed; the signer decodes it strictly
  (:func:`signer_client.payload.decode_payload`) and applies its policy to the decoded fields.
  The dict form ``{"sender", "tx"}`` (``tx`` as :func:`signer_client.txcodec.tx_to_wire` makes
  it) is still accepted.
``attestation`` ``{"nonce", "client_key"?}`` -> ``{"document"}`` (0x-hex COSE_Sign1 bytes, see
  ``attestation.py``; its ``public_key`` is the hello's ``log_public_key``, its ``user_data``
  keccak256 of :func:`hello_info_bytes`). With ``client_key`` (0x-hex secp256k1 public key) every
  later reply on the connection carries ``"mac"`` (``channel.py``).
``audit_head`` -> ``{"seq", "hash", "signature"}``: the newest audit-log entry, signed by the
  attested log key over :func:`head_digest` ``(seq, hash)`` (65-byte r||s||v, 0x-hex).
``audit_entries`` ``{"from_seq", "limit"}`` -> ``{"entries": [...], "head": {...}}``: committed
  entries from ``from_seq`` on (at most 1,000 per call) and the signed head *at the last entry
  returned* (the log's current head when none is), so every page is authenticated by its own
  head; ``evicted`` error when the enclave no longer holds ``from_seq``.
``advance_nonce_floor`` ``{"chain", "sender", "nonce"}`` -> ``{}``: the chain's confirmed nonce;
  the enclave forgets and refuses nonces below it (keeps its nonce window moving).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from signer_client.errors import HelloMismatch, ProtocolError

__all__ = [
    "ERROR_CODES",
    "PROTOCOL_VERSION",
    "SignerInfo",
    "SignerPins",
    "check_hello",
    "error_reply",
    "head_digest",
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
    "unsupported",  # e.g. attestation on a signer without an attestor
    "audit_failed",  # the audit entry could not be written: the signature was withheld
    "too_many_connections",
    "read_timeout",  # a frame was not completed in time (the connection is closed)
    "frame_too_large",
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
    auth_address: str | None = None  # the auth key (DESIGN.md 5a), when the policy names one


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
            auth_address=(
                None if result.get("auth_address") is None else str(result["auth_address"])
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"hello: malformed result ({exc!r})") from exc
    if info.protocol != PROTOCOL_VERSION:
        raise ProtocolError(f"signer speaks protocol {info.protocol}, we speak {PROTOCOL_VERSION}")
    return info


@dataclass(frozen=True, slots=True)
class SignerPins:
    """What the client pins and compares with ``hello`` before the first request (DESIGN.md
    section 6a). ``None`` leaves a field unchecked. ``accounts`` must all be held by the signer,
    ``chain_ids`` all allowed by its policy; ``mode`` and ``policy_hash`` must be equal."""

    mode: str | None = None
    policy_hash: str | None = None
    accounts: tuple[str, ...] | None = None
    chain_ids: tuple[int, ...] | None = None


def check_hello(info: SignerInfo, pins: SignerPins) -> None:
    """Raise :class:`HelloMismatch` naming the first field that differs from the pins."""
    if pins.mode is not None and info.mode != pins.mode:
        raise HelloMismatch("mode", f"signer runs in mode {info.mode!r}, pinned {pins.mode!r}")
    if pins.policy_hash is not None and info.policy_hash.lower() != pins.policy_hash.lower():
        raise HelloMismatch(
            "policy_hash",
            f"signer's policy is {info.policy_hash}, pinned {pins.policy_hash}: "
            "its policy was changed",
        )
    if pins.accounts is not None:
        held = {a.lower() for a in info.addresses}
        missing = [a for a in pins.accounts if a.lower() not in held]
        if missing:
            raise HelloMismatch("accounts", f"signer holds no key for {', '.join(missing)}")
    if pins.chain_ids is not None:
        absent = [c for c in pins.chain_ids if c not in info.chain_ids]
        if absent:
            raise HelloMismatch("chain_ids", f"signer's policy does not allow chain id {absent}")


def hello_info_bytes(result: dict[str, Any]) -> bytes:
    """Canonical bytes of a hello result; the attestation's ``user_data`` commits to their hash."""
    import orjson

    fields = ("protocol", "mode", "addresses", "chain_ids", "policy_hash", "log_public_key")
    bound = {k: result.get(k) for k in fields}
    if result.get("auth_address") is not None:  # bound only when there is one: older hellos
        bound["auth_address"] = result["auth_address"]  # hash as they always did
    return orjson.dumps(bound, option=orjson.OPT_SORT_KEYS)


def head_digest(seq: int, head: str) -> bytes:
    """What an ``audit_head`` signature covers: ``keccak256("enclave-audit-head" 0x00 ||
    seq (8 bytes, big-endian) || hash (32 bytes))``."""
    from signer_client.txcodec import keccak

    return keccak(b"enclave-audit-head\x00" + seq.to_bytes(8, "big") + bytes.fromhex(head[2:]))


def error_reply(request_id: object, code: str, reason: str, **extra: str) -> dict[str, Any]:
    return {"id": request_id, "error": {"code": code, "reason": reason, **extra}}

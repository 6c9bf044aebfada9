"""Every error the signer client (and the enclave app, which shares this code) raises.

::

    SignerError                      .code (wire error code), .reason (human text)
    ├── TransactionError             the tx dict or the raw bytes are not a valid transaction
    │   ├── TxFieldError             a field of the request dict is missing or malformed (.field)
    │   └── TxDecodeError            raw bytes are not a canonical EIP-2718 / legacy transaction
    ├── FrameError                   the byte stream broke the framing rules
    │   ├── FrameTooLarge            length prefix above the 1 MiB cap (checked before reading)
    │   └── TruncatedFrame           the stream ended inside a frame
    ├── ProtocolError                a frame held a malformed or unexpected message
    ├── SignerUnavailable            cannot connect, or the connection was lost, within the deadline
    ├── SignerTimeout                no reply within the per-request timeout
    ├── RemoteError                  the signer answered with an error object (code, reason)
    │   ├── PolicyDenied             code ``policy_denied``; ``.rule`` names the rule that denied
    │   ├── UnknownSender            code ``unknown_sender``: the signer holds no key for it
    │   └── BadRequest               code ``bad_request``
    ├── ReplyVerificationError       a reply did not match its request (``.check`` names the check)
    └── AttestationError             an attestation document failed verification (``.check``)
        └── HelloMismatch            ``hello`` disagrees with what the client pinned (``.field``)

Errors carry fields, not only text; third-party exceptions are chained with ``from``.
"""

from __future__ import annotations

__all__ = [
    "AttestationError",
    "BadRequest",
    "FrameError",
    "FrameTooLarge",
    "HelloMismatch",
    "PolicyDenied",
    "ProtocolError",
    "RemoteError",
    "ReplyVerificationError",
    "SignerError",
    "SignerTimeout",
    "SignerUnavailable",
    "TransactionError",
    "TruncatedFrame",
    "TxDecodeError",
    "TxFieldError",
    "UnknownSender",
    "remote_error",
]


class SignerError(Exception):
    """Base of the tree. ``code`` is a stable machine-readable string (also used on the wire)."""

    code: str = "signer_error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransactionError(SignerError, ValueError):
    code = "bad_transaction"


class TxFieldError(TransactionError):
    code = "bad_request"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


class TxDecodeError(TransactionError):
    code = "bad_transaction"


class FrameError(SignerError):
    code = "frame_error"


class FrameTooLarge(FrameError):
    code = "frame_too_large"

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the {limit}-byte cap")
        self.length = length
        self.limit = limit


class TruncatedFrame(FrameError):
    code = "truncated_frame"


class ProtocolError(SignerError):
    code = "protocol_error"


class SignerUnavailable(SignerError):
    code = "unavailable"


class SignerTimeout(SignerError):
    code = "timeout"


class RemoteError(SignerError):
    """An error reply from the signer: ``{"code": ..., "reason": ...}``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


class PolicyDenied(RemoteError):
    """The enclave policy refused to sign. ``rule`` is e.g. ``to_not_allowed``, ``fee_cap``."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__("policy_denied", reason)
        self.rule = rule

    def __str__(self) -> str:
        return f"policy_denied ({self.rule}): {self.reason}"


class UnknownSender(RemoteError):
    def __init__(self, reason: str) -> None:
        super().__init__("unknown_sender", reason)


class BadRequest(RemoteError):
    def __init__(self, reason: str) -> None:
        super().__init__("bad_request", reason)


class ReplyVerificationError(SignerError):
    """A reply failed verification; it must never be broadcast. ``check``: which check failed."""

    code = "reply_invalid"

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(f"{check}: {reason}")
        self.check = check


class AttestationError(SignerError):
    """Attestation failed; ``check`` is e.g. ``root``, ``chain``, ``signature``, ``pcr0``."""

    code = "attestation_failed"

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(f"{check}: {reason}")
        self.check = check


class HelloMismatch(AttestationError):
    """The signer's ``hello`` is not the one pinned: ``field`` is ``mode``, ``policy_hash``,
    ``accounts``, ``chain_ids`` or ``public_key`` (the attested key is not the hello's)."""

    code = "hello_mismatch"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"hello:{field}", reason)
        self.field = field


def remote_error(error: object) -> RemoteError:
    """Map a wire error object to the matching exception class."""
    if not isinstance(error, dict):
        return RemoteError("protocol_error", f"malformed error object: {error!r}")
    code = str(error.get("code", "unknown"))
    reason = str(error.get("reason", ""))
    if code == "policy_denied":
        return PolicyDenied(str(error.get("rule", "unknown")), reason)
    if code == "unknown_sender":
        return UnknownSender(reason)
    if code == "bad_request":
        return BadRequest(reason)
    return RemoteError(code, reason)

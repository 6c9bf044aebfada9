"""Failure and lifecycle events the client reports through an injected ``on_event(kind)`` hook.

The client stays free of any metrics library: the service maps these kinds onto Prometheus
counters (e.g. ``broadcaster_signer_events_total{kind}``); tests pass an :class:`EventCounter`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from enum import StrEnum

__all__ = ["EventCounter", "EventSink", "SignerEvent", "backoff"]

EventSink = Callable[[str], None]


class SignerEvent(StrEnum):
    CONNECTED = "connected"
    CONNECT_FAILED = "connect_failed"
    DISCONNECTED = "disconnected"
    RETRY = "retry"  # a request re-sent after its connection was lost (signing is idempotent)
    SIGNED = "signed"
    TIMEOUT = "timeout"
    REPLY_INVALID = "reply_invalid"  # ReplyVerificationError: the reply is never handed out
    POLICY_DENIED = "policy_denied"
    REMOTE_ERROR = "remote_error"
    FRAME_TOO_LARGE = "frame_too_large"
    FRAME_TRUNCATED = "frame_truncated"
    PROTOCOL_ERROR = "protocol_error"
    LATE_REPLY = "late_reply"  # a reply to a request we had given up on
    ATTESTED = "attested"
    ATTESTATION_FAILED = "attestation_failed"
    HELLO_MISMATCH = "hello_mismatch"  # hello disagrees with the pins: the signer is not used
    CHANNEL_INVALID = "channel_invalid"  # a reply without the attested channel's MAC
    # sign_auth (X-Flashbots-Signature) asked of a signer whose policy names no auth key
    NO_AUTH_KEY = "no_auth_key"


class EventCounter(Counter[str]):
    """A ready-made sink: ``SignerClient(url, on_event=counter)``, then ``counter["timeout"]``."""

    def __call__(self, kind: str) -> None:
        self[kind] += 1


def backoff(
    initial: float = 0.005,
    factor: float = 2.0,
    maximum: float = 0.5,
    jitter: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Reconnect delays, exponential with full jitter: ``U(0, min(maximum, initial*factor**k))``."""
    delay = initial
    while True:
        yield delay * jitter()
        delay = min(maximum, delay * factor)

"""The errors of ``heads/``, in one tree (CONVENTIONS.md 6)::

    HeadsError
    ├── HeaderError          a header field is not the hex text JSON-RPC promises (malformed)
    ├── RecordingError       a line of a recording is not a valid DESIGN.md §4 record
    ├── SubscriptionEnded    a client subscription returned; it must not (CONVENTIONS.md 7)
    └── SessionLost          one websocket session ended; the subscriber reconnects
        ├── WatchdogExpired  no head arrived within the watchdog period on an open socket
        ├── SubscribeFailed  the node answered ``eth_subscribe`` with an error
        └── ChainIdMismatch  the node's ``eth_chainId`` is not the configured chain: kept out

The tracker never raises for bad input: a header it refuses is a ``Rejected`` event, counted by
client and reason. These errors are for the I/O around it. Third-party exceptions (websockets,
OSError) are converted where a session ends, and chained with ``from``.
"""

from __future__ import annotations

__all__ = [
    "ChainIdMismatch",
    "HeaderError",
    "HeadsError",
    "RecordingError",
    "SessionLost",
    "SubscribeFailed",
    "SubscriptionEnded",
    "WatchdogExpired",
]


class HeadsError(Exception):
    """Base of every error ``heads/`` raises."""


class HeaderError(HeadsError, ValueError):
    """A header field is not the hex text JSON-RPC promises (so the header is malformed)."""


class RecordingError(HeadsError, ValueError):
    """A line in the middle of a recording is not a valid §4 record."""

    def __init__(self, path: str, line_number: int, reason: str) -> None:
        super().__init__(f"{path}:{line_number}: {reason}")
        self.path = path
        self.line_number = line_number
        self.reason = reason


class SubscriptionEnded(HeadsError, RuntimeError):
    """A client subscription returned; it must not (CONVENTIONS.md 7)."""


class SessionLost(HeadsError):
    """One websocket session of a client ended for a reason that passes: reconnect."""


class WatchdogExpired(SessionLost):
    """No head arrived within the watchdog period on an open socket."""


class SubscribeFailed(SessionLost):
    """The node answered ``eth_subscribe`` with an error (or not with a subscription id)."""


class ChainIdMismatch(SessionLost):
    """The node answered ``eth_chainId`` with another chain than the configured one (or not a
    quantity): its heads are kept out (never subscribed), and it is asked again after a backoff."""

    def __init__(self, client: str, expected: int, answered: object) -> None:
        super().__init__(
            f"client {client}: eth_chainId answered {answered!r:.80}, configured chain is "
            f"{expected} ({hex(expected)}): kept out"
        )
        self.client = client
        self.expected = expected
        self.answered = answered

"""Request priority: a reorg reaction's signatures go ahead of new intents' signatures.

The broadcaster re-signs what a reorg dropped while a stream of new intents may be waiting for
the same signer; a reaction that waits behind that backlog loses the block. A request made
inside ``with urgent():`` (a context variable, so it follows the task that makes the request
and needs no new parameter on ``sign_transaction``) is *urgent* for :class:`SignerClient`:

- it takes a request slot ahead of every waiting ordinary request (urgent ones among
  themselves first come, first served);
- it may use up to :data:`URGENT_RESERVE` slots beyond ``max_in_flight``, so a client whose
  slots are all held by ordinary requests still writes it at once.

Nothing else changes: the enclave answers requests in the order it reads them, so an urgent
request written now still waits for the requests already written before it (at most
``max_in_flight``: the setting bounds how far behind it can be). Every check of the reply is the
same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["URGENT", "URGENT_RESERVE", "urgent"]

URGENT: ContextVar[bool] = ContextVar("signer_client_urgent", default=False)
"""True inside :func:`urgent`: the requests made there are urgent."""

URGENT_RESERVE = 16
"""Slots beyond ``max_in_flight`` that only urgent requests may take."""


@contextmanager
def urgent() -> Iterator[None]:
    """Requests made inside (by this task, and tasks it creates meanwhile) are urgent."""
    token = URGENT.set(True)
    try:
        yield
    finally:
        URGENT.reset(token)

"""Request priority: a reorg reaction's signatures go ahead of new intents' signatures.

The broadcaster re-signs what a reorg dropped while a stream of new intents may be waiting for
the same signer; a reaction that waits behind that backlog loses the block. A request made
inside ``with urgent():`` (a context variable, so it follows the task that makes the request
and needs no new parameter on ``sign_transaction``) is *urgent* for :class:`SignerClient`:

- it takes a request slot ahead of every waiting ordinary request (urgent ones among
  themselves first come, first served);
- it may use up to :data:`URGENT_RESERVE` slots beyond ``max_in_flight``, so a client whose
  slots are all held by ordinary requests still writes it at once.

- it is written on the client's second connection, the *urgent lane* (its ``hello`` says
  ``{"lane": "urgent"}``), which the enclave app answers as soon as it reads it: an ordinary
  connection's backlog is answered a batch (``enclave.server.BATCH``) per loop pass, so an
  urgent request waits for at most the batch under way, not for the up to ``max_in_flight``
  requests written before it on the ordinary connection.

Every check of the reply is the same, and the urgent lane is attested and bound like the first.
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

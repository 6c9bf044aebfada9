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

Among urgent requests, a reaction's own and the replacements signed ahead (``with
urgent(ahead=True):``) are first, the last asked first served: such a request takes a free slot
even while other urgent requests wait for one, and otherwise waits at the head of their queue.
Presignatures come by the block (every transaction of ours in a new block asks for one at
once), and the newest block's are the ones a reorg needs first; fee bumps and cancels' noops
stay first come, first served behind them.

Every check of the reply is the same, and the urgent lane is attested and bound like the first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["AHEAD", "URGENT", "URGENT_RESERVE", "urgent"]

URGENT: ContextVar[bool] = ContextVar("signer_client_urgent", default=False)
"""True inside :func:`urgent`: the requests made there are urgent."""

AHEAD: ContextVar[bool] = ContextVar("signer_client_ahead", default=False)
"""True inside ``urgent(ahead=True)``: a reaction's own request, ahead of the other urgent ones."""

URGENT_RESERVE = 16
"""Slots beyond ``max_in_flight`` that only urgent requests may take."""


@contextmanager
def urgent(*, ahead: bool = False) -> Iterator[None]:
    """Requests made inside (by this task, and tasks it creates meanwhile) are urgent; with
    ``ahead``, also ahead of the other urgent requests waiting for a slot."""
    token = URGENT.set(True)
    ahead_token = AHEAD.set(ahead)
    try:
        yield
    finally:
        AHEAD.reset(ahead_token)
        URGENT.reset(token)

"""Request priority: a reorg reaction's signatures go ahead of everything else at the signer.

The broadcaster re-signs what a reorg dropped while a stream of new intents, and the
presignatures of every transaction of ours in a newly mined block, may be waiting for the same
signer; a reaction that waits behind that backlog loses the block. A request's *level* follows
the task that makes it (a context variable, so ``sign_transaction``'s signature and every
``Signer`` fake are unchanged). :class:`SignerClient` serves three levels:

1. :data:`REACTION` (``with reacting():``): a reaction's own requests (its re-signs, noops,
   flashbots auth signatures), first come first served among themselves, ahead of everything;
2. :data:`LOCKED` (``with urgent():``): presignatures, fee bumps, a cancel's noop -- requests
   made while holding a nonce's lock, first come first served, ahead of the ordinary ones;
3. ordinary (no context): new intents' signatures.

Requests at either urgent level may use up to :data:`URGENT_RESERVE` slots beyond
``max_in_flight`` and are written on the client's second connection, the *urgent lane* (its
``hello`` says ``{"lane": "urgent"}``), which the enclave app answers as soon as it reads it: an
ordinary connection's backlog is answered a batch (``enclave.server.BATCH``) per loop pass.

**Priority inheritance.** A level-2 request holds a nonce's lock while it waits; a reaction that
needs that lock would wait behind every level-2 request queued before it. So a request's level is
a :class:`Ticket`: the lock's holder registers its ticket on the lock, and a reaction that finds
the lock held :meth:`~Ticket.promote`\\ s it to level 1 -- the client moves a queued request to
the reaction queue at once. Nothing that waits on a lock ever passes the lock's holder.

Every check of the reply is the same, and the urgent lane is attested and bound like the first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = [
    "LOCKED",
    "ORDINARY_LEVEL",
    "REACTION",
    "TICKET",
    "URGENT",
    "URGENT_RESERVE",
    "Ticket",
    "reacting",
    "urgent",
]

REACTION, LOCKED, ORDINARY_LEVEL = 0, 1, 2
"""The levels, highest first (indexes of the client's waiter queues)."""

URGENT: ContextVar[bool] = ContextVar("signer_client_urgent", default=False)
"""True inside :func:`urgent` or :func:`reacting`: the requests made there go on the urgent
lane (and a reaction's bodies ahead of an endpoint's queued ones)."""

URGENT_RESERVE = 16
"""Slots beyond ``max_in_flight`` that only urgent requests may take."""


class Ticket:
    """The level of the requests made under it; :meth:`promote` raises it to :data:`REACTION`
    (the client moves a request of it that waits for a slot to the reaction queue)."""

    __slots__ = ("level", "on_promote")

    def __init__(self, level: int = LOCKED) -> None:
        self.level = level
        # Set by the client while a request of this ticket waits for a slot.
        self.on_promote: Callable[[], None] | None = None

    def promote(self) -> None:
        if self.level > REACTION:
            self.level = REACTION
            callback, self.on_promote = self.on_promote, None
            if callback is not None:
                callback()


TICKET: ContextVar[Ticket | None] = ContextVar("signer_client_ticket", default=None)
"""The current task's ticket (None: ordinary, unless :data:`URGENT` is set: then level 2)."""


@contextmanager
def urgent(ticket: Ticket | None = None) -> Iterator[Ticket]:
    """Requests made inside (by this task, and tasks it creates meanwhile) are urgent, level
    :data:`LOCKED` (or ``ticket``'s level: a holder's ticket a reaction may promote)."""
    ticket = ticket if ticket is not None else Ticket(LOCKED)
    token = URGENT.set(True)
    ticket_token = TICKET.set(ticket)
    try:
        yield ticket
    finally:
        TICKET.reset(ticket_token)
        URGENT.reset(token)


@contextmanager
def reacting() -> Iterator[Ticket]:
    """Requests made inside are a reorg reaction's own: level :data:`REACTION`."""
    with urgent(Ticket(REACTION)) as ticket:
        yield ticket

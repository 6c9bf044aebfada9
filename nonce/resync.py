"""The next-nonce rule and gap detection, as pure functions over one sender's slots.

``NonceBook.resync`` and ``NonceBook.gaps`` apply them; ``recovery`` reuses them after a restart.
Inputs are the sender's occupied slots (``nonce -> TxRecord``) and the chain's
``eth_getTransactionCount`` at ``latest`` (mined) and ``pending`` (mined + the node's mempool).

The rule (DESIGN.md §5, "it may go backwards after a reorg")::

    held = 1 + the highest nonce of a record that covers its nonce or was ever signed
           (0 when there is none)
    next = max(chain_latest, chain_pending, held)

- ``chain_latest`` nonces are mined: never hand them out again.
- ``chain_pending`` counts the node's mempool too: nonces up to it may belong to transactions we
  do not know (another process with the key); do not collide with them.
- ``held`` keeps every nonce we are still responsible for, reorged ones included: they are
  re-signed at the same nonce, so a reorg alone never moves ``next`` back past them. A record that
  was ever signed counts even when given up, because its bytes may still sit in mempools.
- ``next`` moves backwards when the top of the range was reserved but never signed and then given
  up (cancelled before signing, a signer denial), or reserved and never booked: those nonces are
  reused rather than plugged with noops. Given-up records there are released (journaled).

A record whose payload carries a self-sponsored EIP-7702 authorization spans two nonces
(``TxRecord.span``): its own ``n`` and the authorization's ``n + 1``, which is then no gap.

A *gap* is a nonce ``n`` with ``chain_latest <= n < held`` that no record covers (nothing booked
there, or an intent given up without a noop): every later nonce of the sender is stuck behind it
until the manager signs a 0-value self-transfer there. Nonces at or above ``held`` are never gaps:
the node's mempool may hold foreign transactions at them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nonce.state import Address, TxRecord


@dataclass(frozen=True, slots=True)
class ResyncResult:
    """What ``NonceBook.resync`` decided for one sender.

    ``released``: nonces handed back for reuse. ``gaps``: nonces the manager must fill with noops.
    """

    sender: Address
    old_next: int | None
    next: int
    released: tuple[int, ...]
    gaps: tuple[int, ...]


def held_top(slots: Mapping[int, TxRecord]) -> int:
    """One past the highest nonce we are responsible for (0 when none)."""
    held = 0
    for nonce, record in slots.items():
        if nonce >= held and (record.attempts or record.covers_nonce):
            held = nonce + record.span  # 2 for a self-sponsored EIP-7702 authorization
    return held


def next_nonce(slots: Mapping[int, TxRecord], chain_latest: int, chain_pending: int) -> int:
    """The module docstring's rule."""
    return max(chain_latest, chain_pending, held_top(slots))


def find_gaps(slots: Mapping[int, TxRecord], chain_latest: int) -> list[int]:
    """Nonces in ``[chain_latest, held)`` that no record covers, ascending."""
    out: list[int] = []
    for nonce in range(chain_latest, held_top(slots)):
        record = slots.get(nonce)
        if record is None or not record.covers_nonce:
            below = slots.get(nonce - 1)
            if record is None and below is not None and below.covers_nonce and below.span > 1:
                continue  # the authorization nonce of the record below (EIP-7702)
            out.append(nonce)
    return out


__all__ = ["ResyncResult", "find_gaps", "held_top", "next_nonce"]

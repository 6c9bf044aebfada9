"""Hash continuity: every hash an intent ever had names its current transaction (pure).

DESIGN.md §7 "The reorg is invisible to a bot". A bot holds the hash ``eth_sendTransaction``
(or ``sendIntent``) gave it. After a reorg the broadcaster re-signs at the same nonce with
higher fees, under a hash the bot never learns, and a plain node answers ``null`` for the old
one forever: web3.py's ``wait_for_transaction_receipt``, ethers' ``waitForTransaction`` and
viem's ``waitForTransactionReceipt`` then time out and the bot, believing its trade failed,
trades again. So for a hash we know, ``eth_getTransactionReceipt`` and
``eth_getTransactionByHash`` are asked about the intent's *canonical attempt* instead:

- included: the attempt the canonical block holds (its receipt has its own
  ``transactionHash``, which is how a bot can tell it was replaced);
- not included: the latest attempt (pending: ``eth_getTransactionByHash`` answers it with
  ``blockHash: null``; ``eth_getTransactionReceipt`` answers ``null``);
- but a payload hash never resolves to a *noop* (the 0-value self-transfer that took the nonce
  of a cancelled or expired intent): that would hand a bot a successful receipt for a trade
  that never happened. Such a hash resolves to the latest payload attempt, which the chain
  answers ``null`` for; the noop's own hash resolves to itself.

The node's answer is then checked against our canonical block (``server.py``): a receipt only
for the included attempt and only from that block, and a transaction object that says "mined"
somewhere else, is ``null`` (a lagging node on an abandoned branch, a cancelled payload).

Hashes we do not know (or that a tenant may not see) go to the node unchanged.
"""

from __future__ import annotations

from nonce import Attempt, TxRecord

__all__ = ["canonical_attempt"]


def canonical_attempt(record: TxRecord, asked: bytes) -> Attempt | None:
    """The attempt of ``record`` the hash ``asked`` (one of its attempts') stands for now."""
    attempts = record.attempts
    if not attempts:
        return None
    asked_attempt = next((a for a in attempts if a.hash == asked), None)
    wants_noop = asked_attempt is not None and asked_attempt.is_noop
    if record.included_hash is not None:
        included = next((a for a in attempts if a.hash == record.included_hash), None)
        if included is not None and (wants_noop or not included.is_noop):
            return included
    if wants_noop:
        return asked_attempt
    payloads = [a for a in attempts if not a.is_noop]
    return payloads[-1] if payloads else None

"""Private orderflow decisions (DESIGN.md section 5a): pure ``plan_*`` functions.

A private intent's latest attempt goes to every ``builder`` endpoint as a one-transaction bundle
for the next block (``eth_sendBundle {txs, blockNumber: tip + 1, replacementUuid}``, the
Flashbots bundle API) and to every ``private`` endpoint as ``eth_sendPrivateTransaction {tx,
maxBlockNumber}``. A bundle targets one block only, so every new head re-targets it at the new
``tip + 1`` under the same ``replacementUuid`` (derived from the intent id: builders replace,
never hold duplicates) until something of ours is mined at its nonce or ``validUntilBlock``
passes; a given-up intent's bundle is cancelled (``eth_cancelBundle {replacementUuid}``) and its
private transactions too (``eth_cancelPrivateTransaction {txHash}``).

After a reorg that drops the transaction the reaction re-signs it (fees +10 %) and submits it
like any attempt: :func:`plan_submit` then sends the replacement as a bundle for the new
``tip + 1``, inside the same reaction, under the same ``replacementUuid``.

No I/O, no clock: the router (:mod:`broadcaster.tx.routing`) executes what these return.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "PRIVATE_TX_BLOCKS",
    "CancelBundle",
    "CancelPrivate",
    "OrderflowAction",
    "SendBundle",
    "SendPrivate",
    "Target",
    "plan_cancel",
    "plan_head",
    "plan_submit",
    "replacement_uuid",
]

PRIVATE_TX_BLOCKS = 25
"""``maxBlockNumber`` of a private transaction without ``validUntilBlock``: tip + this (the
Flashbots Protect default window)."""

_NAMESPACE = uuid.UUID("5f1f0c3e-5a0b-4c59-9d3c-6f726465726c")  # fixed: ids stable across runs


def replacement_uuid(intent_id: str, *, noop: bool = False) -> str:
    """The intent's ``replacementUuid`` (a UUIDv5 of its id): the same for every attempt of the
    intent, so each new bundle replaces the previous one at the builder. A noop (the cancel's
    0-value self-transfer) gets its own, so cancelling the payload's bundle leaves it alone."""
    return str(uuid.uuid5(_NAMESPACE, intent_id + (":noop" if noop else "")))


@dataclass(frozen=True, slots=True)
class Target:
    """What is live for one private intent: its latest attempt and the facts the plans read.

    ``mined``: something of ours is in a canonical block at the intent's nonce (stop sending;
    a reorg that drops it re-submits through the reaction). ``given_up``: cancelled, expired or
    failed. ``noop``: the latest attempt is the noop that takes the nonce.
    """

    intent_id: str
    raw: bytes
    tx_hash: bytes
    valid_until: int | None
    mined: bool = False
    given_up: bool = False
    noop: bool = False

    @property
    def uuid(self) -> str:
        return replacement_uuid(self.intent_id, noop=self.noop)


@dataclass(frozen=True, slots=True)
class SendBundle:
    """``eth_sendBundle {txs, blockNumber, replacementUuid}`` to every builder."""

    intent_id: str
    uuid: str
    txs: tuple[bytes, ...]
    block_number: int
    retarget: bool  # sent again for a new head (not a new attempt)
    reverting: tuple[bytes, ...] = ()  # revertingTxHashes (broadcaster_sendBundle only)


@dataclass(frozen=True, slots=True)
class SendPrivate:
    """``eth_sendPrivateTransaction {tx, maxBlockNumber}`` to every private RPC."""

    intent_id: str
    raw: bytes
    max_block_number: int


@dataclass(frozen=True, slots=True)
class CancelBundle:
    """``eth_cancelBundle {replacementUuid}`` to every builder; the target is forgotten."""

    intent_id: str
    uuid: str


@dataclass(frozen=True, slots=True)
class CancelPrivate:
    """``eth_cancelPrivateTransaction {txHash}`` to every private RPC."""

    intent_id: str
    tx_hash: bytes


OrderflowAction = SendBundle | SendPrivate | CancelBundle | CancelPrivate


def _next_block(tip: int) -> int:
    return tip + 1


def plan_submit(
    target: Target, tip: int, *, builders: bool, private: bool
) -> list[OrderflowAction]:
    """A new attempt of a private intent (first send, replacement, noop) at chain tip ``tip``.

    Nothing is sent for an intent whose next block is already past ``validUntilBlock`` (the
    executor replaces those with a noop, which is not bound by it).
    """
    block = _next_block(tip)
    if not target.noop and target.valid_until is not None and block > target.valid_until:
        return []
    actions: list[OrderflowAction] = []
    if builders:
        actions.append(SendBundle(target.intent_id, target.uuid, (target.raw,), block, False))
    if private:
        until = target.valid_until if target.valid_until is not None and not target.noop else None
        actions.append(SendPrivate(target.intent_id, target.raw, until or tip + PRIVATE_TX_BLOCKS))
    return actions


def plan_head(targets: Iterable[Target], tip: int, *, builders: bool) -> list[OrderflowAction]:
    """A new canonical head ``tip``: re-target every live bundle at ``tip + 1``; cancel those of
    given-up intents and those past ``validUntilBlock``. Mined ones are left alone (kept, so a
    reorg re-submits them through the reaction). Private transactions need nothing per head:
    the private RPC holds them until ``maxBlockNumber``."""
    block = _next_block(tip)
    actions: list[OrderflowAction] = []
    for target in targets:
        if target.mined:
            continue
        if target.given_up and not target.noop:
            actions.extend(plan_cancel(target, builders=builders, private=False))
            continue
        if not target.noop and target.valid_until is not None and block > target.valid_until:
            if builders:
                actions.append(CancelBundle(target.intent_id, target.uuid))
            continue
        if builders:
            actions.append(SendBundle(target.intent_id, target.uuid, (target.raw,), block, True))
    return actions


def plan_cancel(
    target: Target, *, builders: bool, private: bool, hashes: Sequence[bytes] = ()
) -> list[OrderflowAction]:
    """A private intent was cancelled or expired: cancel its payload bundle (never the noop's)
    and every private transaction of its payload (``hashes``, default its latest)."""
    actions: list[OrderflowAction] = []
    if builders:
        actions.append(CancelBundle(target.intent_id, replacement_uuid(target.intent_id)))
    if private:
        actions.extend(CancelPrivate(target.intent_id, h) for h in hashes or (target.tx_hash,))
    return actions

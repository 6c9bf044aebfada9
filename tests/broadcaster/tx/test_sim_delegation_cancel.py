"""A cancelled EIP-7702 self-sponsored delegation whose payload went out (simulator, with the
real enclave app and its real policy): once the cancel's noop is mined at ``n``, the signed
authorization for ``n + 1`` is public, and anyone could put it in a type-4 tx of their own
while the account's nonce is ``n + 1`` and delegate the account the bot was told is
"cancelled". ``n + 1`` is burned at once by a second noop the enclave signs; the next intent
gets ``n + 2``."""

from __future__ import annotations

import dataclasses

import pytest

from broadcaster.tx.testing import Sim, SimFactory
from broadcaster.tx.testing.config import CHAIN_ID, default_policy
from nonce import AuthItem, Intent, TxState

DELEGATE = "0x5fbdb2315678afecb367f032d93f642f64180aa3"


def _delegating(sims: SimFactory) -> Sim:
    return sims(policy=dataclasses.replace(default_policy(), allowed_delegates=(DELEGATE,)))


def _delegation(sim: Sim, valid_until: int | None = None) -> Intent:
    intent = dataclasses.replace(
        sim.intent(valid_until=valid_until),
        tx_type=4,
        gas=100_000,
        authorizations=(AuthItem(CHAIN_ID, DELEGATE),),
    )
    sim.intents[intent.id] = intent
    return intent


def _noops_signed_at(sim: Sim, sender: str, nonce: int) -> list[object]:
    return [
        r
        for r in sim.enclave.signed()
        if r.sender == sender and r.fields.nonce == nonce and r.fields.value == 0
        and "0x" + r.fields.to.hex() == sender
    ]  # fmt: skip


@pytest.mark.parametrize("restart", [False, True])
def test_a_cancelled_delegations_authorization_nonce_is_burned_once_its_noop_is_mined(
    sims: SimFactory, restart: bool
) -> None:
    sim = _delegating(sims)
    record = sim.run(sim.submit(_delegation(sim)))
    n, sender = record.nonce, record.sender
    assert record.span == 2
    assert sim.enclave.authorizations == [(sender, CHAIN_ID, DELEGATE, n + 1)]
    assert any(t.nonce == n and t.type == 4 for t in sim.host.fanout.sent), "payload not sent"
    sim.run(sim.cancel(record.intent.id))
    if restart:
        sim.run(sim.crash())  # down from the cancel on: the burn is found at recovery
    sim.run(sim.mine(exclude=lambda tx: tx.type == 4))  # the cancel's noop wins at n
    assert sim.tip.nonce(sender) == n + 1
    if restart:
        sim.run(sim.restart())
    sim.run(sim.mine(2))
    assert sim.tip.nonce(sender) == n + 2, (
        "n + 1 was left open: the public authorization for it can still delegate the account"
    )
    assert _noops_signed_at(sim, sender, n + 1), "the enclave signed no noop at n + 1"
    assert sim.record(record.intent.id).state is TxState.CANCELLED
    after = sim.run(sim.submit())
    assert after.nonce == n + 2, "the next intent must not wait for (or get) the burned n + 1"
    sim.run(sim.mine(2))
    assert sim.tip.nonce(sender) == n + 3


def test_an_expired_delegations_authorization_nonce_is_burned_once_its_noop_is_mined(
    sims: SimFactory,
) -> None:
    sim = _delegating(sims)
    record = sim.run(sim.submit(_delegation(sim, valid_until=sim.tip.number + 1)))
    n, sender = record.nonce, record.sender
    sim.run(sim.mine(3, exclude=lambda tx: tx.type == 4))  # never mined: the expiry noop is
    assert sim.record(record.intent.id).state is TxState.EXPIRED
    sim.run(sim.mine(2))
    assert sim.tip.nonce(sender) == n + 2, "n + 1 left open after the expiry's noop won n"
    assert _noops_signed_at(sim, sender, n + 1), "the enclave signed no noop at n + 1"
    assert sim.record(record.intent.id).state is TxState.EXPIRED

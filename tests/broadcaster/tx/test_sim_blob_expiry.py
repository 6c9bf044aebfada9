"""An expired blob intent whose blob transaction was sent (simulator, real enclave policy):
the nodes pool no type-2 noop beside a pooled blob tx ('address already reserved', modelled
here as geth answers it), so the expiry's noop cannot take the nonce while the blob tx may
still be mined. The bot is not told "expired" until the chain resolves the nonce: the noop
mined -> expired; the blob tx mined -> included. Meanwhile the intent stays pending, with a
``state_reason`` saying why."""

from __future__ import annotations

import dataclasses

import pytest

from broadcaster.tx.testing import GWEI, Sim, SimFactory, SimTx
from broadcaster.tx.typed import EXPIRY_WAITS
from nonce import TxRecord, TxState
from nonce.book import EXPIRED_BY_NOOP

BLOB = b"".join(b"\0" + i.to_bytes(31, "big") for i in range(4096))
RESERVED = "address already reserved"


def _one_pool_per_account(sim: Sim) -> None:
    """geth's (and reth's) rule: an account with a pooled blob tx gets no other tx pooled."""
    for node in sim.network.nodes.values():

        def rule(tx: SimTx, pool: dict[tuple[str, int], SimTx] = node.pool) -> str | None:
            if tx.type == 3:
                return None
            blob = any(s == tx.sender and held.type == 3 for (s, _), held in pool.items())
            return RESERVED if blob else None

        node.rules.append(rule)


def _expired_blob(sim: Sim) -> TxRecord:
    """A blob intent sent, then left unmined past its validUntilBlock (blocks without it)."""
    _one_pool_per_account(sim)
    intent = dataclasses.replace(
        sim.intent(valid_until=sim.tip.number + 1),
        tx_type=3, blobs=(BLOB,), max_fee_per_blob_gas=GWEI,
    )  # fmt: skip
    sim.intents[intent.id] = intent
    record = sim.run(sim.submit(intent))
    assert record.state is TxState.BROADCAST
    sim.run(sim.mine(3, exclude=lambda tx: tx.type == 3))
    record = sim.record(intent.id)
    assert record.has_noop, "no expiry noop was signed"
    refused = [t for t in sim.host.fanout.sent if t.nonce == record.nonce and t.type == 2]
    assert refused, "the expiry noop was never tried"
    return record


def _waiting(sim: Sim, record: TxRecord) -> None:
    events = sim.checker.events(record.intent.id)
    assert "expired" not in events, f"told 'expired' while the blob tx may be mined: {events}"
    assert record.state in (TxState.SIGNED, TxState.BROADCAST), record.state
    assert record.state_reason == EXPIRY_WAITS


def test_an_expired_blob_intent_mined_after_all_is_included_never_expired(
    sims: SimFactory,
) -> None:
    sim = sims()
    record = _expired_blob(sim)
    _waiting(sim, record)
    sim.run(sim.mine())  # the blob tx, still pooled, is mined
    assert sim.tip.nonce(record.sender) == record.nonce + 1
    final = sim.record(record.intent.id)
    assert final.state is TxState.INCLUDED, final.state
    assert final.included_hash == record.attempts[0].hash
    assert "expired" not in sim.checker.events(record.intent.id)


@pytest.mark.parametrize("restart", [False, True])
def test_an_expired_blob_intent_is_expired_once_its_noop_took_the_nonce(
    sims: SimFactory, restart: bool
) -> None:
    sim = sims()
    record = _expired_blob(sim)
    _waiting(sim, record)
    if restart:  # kill -9 while it waits: the journal brings back the wait, not "expired"
        sim.run(sim.crash())
        sim.run(sim.restart())
        record = sim.record(record.intent.id)
        _waiting(sim, record)
    for node in sim.network.nodes.values():  # the blob tx leaves every pool (evicted)
        node.pool.pop((record.sender, record.nonce), None)
    sim.run(sim.mine(4, exclude=lambda tx: tx.type == 3))
    assert sim.tip.nonce(record.sender) == record.nonce + 1, "the noop never took the nonce"
    final = sim.record(record.intent.id)
    assert final.state is TxState.EXPIRED, final.state
    assert final.state_reason == EXPIRED_BY_NOOP
    assert final.block is not None and final.included_hash != record.attempts[0].hash
    assert "expired" in sim.checker.events(record.intent.id)
    sim.run(sim.mine(sim.config.finality_depth + 2))
    assert sim.record(record.intent.id).settled, "the expired record is watched forever"

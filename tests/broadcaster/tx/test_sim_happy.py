"""Happy paths through the simulator: what the manager gets right today (DESIGN.md §5)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broadcaster.tx.testing import GWEI, Sim, SimConfig
from nonce import TxState

MakeSim = Callable[..., Sim]


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator[MakeSim]:
    sims: list[Sim] = []

    def make(**config: Any) -> Sim:
        workdir = tmp_path / f"sim{len(sims)}"
        workdir.mkdir()
        sim = Sim(workdir, SimConfig(**config))
        sims.append(sim)
        sim.run(sim.boot())
        return sim

    yield make
    for sim in sims:
        sim.close()


def onchain_once(sim: Sim, intent_id: str) -> None:
    blocks = sim.checker.mined(intent_id)
    assert len(blocks) == 1, f"{intent_id} is on chain {len(blocks)} times"


@pytest.mark.parametrize("depth", [1, 3])
def test_a_reorg_that_reincludes_our_transactions_ends_with_each_mined_exactly_once(
    make_sim: MakeSim, depth: int
) -> None:
    sim = make_sim()
    ids = []
    for _ in range(depth):  # one intent in each of the blocks the reorg will drop
        ids.append(sim.run(sim.submit()).intent.id)
        sim.run(sim.mine())
    assert all(sim.record(i).state is TxState.INCLUDED for i in ids)
    sim.run(sim.reorg(depth, reinclude=True))
    sim.run(sim.finish())
    for intent_id in ids:
        assert sim.record(intent_id).state is TxState.FINALIZED
        assert "reorged" in sim.checker.events(intent_id)
        onchain_once(sim, intent_id)
    sim.check()


def test_a_reorg_that_loses_our_transaction_ends_with_the_replacement_mined_once(
    make_sim: MakeSim,
) -> None:
    sim = make_sim()
    first = sim.run(sim.submit())
    sim.run(sim.mine())
    original = first.latest
    assert original is not None
    sim.run(sim.reorg(1, reinclude=False))
    sim.run(sim.finish())
    record = sim.record(first.intent.id)
    assert record.state is TxState.FINALIZED
    assert record.included_hash != original.hash  # the bumped replacement was mined
    onchain_once(sim, first.intent.id)
    sim.check()


def test_a_cancel_before_signing_sends_nothing_and_the_nonce_is_reused(make_sim: MakeSim) -> None:
    sim = make_sim()
    sim.enclave.down = True
    doomed = sim.run(sim.submit())
    assert doomed.state is TxState.PENDING
    sim.run(sim.cancel(doomed.intent.id))
    sim.run(sim.advance(1.0))  # the resync after a cancel hands the unsigned nonce back
    sim.enclave.down = False
    later = sim.run(sim.submit())
    sim.run(sim.finish())
    assert sim.checker.events(doomed.intent.id)[-1] == "cancelled"
    assert sim.checker.payload_sends[doomed.intent.id] == 0
    assert later.nonce == doomed.nonce, "the unsigned nonce was not reused"
    assert sim.record(later.intent.id).state is TxState.FINALIZED
    sim.check()


def test_a_crash_right_after_the_ack_ends_with_the_intent_mined_exactly_once(
    make_sim: MakeSim,
) -> None:
    sim = make_sim()
    record = sim.run(sim.submit(wait=0.0))
    sent = record.latest
    assert sent is not None
    lost = sim.run(sim.crash())
    sim.run(sim.mine())  # mined while the broadcaster is down
    sim.run(sim.restart())
    sim.run(sim.finish())
    after = sim.record(record.intent.id)
    assert after.state is TxState.FINALIZED
    assert after.included_hash == sent.hash, "the acknowledged bytes were not the ones mined"
    onchain_once(sim, record.intent.id)
    assert lost >= 0
    sim.check()


def test_a_crash_before_anything_is_mined_resends_identical_bytes(make_sim: MakeSim) -> None:
    sim = make_sim()
    for node in sim.network.nodes.values():
        node.drop_sends = True  # the first sends are lost: only a resend can get it mined
    record = sim.run(sim.submit())
    sent = record.latest
    assert sent is not None
    sim.run(sim.crash())
    sim.heal()
    sim.run(sim.restart())
    sim.run(sim.finish())
    after = sim.record(record.intent.id)
    assert after.state is TxState.FINALIZED
    assert after.included_hash == sent.hash
    sim.check()


def test_memory_stays_bounded_after_many_finalized_intents(make_sim: MakeSim) -> None:
    sim = make_sim(retain_settled=10)
    for _ in range(6):
        for _ in range(10):
            sim.run(sim.submit())
        sim.run(sim.mine())
    sim.run(sim.finish())
    sizes = sim.adapter.sizes()
    assert sizes["records"] <= 10, sizes
    assert all(size <= 10 for size in sizes.values()), sizes
    sim.check()


def test_two_senders_and_skewed_clients_keep_their_own_nonce_order(make_sim: MakeSim) -> None:
    sim = make_sim(senders=2, delays={"a": 0.0, "b": 0.4, "c": 0.9})
    ids = [sim.run(sim.submit(sender=k % 2)).intent.id for k in range(6)]
    sim.run(sim.mine())
    sim.run(sim.reorg(1))
    sim.run(sim.mine(2))
    sim.run(sim.finish())
    for intent_id in ids:
        assert sim.record(intent_id).state is TxState.FINALIZED
    sim.check()


def test_an_underpriced_answer_gets_a_bump_that_clears_the_replace_rule(make_sim: MakeSim) -> None:
    sim = make_sim()
    node_rules = [n.rules for n in sim.network.nodes.values()]
    first = sim.intent(max_fee=3 * 10 * GWEI)
    for rules in node_rules:  # every pool wants more than the first signature offers
        rules.append(lambda tx: "transaction underpriced" if tx.tip_cap < 3 * GWEI else None)
    sim.run(sim.submit(first))
    sim.run(sim.mine(2))
    sim.run(sim.finish())
    record = sim.record(first.id)
    assert record.state is TxState.FINALIZED
    assert len(record.attempts) >= 2
    sim.check()

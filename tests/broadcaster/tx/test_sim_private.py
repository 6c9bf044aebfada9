"""Private orderflow in the simulator (DESIGN.md 5a): the real manager and router, the real
enclave policy, a builder that is the block producer. Bundles target the next block, are
re-targeted on every head, follow a reorg with the bumped replacement inside the reaction, and
are cancelled on cancel and expiry; no private attempt ever reaches a public node."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broadcaster.tx.bundles import replacement_uuid
from broadcaster.tx.testing import Sim, SimConfig
from broadcaster.tx.testing.chain import decode_tx
from nonce import TxState

MakeSim = Callable[..., Sim]


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator[MakeSim]:
    sims: list[Sim] = []

    def make(**config: Any) -> Sim:
        workdir = tmp_path / f"sim{len(sims)}"
        workdir.mkdir()
        sim = Sim(workdir, SimConfig(builder=True, **config))
        sims.append(sim)
        sim.run(sim.boot())
        return sim

    yield make
    for sim in sims:
        sim.close()


def no_public_send(sim: Sim, intent_id: str) -> None:
    hashes = {a.hash.hex() for a in sim.record(intent_id).attempts}
    for node in sim.network.nodes.values():
        leaked = [tx for tx in node.received if tx.hash.hex() in hashes]
        assert not leaked, f"{intent_id} reached public node {node.name}"


def targets(sim: Sim, intent_id: str) -> list[tuple[int, str]]:
    """(blockNumber, tx hash) of every bundle sent for the intent's payload, in order."""
    assert sim.builder is not None
    out = []
    for seen in sim.builder.bundles(replacement_uuid(intent_id)):
        raw = bytes.fromhex(seen.params["txs"][0][2:])
        out.append((int(seen.params["blockNumber"], 16), decode_tx(raw).hash.hex()))
    return out


def test_a_private_intent_is_bundled_for_the_next_block_and_lands_once(make_sim: MakeSim) -> None:
    sim = make_sim()
    record = sim.run(sim.submit(private=True))
    tip = sim.tip.number
    assert targets(sim, record.intent.id) == [(tip + 1, record.attempts[0].hash.hex())]
    sim.run(sim.mine())
    assert sim.record(record.intent.id).state is TxState.INCLUDED
    sim.run(sim.finish())
    assert len(sim.checker.mined(record.intent.id)) == 1
    no_public_send(sim, record.intent.id)
    sim.check()


def test_each_head_that_passes_without_it_re_targets_the_bundle(make_sim: MakeSim) -> None:
    sim = make_sim()
    record = sim.run(sim.submit(private=True))
    first = sim.tip.number + 1
    sim.run(sim.mine(bundles=False))
    sim.run(sim.mine(bundles=False))
    sent = targets(sim, record.intent.id)
    blocks = [block for block, _ in sent]
    # Every bundle is for the next block of its moment (a resend of a stale attempt, too).
    assert blocks[0] == first and set(blocks) == {first, first + 1, first + 2}
    assert blocks == sorted(blocks)
    assert len({tx for _, tx in sent}) == 1  # the same transaction, re-targeted
    sim.run(sim.mine())
    sim.run(sim.finish())
    assert len(sim.checker.mined(record.intent.id)) == 1
    no_public_send(sim, record.intent.id)
    sim.check()


@pytest.mark.parametrize("presign", [True, False], ids=["presigned", "live-resign"])
def test_a_reorg_that_drops_it_sends_the_bumped_replacement_for_the_new_next_block(
    make_sim: MakeSim, presign: bool
) -> None:
    sim = make_sim(presign=presign)
    record = sim.run(sim.submit(private=True))
    sim.run(sim.mine())
    assert sim.record(record.intent.id).state is TxState.INCLUDED
    first_hash = record.attempts[0].hash.hex()
    made = sim.run(sim.reorg(1, reinclude=False))  # a builder's block re-orged out: tx lost
    new_tip = made[-1].number
    latest = sim.record(record.intent.id).latest
    assert latest is not None and latest.hash.hex() != first_hash
    assert (new_tip + 1, latest.hash.hex()) in targets(sim, record.intent.id)
    first_fees = decode_tx(record.attempts[0].raw).fees
    replacement = decode_tx(latest.raw).fees
    assert replacement.max_fee_per_gas * 100 >= first_fees.max_fee_per_gas * 110
    assert replacement.max_priority_fee_per_gas * 100 >= (first_fees.max_priority_fee_per_gas * 110)
    sim.run(sim.finish())
    assert len(sim.checker.mined(record.intent.id)) == 1
    no_public_send(sim, record.intent.id)
    sim.check()


def test_a_private_reaction_is_observed_with_more_public_endpoints_than_builders(
    make_sim: MakeSim,
) -> None:
    """Review: the reaction expected one write per public endpoint (3 here) for each send, a
    private one wrote one bundle (1 builder), so a private-only reaction never ended and
    reaction_seconds never saw it. Every job of a private send is settled in the call now."""
    sim = make_sim()
    record = sim.run(sim.submit(private=True))
    sim.run(sim.mine())
    observer = sim.adapter.observer
    before = len(observer.reactions)
    sim.run(sim.reorg(1, reinclude=False))
    assert sim.record(record.intent.id).latest is not record.attempts[0]
    reactions = observer.reactions[before:]
    assert len(reactions) == 1, reactions
    seconds, dropped = reactions[0]
    assert dropped == 1 and seconds >= 0
    sim.run(sim.finish())
    sim.check()


def test_cancel_cancels_the_payload_bundle_and_the_noop_takes_the_nonce(
    make_sim: MakeSim,
) -> None:
    sim = make_sim()
    record = sim.run(sim.submit(private=True))
    sim.run(sim.cancel(record.intent.id))
    assert sim.builder is not None
    assert replacement_uuid(record.intent.id) in sim.builder.cancelled
    assert sim.record(record.intent.id).state is TxState.CANCELLED
    assert sim.builder.bundles(replacement_uuid(record.intent.id, noop=True))
    sim.run(sim.finish())
    no_public_send(sim, record.intent.id)
    sim.check()


def test_expiry_cancels_the_bundle(make_sim: MakeSim) -> None:
    sim = make_sim()
    record = sim.run(sim.submit(private=True, valid_until=sim.tip.number + 1))
    sim.run(sim.mine(bundles=False))
    sim.run(sim.mine(bundles=False))
    assert sim.builder is not None
    assert replacement_uuid(record.intent.id) in sim.builder.cancelled
    sim.run(sim.finish())
    assert sim.record(record.intent.id).state in (TxState.EXPIRED, TxState.FINALIZED)
    no_public_send(sim, record.intent.id)
    sim.check()


def test_a_public_intent_next_to_private_ones_never_goes_to_the_builder(
    make_sim: MakeSim,
) -> None:
    sim = make_sim()
    public = sim.run(sim.submit())
    sim.run(sim.submit(private=True))
    sim.run(sim.mine())
    sim.run(sim.finish())
    assert targets(sim, public.intent.id) == []
    assert len(sim.checker.mined(public.intent.id)) == 1
    sim.check()


def test_a_private_intent_stays_private_after_a_crash_and_restart(make_sim: MakeSim) -> None:
    """The journal keeps the flag: the restarted process resends it only as a bundle."""
    sim = make_sim()
    record = sim.run(sim.submit(private=True))
    sim.run(sim.mine(bundles=False))
    sim.run(sim.crash())
    sim.run(sim.restart())
    reloaded = sim.record(record.intent.id)
    assert reloaded.intent.private
    sim.run(sim.mine(bundles=False))  # a head after the restart: re-targeted by the new process
    sim.run(sim.finish())
    assert len(sim.checker.mined(record.intent.id)) == 1
    no_public_send(sim, record.intent.id)
    sim.check()


def test_a_gap_fill_noop_of_an_account_with_private_intents_goes_only_to_the_builder(
    make_sim: MakeSim,
) -> None:
    """A hole in a private account's nonces is plugged privately: a public noop would show the
    account's activity (and that a nonce is being filled) to every mempool."""
    sim = make_sim()
    held = sim.run(sim.submit(private=True))
    sim.run(sim.submit_raw(held.nonce + 3))  # signed elsewhere: nonces +1 and +2 are holes
    sim.run(sim.crash())
    sim.run(sim.restart())  # the start-up resync fills them
    sim.run(sim.advance(1.0))
    fills = [r for r in sim.adapter.records() if r.intent.noop and r.attempts]
    assert sorted(r.nonce for r in fills) == [held.nonce + 1, held.nonce + 2]
    assert sim.builder is not None
    sent = {
        decode_tx(bytes.fromhex(raw[2:])).hash
        for seen in sim.builder.bundles()
        for raw in seen.params["txs"]
    }
    for fill in fills:
        assert fill.intent.private
        assert {a.hash for a in fill.attempts} & sent, "the gap fill never reached the builder"
        no_public_send(sim, fill.intent.id)
    sim.run(sim.finish())
    sim.check()

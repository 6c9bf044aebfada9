"""Adversarial review of ``broadcaster_sendBundle`` atomicity in the simulator (DESIGN.md 5a),
with the real enclave policy in the loop: a bundle whose member gives up (the policy refuses to
sign it, or its own ``validUntilBlock`` passes first) must never let another member's payload go
to a builder without it, nor land alone; the other members are cancelled (their noops take the
nonces) so the bot is told and the nonces do not stay held."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broadcaster.tx.bundle_plans import BundleSpec, encode_spec
from broadcaster.tx.routing import Router
from broadcaster.tx.testing import Sim, SimConfig
from nonce import TxState

NOT_ALLOWED = "0x" + "ee" * 20  # not in the policy's allowed_to: the enclave refuses to sign


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    sim = Sim(tmp_path, SimConfig(builder=True))
    sim.run(sim.boot())
    yield sim
    sim.close()


def router(sim: Sim) -> Router:
    assert sim.host is not None and sim.host.router is not None
    return sim.host.router


def payloads(sim: Sim, intent_id: str) -> set[bytes]:
    return {a.raw for a in sim.record(intent_id).attempts if not a.is_noop}


def sends_with(sim: Sim, raws: set[bytes]) -> list[list[bytes]]:
    """Every builder send (bundle txs or a private tx) that carries one of ``raws``."""
    assert sim.builder is not None
    out = []
    for seen in sim.builder.seen:
        if seen.method == "eth_sendBundle":
            txs = [bytes.fromhex(t[2:]) for t in seen.params["txs"]]
        elif seen.method == "eth_sendPrivateTransaction":
            txs = [bytes.fromhex(seen.params["tx"][2:])]
        else:
            continue
        if raws & set(txs):
            out.append(txs)
    return out


def mined_raws(sim: Sim) -> set[bytes]:
    return {tx.raw for block in sim.chain.truth.blocks() for tx in block.txs}


def test_a_member_the_policy_refuses_never_lets_the_signed_one_go_alone(sim: Sim) -> None:
    good = sim.intent(private=True)
    bad = sim.intent(private=True, to=NOT_ALLOWED)
    spec = BundleSpec("bundle-refused", (good.id, bad.id))
    router(sim).add_bundle(spec)
    sim.run(sim.submit(good))
    sim.run(sim.submit(bad))  # refused by the enclave (to_not_allowed): failed
    assert sim.record(bad.id).state is TxState.FAILED
    sim.run(sim.mine(3))
    mine = payloads(sim, good.id)
    assert mine
    for txs in sends_with(sim, mine):
        assert len(txs) == 2, "a member's payload went to a builder without the rest"
    assert not mine & mined_raws(sim)
    sim.run(sim.finish())
    assert not mine & mined_raws(sim)
    assert sim.record(good.id).state is TxState.CANCELLED
    sim.check()


def test_a_member_expiring_first_cancels_the_others_never_sends_them_alone(sim: Sim) -> None:
    short = sim.intent(private=True, valid_until=sim.tip.number + 2)
    long = sim.intent(private=True)
    spec = BundleSpec("bundle-expiry", (short.id, long.id))
    router(sim).add_bundle(spec)
    sim.run(sim.submit(short))
    sim.run(sim.submit(long))
    sim.run(sim.mine(4, bundles=False))  # the builder does not include it: `short` expires
    assert sim.record(short.id).state is TxState.EXPIRED
    mine = payloads(sim, long.id)
    for txs in sends_with(sim, mine):
        assert len(txs) == 2, "a member's payload went to a builder without the rest"
    sim.run(sim.finish())
    assert not mine & mined_raws(sim)
    assert sim.record(long.id).state is TxState.CANCELLED
    sim.check()


def test_a_crash_between_two_members_admissions_never_sends_the_first_alone(sim: Sim) -> None:
    """``BundleOpened`` and the first member are durable, the process dies before the second
    member is booked: after the restart the bundle cannot be built, so the first member (which
    recovery re-submits) is cancelled, never sent as a one-transaction bundle."""
    first = sim.intent(private=True)
    second = sim.intent(private=True)
    spec = BundleSpec("bundle-half", (first.id, second.id))
    sim.adapter.manager.open_bundle(spec.id, encode_spec(spec))
    router(sim).add_bundle(spec)
    sim.run(sim.submit(first))  # journaled with the bundle row; `second` never admitted
    sim.run(sim.crash())
    sim.run(sim.restart())
    sim.run(sim.mine(2))
    mine = payloads(sim, first.id)
    assert mine
    for txs in sends_with(sim, mine):
        assert len(txs) == 2, "a member's payload went to a builder without the rest"
    sim.run(sim.finish())
    assert not mine & mined_raws(sim)
    assert sim.record(first.id).state is TxState.CANCELLED
    sim.check()

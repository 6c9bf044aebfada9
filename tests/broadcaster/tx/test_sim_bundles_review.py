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
from broadcaster.tx.testing.config import CHAIN_ID, GWEI, KEYS, RECIPIENTS
from nonce import TxState
from signer_client.signing import LocalKey
from signer_client.txcodec import tx_from_dict

NOT_ALLOWED = "0x" + "ee" * 20  # not in the policy's allowed_to: the enclave refuses to sign
# Someone else's transfer (KEYS[2], not an account of ours): a backrun target.
RAW_THEIRS = (
    LocalKey(KEYS[2])
    .sign(
        tx_from_dict(
            {
                "type": 2,
                "chainId": CHAIN_ID,
                "nonce": 0,
                "to": RECIPIENTS[1],
                "value": 9,
                "data": b"",
                "gas": 21_000,
                "maxFeePerGas": 400 * GWEI,
                "maxPriorityFeePerGas": GWEI,
            }
        )
    )
    .raw
)


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


def test_a_cancel_right_after_a_reorg_re_sign_cancels_every_member_none_goes_alone(
    sim: Sim,
) -> None:
    """The bundle landed, a reorg lost it, the reaction re-signed both members and re-sent the
    bundle; the bot then cancels one member: the other is cancelled too (one noop each, at
    their nonces), neither payload reaches a builder alone or lands."""
    a, b = sim.intent(private=True), sim.intent(private=True)
    spec = BundleSpec("bundle-race", (a.id, b.id))
    router(sim).add_bundle(spec)
    sim.run(sim.submit(a))
    sim.run(sim.submit(b))
    sim.run(sim.mine())
    assert sim.record(a.id).state is TxState.INCLUDED
    sim.run(sim.reorg(1, reinclude=False))  # reaction: re-signed, re-sent, held by the builder
    assert sim.record(a.id).state is not TxState.INCLUDED
    sim.run(sim.cancel(a.id))
    assert spec.id in router(sim).dead
    mine = payloads(sim, a.id) | payloads(sim, b.id)
    for txs in sends_with(sim, mine):
        assert len(txs) == 2, "a member's payload went to a builder without the rest"
    sim.run(sim.finish())
    for intent in (a, b):
        record = sim.record(intent.id)
        assert record.state in (TxState.CANCELLED, TxState.FINALIZED), record.state
        assert sum(1 for x in record.attempts if x.is_noop) <= 1  # one noop per nonce
    assert sim.record(b.id).state is sim.record(a.id).state  # atomic either way
    sim.check()


def test_a_bundle_past_max_block_is_cancelled_at_the_builder_and_never_re_sent(sim: Sim) -> None:
    """The raw transaction can never land (here: the builder never includes the bundle): at
    ``maxBlockNumber`` the members expire, ``eth_cancelBundle`` goes out, and no send targets a
    block after it."""
    last = sim.tip.number + 3
    a = sim.intent(private=True, valid_until=last)
    spec = BundleSpec("bundle-bounded", (a.id, RAW_THEIRS), max_block=last)
    router(sim).add_bundle(spec)
    sim.run(sim.submit(a))
    sim.run(sim.mine(6, bundles=False))
    assert sim.record(a.id).state is TxState.EXPIRED
    assert sim.builder is not None and spec.uuid in sim.builder.cancelled
    blocks = [int(s.params["blockNumber"], 16) for s in sim.builder.bundles(spec.uuid)]
    assert blocks and max(blocks) <= last
    assert spec.id not in router(sim).bundles
    sim.check()

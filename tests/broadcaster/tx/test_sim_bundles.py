"""``broadcaster_sendBundle`` bundles in the simulator (DESIGN.md 5a): the real manager and
router, the real enclave policy (every re-sign passes its fee floors), a builder that is the
block producer. A bundle of [our intent, someone else's raw transaction] lands atomically in
the next block; a reorg that loses it brings, inside the reaction, the same bundle (same
``replacementUuid``) for the new next block with ours re-signed +10 % at the same nonce and the
raw bytes unchanged; it ends on chain once, and never reaches a public node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broadcaster.tx.bundle_plans import BundleSpec, encode_spec
from broadcaster.tx.routing import Router
from broadcaster.tx.testing import Sim, SimConfig
from broadcaster.tx.testing.chain import decode_tx
from broadcaster.tx.testing.config import CHAIN_ID, GWEI, KEYS, RECIPIENTS
from nonce import TxState
from signer_client.signing import LocalKey
from signer_client.txcodec import tx_from_dict


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    sim = Sim(tmp_path, SimConfig(builder=True))  # one sender: KEYS[0]
    sim.run(sim.boot())
    yield sim
    sim.close()


def theirs(sim: Sim) -> bytes:
    """A transfer signed by KEYS[2], an account the broadcaster does not hold (a backrun)."""
    fee = 4 * sim.chain.tip.base_fee + GWEI
    tx = {
        "type": 2,
        "chainId": CHAIN_ID,
        "nonce": 0,
        "to": RECIPIENTS[1],
        "value": 9,
        "data": b"",
        "gas": 21_000,
        "maxFeePerGas": fee,
        "maxPriorityFeePerGas": GWEI,
    }
    return LocalKey(KEYS[2]).sign(tx_from_dict(tx)).raw


def router(sim: Sim) -> Router:
    assert sim.host is not None and sim.host.router is not None
    return sim.host.router


def sent(sim: Sim, spec: BundleSpec) -> list[tuple[int, list[bytes]]]:
    assert sim.builder is not None
    return [
        (int(s.params["blockNumber"], 16), [bytes.fromhex(t[2:]) for t in s.params["txs"]])
        for s in sim.builder.bundles(spec.uuid)
    ]


def test_a_bundle_with_a_raw_tx_lands_atomically_and_survives_a_reorg(sim: Sim) -> None:
    raw = theirs(sim)
    intent = sim.intent(private=True)
    spec = BundleSpec("bundle-sim", (intent.id, raw))
    router(sim).add_bundle(spec)
    record = sim.run(sim.submit(intent))
    first = record.attempts[0]
    assert sent(sim, spec) == [(sim.tip.number + 1, [first.raw, raw])]

    sim.run(sim.mine())
    assert sim.record(intent.id).state is TxState.INCLUDED
    assert [tx.raw for tx in sim.tip.txs] == [first.raw, raw]  # atomic, in bundle order

    observer = sim.adapter.observer
    before = len(observer.reactions)
    made = sim.run(sim.reorg(1, reinclude=False))
    latest = sim.record(intent.id).latest
    assert latest is not None and latest is not first and latest.nonce == first.nonce
    assert (made[-1].number + 1, [latest.raw, raw]) in sent(sim, spec)
    assert len(observer.reactions) == before + 1  # observed, the bundle written inside it
    old, new = decode_tx(first.raw).fees, decode_tx(latest.raw).fees
    assert new.max_fee_per_gas * 100 >= old.max_fee_per_gas * 110
    assert new.max_priority_fee_per_gas * 100 >= old.max_priority_fee_per_gas * 110

    sim.run(sim.mine())
    assert sim.record(intent.id).state is TxState.INCLUDED
    assert [tx.raw for tx in sim.tip.txs] == [latest.raw, raw]
    sim.run(sim.finish())
    assert len(sim.checker.mined(intent.id)) == 1
    for node in sim.network.nodes.values():
        assert not [tx for tx in node.received if tx.raw in (first.raw, latest.raw, raw)]
    sim.check()


def test_a_bundle_survives_a_crash_and_restart_and_lands_once(sim: Sim) -> None:
    """Membership is journaled (``BundleOpened``, table ``bundles``): after ``kill -9`` the new
    process re-registers the bundle before recovery re-submits its member, and the first head
    re-targets the same bundle (our same bytes, the raw tx) under the same replacementUuid."""
    raw = theirs(sim)
    intent = sim.intent(private=True)
    spec = BundleSpec("bundle-crash", (intent.id, raw))
    sim.adapter.manager.open_bundle(spec.id, encode_spec(spec))
    router(sim).add_bundle(spec)
    record = sim.run(sim.submit(intent))
    first = record.attempts[0]
    sim.run(sim.crash())
    sim.run(sim.restart())
    assert spec.id in router(sim).bundles  # the new process's router
    before = len(sent(sim, spec))
    sim.run(sim.mine(bundles=False))  # a head passes without it: re-targeted from the journal
    again = sent(sim, spec)[before:]
    assert again and again[-1] == (sim.tip.number + 1, [first.raw, raw])
    sim.run(sim.mine())
    assert [tx.raw for tx in sim.tip.txs] == [first.raw, raw]
    sim.run(sim.finish())
    assert len(sim.checker.mined(intent.id)) == 1
    sim.check()

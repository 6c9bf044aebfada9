"""Presignatures are made newest block first, a few at a time (deterministic simulator).

A block holding many of ours asks for one presignature each (``InclusionTracker``). Asked all
at once, first come first served, the next block's transaction -- the one the next 1-deep reorg
drops -- was presigned after all of them (session 7: the reaction found no presignature and
re-signed behind them). Now they wait in a queue served newest block first, at most
``PRESIGNS_IN_FLIGHT`` at the signer. Order only: the serial enclave signs one at a time.
"""

from __future__ import annotations

from broadcaster.tx.inclusion import PRESIGN_DEPTH, PRESIGNS_IN_FLIGHT
from broadcaster.tx.testing import SimFactory
from nonce import TxState

BULK = 40


def test_the_newest_blocks_transaction_is_presigned_before_an_older_blocks_backlog(
    sims: SimFactory,
) -> None:
    sim = sims(presign=True)
    sim.enclave.serial = True
    records = [sim.run(sim.submit()) for _ in range(BULK + 1)]
    last = records[-1]
    signed_before = len(sim.enclave.signed())
    # Block A: the first BULK of ours; block B: the last one alone (bench/throughput's shape).
    sim.run(sim.mine(1, exclude=lambda tx: tx.nonce == last.nonce, wait=0))
    sim.run(sim.mine(1, wait=0.5))
    assert all(sim.record(r.intent.id).state is TxState.INCLUDED for r in records)
    presigned = [r.fields.nonce for r in sim.enclave.signed()[signed_before:]]
    assert sorted(presigned) == sorted(r.nonce for r in records), "each presigned once"
    # Behind at most the ones already at the signer when block B's was asked for; before the
    # queue it was the 41st of 41.
    assert presigned.index(last.nonce) <= PRESIGNS_IN_FLIGHT, presigned
    older = [n for n in presigned if n != last.nonce]
    assert older == sorted(older), "within a block in nonce order"


def test_a_reaction_sends_the_presignature_it_waited_for_instead_of_signing_again(
    sims: SimFactory,
) -> None:
    """The reorg arrives while the dropped tx's presignature is at the signer (the bench reorgs
    right after it sees the tx included): the reaction finds none, waits for the nonce's lock
    the presignature holds (promoting it), then sends it. Before: the presignature was thrown
    away (its record no longer included) and the reaction asked the signer again."""
    sim = sims(presign=True)
    sim.enclave.serial = True
    sim.enclave.latency = 0.005  # a signature takes long enough to reorg under it
    record = sim.run(sim.submit())
    nonce = record.nonce
    sim.run(sim.mine(1, wait=0))
    for _ in range(400):  # until the presignature is asked for (the block proven), not made
        if len([a for a in sim.enclave.asked if a[2] == nonce]) >= 2:
            break
        sim.run(sim.advance(0.0005))
    at_nonce = [r for r in sim.enclave.signed() if r.fields.nonce == nonce]
    assert len(at_nonce) == 1, "the presignature must still be under way for the test to mean it"
    sent_before = {name: len(sim.network[name].received) for name in sim.config.rpcs}
    sim.run(sim.reorg(1, reinclude=False, wait=0.5))
    signed = [r for r in sim.enclave.signed() if r.fields.nonce == nonce]
    assert len(signed) == 2, "the reaction signed again instead of sending the presignature"
    latest = sim.record(record.intent.id).latest
    assert latest is not None and latest.reason.value == "reorg"
    for name in sim.config.rpcs:
        received = sim.network[name].received[sent_before[name] :]
        assert any(tx.hash == latest.hash for tx in received), f"{name}: not the presignature"
    sim.run(sim.finish())
    sim.check()


def test_presignatures_whose_block_is_deep_by_their_turn_are_skipped(sims: SimFactory) -> None:
    """Block A's 40 presignatures wait at a slow signer while the chain moves on: once A is
    ``PRESIGN_DEPTH`` below the tip the rest are not made (a reorg that deep re-signs); the
    newer blocks' own transaction is still presigned. Before: all 40, in order, first."""
    sim = sims(presign=True)
    sim.enclave.serial = True
    records = [sim.run(sim.submit()) for _ in range(BULK + 1)]
    last = records[-1]
    sim.enclave.latency = 0.01  # presignatures slower than the blocks below
    signed_before = len(sim.enclave.signed())
    sim.run(sim.mine(1, exclude=lambda tx: tx.nonce == last.nonce, wait=0.005))
    sim.run(sim.mine(PRESIGN_DEPTH, wait=0.005))  # the last one in the first of them
    sim.run(sim.advance(2.0))
    presigned = [r.fields.nonce for r in sim.enclave.signed()[signed_before:]]
    assert last.nonce in presigned
    assert len(presigned) < BULK // 2, presigned


def test_a_later_nonce_sends_its_presignature_behind_an_earlier_nonces_resign(
    sims: SimFactory,
) -> None:
    """Two of one sender's nonces in the reorged block; only the later one has a replacement
    signed ahead (the earlier one's was still at the signer, or skipped). The earlier nonce is
    re-signed first (nonce order); the later one then sends its replacement signed ahead. It
    used to be taken and thrown away by the plan and signed once more at +10% (review of
    react8): one more signer round trip in the reaction and fees climbing for nothing."""
    sim = sims(presign=True)
    first = sim.run(sim.submit())
    second = sim.run(sim.submit())
    assert second.nonce == first.nonce + 1
    sim.run(sim.mine(1, wait=0.5))
    ledger = sim.adapter.manager.ledger
    assert first.latest is not None and second.latest is not None
    assert ledger.presigned(first.latest.hash) is not None
    kept = ledger.presigned(second.latest.hash)
    assert kept is not None
    ledger.take_presigned(first.latest.hash)  # the earlier nonce has none
    first_dropped = first.latest.hash
    at_second = len([r for r in sim.enclave.signed() if r.fields.nonce == second.nonce])
    sim.run(sim.reorg(1, reinclude=False, wait=0.5))
    signed_now = [r for r in sim.enclave.signed() if r.fields.nonce == second.nonce]
    assert len(signed_now) == at_second, "the later nonce was signed again"
    record = sim.record(second.intent.id)
    assert record.latest is not None and record.latest.hash == kept.attempt.hash
    earlier = sim.record(first.intent.id).latest
    assert earlier is not None and earlier.hash != first_dropped  # re-signed, fresh
    sim.run(sim.mine(1, wait=0.5))
    sim.run(sim.finish())
    assert sim.record(second.intent.id).state in (TxState.INCLUDED, TxState.FINALIZED)
    sim.check()

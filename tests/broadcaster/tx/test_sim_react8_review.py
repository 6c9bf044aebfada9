"""Adversarial review of react8 (deterministic simulator, the real enclave core and policy).

The presignature queue (newest block first, ``PRESIGNS_IN_FLIGHT`` at once, skipped at
``PRESIGN_DEPTH``) and a reaction that sends the presignature it waited for (its nonce lock's
holder, promoted) raced against cancels and deep reorgs. Order and counts only, no timing.
"""

from __future__ import annotations

import asyncio

from broadcaster.tx.inclusion import PRESIGN_DEPTH, PRESIGN_PRUNE_MIN
from broadcaster.tx.testing import Sim, SimFactory
from nonce import TxRecord, TxState
from signer_client.txcodec import keccak

BULK = 40


def _until_asked(sim: Sim, nonce: int, count: int) -> None:
    for _ in range(400):  # until the presignature is asked for (the block proven), not made
        if len([a for a in sim.enclave.asked if a[2] == nonce]) >= count:
            return
        sim.run(sim.advance(0.0005))
    raise AssertionError("the presignature was never asked for")


def _until_reorged(sim: Sim, intent_id: str) -> None:
    for _ in range(400):
        if sim.record(intent_id).state is TxState.REORGED:
            return
        sim.run(sim.advance(0.0002))
    raise AssertionError("the reorg was never seen")


def _reorged_while_presigning(sims: SimFactory) -> tuple[Sim, TxRecord]:
    """One intent mined; its block reorged out (its tx lost) while the presignature of its
    replacement is still at the slow, serial signer."""
    sim = sims(presign=True)
    sim.enclave.serial = True
    sim.enclave.latency = 0.005
    record = sim.run(sim.submit())
    sim.run(sim.mine(1, wait=0))
    _until_asked(sim, record.nonce, 2)
    sim.run(sim.reorg(1, reinclude=False, wait=0))
    _until_reorged(sim, record.intent.id)
    return sim, record


def test_a_cancel_while_the_reaction_waits_for_the_presignature_still_cancels(
    sims: SimFactory,
) -> None:
    """The reorg drops the tx while its presignature is at the signer; the bot cancels while
    the reaction waits for the lock. The reaction sends the (payload) presignature; the
    cancel's noop must then replace it: cancelled, and the chain holds the noop, not the
    payload (every status told true of the chain: ``sim.check``)."""
    sim, record = _reorged_while_presigning(sims)
    nonce = record.nonce
    presigning = [r for r in sim.enclave.signed() if r.fields.nonce == nonce]
    assert len(presigning) == 1, "the presignature must still be under way"
    sim.run(sim.cancel(record.intent.id, wait=0.5))
    rec = sim.record(record.intent.id)
    assert rec.has_noop, [a.reason for a in rec.attempts]
    sim.run(sim.mine(1, wait=0.5))
    sim.run(sim.finish())
    mined = [tx for _, tx in sim.chain.truth.txs() if tx.nonce == nonce]
    assert mined and all(tx.is_noop for tx in mined), mined
    sim.check()


def test_a_cancel_queued_before_the_reaction_on_the_presigns_lock(sims: SimFactory) -> None:
    """The cancel waits for the lock the presignature holds, then the reorg: the cancel's noop
    (promoted: the reaction wants the lock) goes first; the reaction must not send the payload
    presignature after it (the intent is cancelled)."""
    # Cancel of an included tx is refused; so reorg first with a tiny wait, then cancel at
    # once: both queue on the lock while the presignature is still at the signer.
    sim, record = _reorged_while_presigning(sims)
    nonce = record.nonce
    sim.run(sim.cancel(record.intent.id, wait=0.5))
    sim.run(sim.mine(2, wait=0.5))
    sim.run(sim.finish())
    mined = [tx for _, tx in sim.chain.truth.txs() if tx.nonce == nonce]
    assert mined and all(tx.is_noop for tx in mined), mined
    assert sim.record(record.intent.id).state is TxState.CANCELLED
    sim.check()


def test_a_cancelled_intents_reorged_noop_is_sent_from_the_presignature_it_waited_for(
    sims: SimFactory,
) -> None:
    """A cancelled intent: its noop was mined, and the noop's presignature (a noop again) is
    at the signer when the reorg drops it. The reaction waits for that lock (promoting it)
    and must send that presignature, not ask the signer for one more noop (the payload's
    bytes are still out there: every signature's time is the payload's chance to land)."""
    sim = sims(presign=True)
    sim.enclave.serial = True
    record = sim.run(sim.submit())
    nonce = record.nonce
    sim.run(sim.cancel(record.intent.id, wait=0.05))
    assert sim.record(record.intent.id).has_noop
    sim.enclave.latency = 0.005
    asked = len([a for a in sim.enclave.asked if a[2] == nonce])
    sim.run(sim.mine(1, wait=0))
    _until_asked(sim, nonce, asked + 1)
    at_nonce = [r for r in sim.enclave.signed() if r.fields.nonce == nonce]
    sim.run(sim.reorg(1, reinclude=False, wait=0.5))
    signed = [r for r in sim.enclave.signed() if r.fields.nonce == nonce]
    assert len(signed) == len(at_nonce) + 1, "the reaction signed a noop again"
    sim.run(sim.mine(1, wait=0.5))
    sim.run(sim.finish())
    mined = [tx for _, tx in sim.chain.truth.txs() if tx.nonce == nonce]
    assert mined and all(tx.is_noop for tx in mined), mined
    sim.check()


def test_a_reorg_deeper_than_the_presign_depth_still_resigns_the_skipped(
    sims: SimFactory,
) -> None:
    """Block A's presignatures are skipped once A is ``PRESIGN_DEPTH`` deep; then a reorg of
    depth ``PRESIGN_DEPTH + 1`` drops A: each of A's txs must be re-signed and mined again."""
    sim = sims(presign=True)
    sim.enclave.serial = True
    records = [sim.run(sim.submit()) for _ in range(BULK)]
    sim.enclave.latency = 0.01
    sim.run(sim.mine(1, wait=0.005))
    sim.run(sim.mine(PRESIGN_DEPTH, wait=0.005))
    sim.run(sim.advance(1.0))
    sim.enclave.latency = 0.0002
    sim.run(sim.reorg(PRESIGN_DEPTH + 1, reinclude=False, wait=1.0))
    sim.run(sim.mine(2, wait=0.5))
    sim.run(sim.finish())
    for r in records:
        assert sim.record(r.intent.id).state in (TxState.INCLUDED, TxState.FINALIZED)
    sim.check()


def test_a_presignature_waited_for_is_not_sent_once_the_base_fee_outgrew_it(
    sims: SimFactory,
) -> None:
    """The presignature is still at the signer when a reorg to a branch with a 4x base fee
    drops its tx: the reaction waits for it (promoting it) and must not send it (it could not
    be mined: its fee cap no longer covers 2 x base fee + tip); a fresh re-sign covers it and
    is mined."""
    sim = sims(presign=True)
    sim.enclave.serial = True
    sim.enclave.latency = 0.005
    record = sim.run(sim.submit())
    nonce = record.nonce
    sim.run(sim.mine(1, wait=0))
    _until_asked(sim, nonce, 2)
    base_fee = 4 * sim.chain.tip.base_fee
    sim.set_base_fee(base_fee)
    sim.run(sim.reorg(1, reinclude=False, wait=0))
    _until_reorged(sim, record.intent.id)
    assert len([r for r in sim.enclave.signed() if r.fields.nonce == nonce]) == 1
    before = {name: len(sim.network[name].received) for name in sim.config.rpcs}
    sim.run(sim.advance(0.5))
    latest = sim.record(record.intent.id).latest
    assert latest is not None and latest.max_fee_per_gas >= 2 * base_fee, latest
    sim.run(sim.mine(1, wait=0.5))
    assert sim.record(record.intent.id).state is TxState.INCLUDED
    sim.run(sim.finish())
    # The checker judges a re-sign by the base fee when the enclave signs it: this one was
    # priced before the jump and finished after it (at the signer meanwhile). Never sent.
    presigned = [r for r in sim.enclave.signed() if r.fields.nonce == nonce][1]
    assert presigned.fields.max_fee_per_gas < 2 * base_fee  # what the attack is about
    for name, count in before.items():
        later = {tx.hash for tx in sim.network[name].received[count:] if tx.nonce == nonce}
        assert presigned.raw is not None and keccak(presigned.raw) not in later, name
    sim.checker.raise_if_violated(ignore=frozenset({"resign_below_base_fee"}))


async def _submit_many(sim: Sim, count: int) -> None:
    await asyncio.gather(*(sim.submit(wait=0) for _ in range(count)))


def test_the_presign_queue_does_not_keep_deep_blocks_under_a_stream(sims: SimFactory) -> None:
    """The signer answers many requests at once but the presignatures are capped at
    ``PRESIGNS_IN_FLIGHT``: a stream of blocks of ours outruns them. Newest block first, an
    older block's entries are popped (and skipped, being deep) only once the newer ones are
    done: under a steady stream never. The queue must not keep what is ``PRESIGN_DEPTH``
    deep (it grows with the stream, holding every record, also those retention forgot)."""
    sim = sims(presign=True)
    sim.enclave.latency = 0.01  # parallel: 4 presignatures per 10 ms, the blocks need 5 ms each
    inclusion = sim.adapter.manager.inclusion
    seen = []
    for _ in range(50):
        sim.run(_submit_many(sim, 20))
        sim.run(sim.mine(1, wait=0.01))
        seen.append(len(inclusion._presigns))
    # Bounded by what is not yet deep (20 per block, PRESIGN_DEPTH blocks) and the pruning's
    # slack, not by the stream's length: before, it grew by 12 a block (612 after 50).
    assert max(seen) <= 2 * PRESIGN_PRUNE_MIN, seen

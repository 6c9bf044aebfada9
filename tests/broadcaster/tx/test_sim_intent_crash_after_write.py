"""Adversarial (review of issue 14): a ``kill -9`` right after an intent's first attempt went on
the wire, before anything flushed its attempt to the journal (the reordered announcements: the
writes first, the book's listeners after). The intent was durable before the signer was asked;
its attempt need not be. The restarted process must still end it included exactly once, never
a foreign transaction, never a second payload at its nonce."""

from __future__ import annotations

import pytest

from broadcaster.tx.testing import SimFactory
from nonce import TxState

_S = TxState


@pytest.mark.parametrize("mined_before_restart", [False, True])
def test_a_crash_after_the_first_write_before_its_attempt_is_durable(
    sims: SimFactory, mined_before_restart: bool
) -> None:
    sim = sims(linger=None)  # nothing reaches the disk but through a flush
    first = sim.run(sim.submit())
    assert first.state is _S.BROADCAST
    sim.run(sim.crash())  # the attempt's journal entries were never flushed
    if mined_before_restart:
        sim.run(sim.mine(1))  # the nodes mine what they were given while we were down
    sim.run(sim.restart())
    sim.run(sim.finish())
    record = sim.record(first.intent.id)
    assert record.state in (_S.INCLUDED, _S.FINALIZED), (record.state, record.state_reason)
    mined = [
        tx
        for b in sim.chain.truth.blocks()
        for tx in b.txs
        if tx.sender == first.intent.sender and tx.nonce == first.nonce
    ]
    assert len(mined) == 1 and mined[0].value == first.intent.value
    assert not [a for a in sim.alerts if a[1] == "foreign_transaction"], sim.alerts
    sim.check()

"""The enclave's nonce window with the broadcaster in the loop (DESIGN.md section 6a): the real
``EnclaveCore`` + ``Policy`` behind the simulator. The window is bounded by refusing, never by
forgetting; the broadcaster must keep it moving with the account, or an account whose nonce moved
on outside the enclave (raw transactions the journal accepted) would be refused for good."""

from __future__ import annotations

from dataclasses import replace

from broadcaster.tx.testing import SimFactory
from broadcaster.tx.testing.config import default_policy
from nonce import TxState


def test_an_account_moved_on_by_raw_transactions_past_the_window_is_still_signed_for(
    sims: SimFactory,
) -> None:
    sim = sims(policy=replace(default_policy(), nonce_window=16))
    first = sim.run(sim.submit())
    sim.run(sim.mine())
    for nonce in range(first.nonce + 1, first.nonce + 21):  # 20 raw txs: past the window
        sim.run(sim.submit_raw(nonce))
    sim.run(sim.mine(sim.config.finality_depth + 2))  # ours is final: nothing left to re-sign
    record = sim.run(sim.submit())
    assert record.nonce == first.nonce + 21
    sim.run(sim.mine(2))
    assert sim.record(record.intent.id).state is TxState.INCLUDED, sim.enclave.denials()
    # The floor went to the lowest nonce the broadcaster may still sign, no higher.
    assert sim.enclave.floors == [(record.sender.lower(), record.nonce)]
    sim.check()


def test_the_floor_never_passes_a_nonce_of_ours_that_a_reorg_could_still_need(
    sims: SimFactory,
) -> None:
    """Until our record at the low nonce is final, the floor stays at or below it: a reorg may
    still need it re-signed (a fee bump), which the enclave would then refuse as too low."""
    sim = sims(policy=replace(default_policy(), nonce_window=16))
    first = sim.run(sim.submit())
    sim.run(sim.mine())
    for nonce in range(first.nonce + 1, first.nonce + 21):
        sim.run(sim.submit_raw(nonce))
    sim.run(sim.mine(2))  # ours at first.nonce is included, not final
    sim.run(sim.submit())
    assert all(floor <= first.nonce for _, floor in sim.enclave.floors), sim.enclave.floors

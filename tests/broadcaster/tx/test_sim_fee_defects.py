"""Fee, nonce-count and signer-answer defects the simulator reproduces (DESIGN.md §5, §6).

Each test asserts the contract's outcome. The ones with a "Failed before the fix" comment were
strict xfails written against the old manager, each failing for the reason the comment gives
(checked with ``--runxfail``); the rebuilt manager passes them, and they stay as regressions.
"""

from __future__ import annotations

import dataclasses

import pytest

from broadcaster.tx.testing import (
    FOREIGN_TO,
    GWEI,
    FeeSettings,
    SignRequest,
    SimFactory,
    SimTx,
    default_policy,
)
from nonce import TxState
from nonce.errors import InvalidIntent

_S = TxState


def is_noop(request: SignRequest) -> bool:
    f = request.fields
    return f.to == bytes.fromhex(request.sender[2:]) and f.value == 0 and not f.data


# -- 5. unbounded gap fill ------------------------------------------------------------------------


# Failed before the fix (issue 11): one RPC's pending count far beyond what we signed is trusted
# alone (the next intent gets nonce +495) and gap filling is unbounded (no [fees] max_gap_fill):
# 495 noops
def test_a_bad_pending_count_from_one_rpc_does_not_sign_hundreds_of_noops(
    sims: SimFactory,
) -> None:
    sim = sims(readers=("a", "b"))
    sim.run(sim.submit())
    sim.run(sim.mine())
    sim.node("a").pending_offset = 495  # "a" answers eth_getTransactionCount(pending) = tip + 495
    sim.run(sim.crash())
    sim.run(sim.restart())  # the start-up resync asks "a"
    later = sim.run(sim.submit())
    sim.run(sim.crash())
    sim.run(sim.restart())  # again: now the jump lies below a booked nonce
    noops = [r for r in sim.enclave.signed() if is_noop(r)]
    assert len(noops) <= 4, (
        f"{len(noops)} gap-fill noops signed; the next intent got nonce {later.nonce}"
    )


def test_a_raw_transaction_far_ahead_does_not_queue_thousands_of_gap_fills(
    sims: SimFactory,
) -> None:
    # Before the fix the raw tx was tracked and the next resync booked a gap fill at each of the
    # 9,999 nonces below it. Now it is refused, saying which bound it broke.
    sim = sims()
    base = sim.tip.nonce(sim.accounts[0])
    with pytest.raises(InvalidIntent, match="max_gap_fill"):
        sim.run(sim.submit_raw(base + 10_000))
    sim.enclave.down = True  # count what gets booked, not what gets signed
    sim.run(sim.crash())
    sim.run(sim.restart())
    booked = [r for r in sim.adapter.records() if r.intent.noop]
    assert len(booked) <= 4, f"{len(booked)} gap fills booked below nonce {base + 10_000}"


def test_a_raw_transaction_a_few_nonces_ahead_is_tracked_and_its_gaps_filled(
    sims: SimFactory,
) -> None:
    sim = sims()
    base = sim.tip.nonce(sim.accounts[0])
    record = sim.run(sim.submit_raw(base + 3))
    # The nonces below it may still come from the bot itself; a resync (here: a restart) plugs
    # what is still open, within max_gap_fill.
    sim.run(sim.crash())
    sim.run(sim.restart())
    sim.run(sim.mine(4))
    noops = [r for r in sim.adapter.records() if r.intent.noop]
    assert sorted(r.nonce for r in noops) == [base, base + 1, base + 2]
    assert sim.record(record.intent.id).state in (_S.INCLUDED, _S.FINALIZED)


# -- 8. insufficient funds for a bumped replacement ---------------------------------------------


# Failed before the fix (issue 11): 'insufficient funds' from every RPC for a bumped replacement
# fails the intent although the earlier attempt's bytes are still valid (and they are never sent
# again)
def test_insufficient_funds_for_a_bump_keeps_the_earlier_attempt_alive(sims: SimFactory) -> None:
    sim = sims()
    record = sim.run(sim.submit())
    sim.run(sim.mine())
    original = record.latest
    assert original is not None
    ours, cap = record.sender, original.max_fee_per_gas

    def funds(tx: SimTx) -> str | None:  # the balance covers the original, not more
        if tx.sender == ours and tx.fee_cap > cap:
            return "insufficient funds for gas * price + value"
        return None

    for node in sim.network.nodes.values():
        node.rules.append(funds)
    sim.run(sim.reorg(1, reinclude=False))  # the presigned (bumped) replacement goes out
    sim.run(sim.mine(3))
    final = sim.record(record.intent.id)
    events = sim.checker.events(record.intent.id)
    assert "failed" not in events, f"told {events}: {final.state_reason}"
    assert final.state is _S.INCLUDED


# -- 11. [fees] priority_fee_wei ----------------------------------------------------------------


# Failed before the fix (issue 11): [fees] priority_fee_wei never reaches the manager (FeePolicy
# has no field for it; service.py passes only bump_percent and max_fee_cap_wei): gap fills always
# tip 1 gwei
def test_the_configured_priority_fee_is_the_tip_of_gap_fill_noops(sims: SimFactory) -> None:
    sim = sims(fees=FeeSettings(priority_fee_wei=3 * GWEI))
    sim.enclave.down = True
    doomed = sim.run(sim.submit())
    sim.run(sim.cancel(doomed.intent.id))
    sim.enclave.down = False
    sim.run(sim.submit())  # booked above the hole before the resync: a gap fill takes the hole
    sim.run(sim.advance(1.0))
    fills = [r for r in sim.enclave.signed() if is_noop(r) and r.fields.nonce == doomed.nonce]
    assert fills, "no gap fill happened"
    tip = fills[0].fields.max_priority_fee_per_gas or 0
    assert tip == 3 * GWEI, f"the gap fill tipped {tip / GWEI} gwei ({sim.adapter.manager.fees})"


# -- 13. the fee cap and the rate limit ---------------------------------------------------------


# Failed before the fix (issue 11): replacement_fees raises FeeCapExceeded when 2 * baseFee + tip
# is over [fees] max_fee_cap_wei instead of clamping to a valid +10% bump under the cap: nothing
# is re-signed and only the original, under the base fee, goes out again
def test_a_re_sign_over_the_fee_cap_is_clamped_to_a_valid_bump_under_it(sims: SimFactory) -> None:
    sim = sims(presign=False, fees=FeeSettings(fee_cap=25 * GWEI))
    record = sim.run(sim.submit(max_fee=20 * GWEI, tip=2 * GWEI))
    sim.run(sim.mine())
    sim.set_base_fee(21 * GWEI)  # the original (20 gwei) can no longer be mined; 25 gwei can
    sim.run(sim.reorg(1, reinclude=False))
    sim.run(sim.mine(3))
    final = sim.record(record.intent.id)
    alerts = [(kind, detail) for _, kind, detail in sim.alerts]
    assert final.state is _S.INCLUDED, f"{final.state.value}; alerts {alerts}"


# Failed before the fix (issue 11): an enclave rate_limit denial is handled like any policy
# denial: the unsigned intent is failed at once instead of retried when the bucket refills
def test_a_rate_limited_signature_is_retried_not_failed(sims: SimFactory) -> None:
    sim = sims(policy=dataclasses.replace(default_policy(), rate_per_second=0.5, burst=2))
    ids = [sim.run(sim.submit()).intent.id for _ in range(3)]
    assert sim.enclave.denials("rate_limit"), "the rate limit did not bite"
    sim.run(sim.mine(4))
    final = sim.record(ids[2])
    assert final.state is not _S.FAILED, f"failed: {final.state_reason}"
    assert final.state is _S.INCLUDED


def test_a_policy_denial_of_the_payload_fails_the_intent_and_its_nonce_is_reused(
    sims: SimFactory,
) -> None:
    sim = sims()
    refused = sim.run(sim.submit(to=FOREIGN_TO))  # not in the enclave's allowlist
    assert refused.state is _S.FAILED
    assert sim.enclave.denials("to_not_allowed")
    sim.run(sim.advance(1.0))
    later = sim.run(sim.submit())
    assert later.nonce == refused.nonce
    sim.run(sim.finish())
    sim.check()


def test_an_eip1559_re_sign_clears_the_replace_rule_and_the_new_base_fee(sims: SimFactory) -> None:
    sim = sims()
    record = sim.run(sim.submit())
    sim.run(sim.mine())
    sim.run(sim.reorg(1, reinclude=False, base_fee=11 * GWEI))
    sim.run(sim.finish())
    resigned = [r for r in sim.enclave.signed() if r.previous is not None]
    assert resigned, "nothing was re-signed"
    assert sim.record(record.intent.id).state is _S.FINALIZED
    sim.check()  # no resign_below_base_fee, no nonce_conflict

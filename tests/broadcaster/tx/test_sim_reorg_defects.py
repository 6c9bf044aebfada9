"""Reorg-reaction defects the simulator reproduces (DESIGN.md §3, §5).

Each test asserts the contract's outcome. The ones with a "Failed before the fix" comment were
strict xfails written against the old manager, each failing for the reason the comment gives
(checked with ``--runxfail``); the rebuilt manager passes them, and they stay as regressions.
"""

from __future__ import annotations

import pytest

from broadcaster.tx.testing import GWEI, Sim, SimFactory
from nonce import TxState
from nonce.fees import legacy_replacement_price

_S = TxState


# -- 1. a presigned replacement discarded -------------------------------------------------------


# Failed before the fix (issue 11): a presigned replacement discarded because the base fee rose is
# re-signed from the original attempt's fees, i.e. with the tip the enclave already signed
# (nonce_conflict); only the original, now under the base fee, goes out again
def test_a_replacement_presigned_before_the_base_fee_rose_is_re_signed_above_it(
    sims: SimFactory,
) -> None:
    sim = sims()  # base fee 10 gwei
    record = sim.run(sim.submit(max_fee=10 * GWEI + GWEI // 2, tip=GWEI // 2))
    sim.run(sim.mine())
    assert record.state is _S.INCLUDED
    assert len(sim.enclave.signed()) == 2, "the replacement was not signed ahead"
    sim.set_base_fee(11 * GWEI)  # +10%: past what the presigned replacement was signed for
    sim.run(sim.reorg(1, reinclude=False))
    sim.run(sim.mine(3))
    conflicts = sim.enclave.denials("nonce_conflict")
    assert not conflicts, f"the re-sign asked for fees the enclave refuses: {conflicts[0].reason}"
    final = sim.record(record.intent.id)
    assert final.state is _S.INCLUDED, f"still {final.state.value}: stuck under the base fee"


# Failed before the fix (issue 11): when a reorg drops an intent whose validUntilBlock has passed,
# its noop is priced like the presigned payload replacement (nonce_conflict), so the original
# payload is rebroadcast instead (again every 2 blocks) and mined after validUntilBlock
def test_an_intent_expired_at_the_reorg_is_replaced_by_a_noop_and_its_payload_never_resent(
    sims: SimFactory,
) -> None:
    sim = sims()
    valid_until = sim.tip.number + 2
    record = sim.run(sim.submit(valid_until=valid_until))
    sim.run(sim.mine())  # included one block before validUntilBlock
    assert record.state is _S.INCLUDED and record.block is not None
    sim.run(sim.reorg(1, reinclude=False))  # the new tip is validUntilBlock: the next is past it
    sim.run(sim.mine(4))
    late = sim.checker.of("expired_payload_broadcast")
    assert not late, f"{len(late)} payload sends past validUntilBlock, first: {late[0].detail}"
    assert not sim.checker.of("mined_after_expiry"), sim.checker.of("mined_after_expiry")[0]
    assert sim.record(record.intent.id).state is _S.EXPIRED


# -- 2. a cancel racing a reorg re-sign -----------------------------------------------------------


# Failed before the fix (issue 11): a cancel that races the reorg re-sign of its payload is told
# 'cancelled' although its noop was refused (nonce_conflict) and the payload replacement took the
# nonce
def test_a_cancel_racing_a_reorg_re_sign_is_not_told_cancelled_when_the_payload_wins(
    sims: SimFactory,
) -> None:
    sim = sims(presign=False)
    sim.enclave.latency = 0.05  # the re-sign is in flight when the bot cancels
    record = sim.run(sim.submit())
    sim.run(sim.mine())
    sim.run(sim.reorg(1, reinclude=False, wait=0.01))
    sim.run(sim.cancel(record.intent.id))
    sim.run(sim.mine(3))
    events = sim.checker.events(record.intent.id)
    assert "cancelled" in events  # the race happened: the bot got an answer
    for kind in ("cancelled_without_noop", "payload_after_cancelled"):
        found = sim.checker.of(kind)
        assert not found, f"{found[0]}; then told {events[events.index('cancelled') + 1 :]}"


# -- 3. legacy and 2930 re-signs ------------------------------------------------------------------


@pytest.mark.parametrize("tx_type", [0, 1])
# Failed before the fix (issue 11): legacy/2930 re-signs are priced by the EIP-1559 rule (gasPrice
# = 2 * baseFee + bumped price: 95.2 gwei) instead of the +10% bump (35.2 gwei)
def test_a_legacy_re_sign_is_the_ten_percent_bump_without_1559_headroom(
    sims: SimFactory, tx_type: int
) -> None:
    sim = sims(base_fee=30 * GWEI)
    record = sim.run(sim.submit(tx_type=tx_type, gas_price=32 * GWEI))
    sim.run(sim.mine())
    assert record.state is _S.INCLUDED
    sim.run(sim.reorg(1, reinclude=False))
    sim.run(sim.mine())
    resigns = [r for r in sim.enclave.signed() if r.previous is not None]
    assert resigns, "no re-sign happened"
    first = resigns[0].fields.gas_price or 0
    want = legacy_replacement_price(32 * GWEI, base_fee=30 * GWEI)  # 35.2 gwei
    assert first == want, f"re-signed at {first / GWEI} gwei"
    for r in resigns:  # each later one (a replacement signed ahead for the next reorg) too
        assert r.previous is not None
        step = legacy_replacement_price(r.previous.gas_price or 0, base_fee=30 * GWEI)
        assert (r.fields.gas_price or 0) <= step, f"{r.fields.gas_price} over {step}"


# -- 6. a foreign transaction at our nonce ---------------------------------------------------------


# Failed before the fix (issue 11): a foreign transaction that takes our nonce after a reorg is
# never detected: the intent stays open and its bytes are resent every 2 blocks, no
# foreign_transaction alert
def test_a_foreign_transaction_at_our_nonce_after_a_reorg_fails_the_intent_within_blocks(
    sims: SimFactory,
) -> None:
    sim = sims()
    record = sim.run(sim.submit())
    sim.run(sim.mine())
    foreign = sim.foreign_tx(record.nonce)
    sim.run(sim.reorg(1, reinclude=False, txs=[foreign]))
    sent_before = sim.checker.payload_sends[record.intent.id]
    sim.run(sim.mine(6))
    final = sim.record(record.intent.id)
    resent = sim.checker.payload_sends[record.intent.id] - sent_before
    assert final.state is _S.FAILED, f"still {final.state.value} 6 blocks on, resent {resent}x"
    assert any(kind == "foreign_transaction" for _, kind, _ in sim.alerts), sim.alerts


# -- 9. a lagging RPC's receipt --------------------------------------------------------------------


# Failed before the fix (issue 11): a receipt from a lagging RPC, in a block the reorg abandoned,
# marks the dropped transaction included (the recheck does not ask whether the block is canonical)
def test_a_lagging_rpcs_receipt_in_an_abandoned_block_is_not_inclusion(sims: SimFactory) -> None:
    sim = sims(readers=("a",))
    record = sim.run(sim.submit())
    sim.run(sim.mine())
    assert record.block is not None
    abandoned = record.block.hash
    sim.node("a").frozen = True  # "a" stays on the branch that holds our block
    sim.run(sim.reorg(1, reinclude=False, wait=0.5))
    wrong = sim.checker.of("included_not_canonical")
    assert not wrong, wrong[0]
    assert sim.record(record.intent.id).block != abandoned


# -- 10. the base fee comes from the canonical tip only --------------------------------------------


def _tip_fee(sim: Sim) -> int:
    assert sim.host is not None
    tip = sim.host.feed.tracker.tip
    assert tip is not None
    return sim.chain.blocks[tip.hash].base_fee


# Failed before the fix (issue 11): on_chain reads baseFeePerGas from any header that produced
# events, here a header the tracker rejected
def test_a_rejected_header_does_not_set_the_base_fee(sims: SimFactory) -> None:
    sim = sims()
    assert sim.host is not None
    header = {
        "number": "0xzz",
        "hash": "0x" + "ab" * 32,
        "parentHash": sim.tip.hash,
        "baseFeePerGas": hex(500 * GWEI),
    }
    sim.host.feed.announce_raw("b", header)
    assert sim.adapter.base_fee == _tip_fee(sim), f"base fee now {sim.adapter.base_fee / GWEI} gwei"


# Failed before the fix (issue 11): on_chain reads baseFeePerGas from a held head (parent unknown,
# not canonical)
def test_a_held_head_does_not_set_the_base_fee(sims: SimFactory) -> None:
    sim = sims()
    assert sim.host is not None
    header = {
        "number": hex(sim.tip.number + 5),
        "hash": "0x" + "cd" * 32,
        "parentHash": "0x" + "ef" * 32,
        "baseFeePerGas": hex(500 * GWEI),
    }
    sim.host.feed.announce_raw("b", header)
    assert sim.adapter.base_fee == _tip_fee(sim), f"base fee now {sim.adapter.base_fee / GWEI} gwei"


# Failed before the fix (issue 11): on_chain reads baseFeePerGas from backfilled ancestors: after
# a start-up the base fee is the oldest backfilled block's, not the tip's
def test_backfilled_ancestors_do_not_set_the_base_fee(sims: SimFactory) -> None:
    sim = sims()
    for k in range(4):  # every block a different base fee
        sim.run(sim.mine(base_fee=(20 + 5 * k) * GWEI))
    sim.run(sim.crash())
    sim.run(sim.restart())  # the tracker anchors on the tip and backfills below it
    assert sim.adapter.base_fee == _tip_fee(sim) == 35 * GWEI, (
        f"base fee {sim.adapter.base_fee / GWEI} gwei, tip's {_tip_fee(sim) / GWEI}"
    )


def test_a_lower_side_branch_head_does_not_set_the_base_fee(sims: SimFactory) -> None:
    sim = sims()
    assert sim.host is not None
    below = sim.chain.truth.at(sim.tip.number - 2)
    assert below is not None
    side = sim.chain.build(below, [], base_fee=500 * GWEI)  # lower than the tip: not canonical
    sim.host.feed.announce_raw("b", side.header())
    assert sim.adapter.base_fee == _tip_fee(sim) == sim.tip.base_fee

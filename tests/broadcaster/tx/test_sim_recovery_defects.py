"""Expiry, crash-recovery and bookkeeping defects the simulator reproduces (DESIGN.md §5).

Each test asserts the contract's outcome. The ones with a "Failed before the fix" comment were
strict xfails written against the old manager, each failing for the reason the comment gives
(checked with ``--runxfail``); the rebuilt manager passes them, and they stay as regressions.
"""

from __future__ import annotations

import pytest

from broadcaster.tx.manager import CancelFailed
from broadcaster.tx.testing import FOREIGN_TO, SimFactory
from nonce import TxState

_S = TxState


# -- 4. expiry ----------------------------------------------------------------------------------


# Failed before the fix (issue 11): crash recovery judges validUntilBlock against the tracker's
# tip, which is unknown before the first head: a restart resends the expired payload
def test_a_restart_before_any_head_does_not_resend_an_expired_payload(sims: SimFactory) -> None:
    sim = sims()
    record = sim.run(sim.submit(valid_until=sim.tip.number + 2))
    sim.run(sim.crash())
    ours = record.sender
    sim.run(sim.mine(3, exclude=lambda tx: tx.sender == ours))  # past validUntilBlock, unmined
    sim.run(sim.restart())
    sim.run(sim.mine(3))
    late = sim.checker.of("expired_payload_broadcast")
    assert not late, late[0]
    assert sim.record(record.intent.id).state is _S.EXPIRED


# Failed before the fix (issue 11): an intent whose validUntilBlock is already behind the tip is
# accepted, signed and broadcast at submission
def test_an_intent_past_its_valid_until_block_is_never_broadcast(sims: SimFactory) -> None:
    sim = sims()
    intent = sim.intent(valid_until=sim.tip.number - 1)
    try:
        sim.run(sim.submit(intent))
    except Exception:  # refusing it at submission is one right answer
        pass
    sim.run(sim.mine(2))
    sends = sim.checker.payload_sends[intent.id]
    assert sends == 0, f"broadcast {sends}x though validUntilBlock {intent.valid_until_block} < tip"


# Failed before the fix (issue 11): the expiry pass runs on the new tip before the inclusion scan
# of that block: a transaction mined in exactly validUntilBlock is told 'expired' (then
# 'included')
def test_a_transaction_mined_in_its_valid_until_block_is_never_told_expired(
    sims: SimFactory,
) -> None:
    sim = sims()
    record = sim.run(sim.submit(valid_until=sim.tip.number + 1))
    sim.run(sim.mine())  # mined in validUntilBlock
    sim.run(sim.mine(2))
    events = sim.checker.events(record.intent.id)
    assert "expired" not in events, f"told {events}"
    assert sim.record(record.intent.id).state is _S.INCLUDED


def test_an_unmined_intent_expires_with_a_noop_after_its_valid_until_block(
    sims: SimFactory,
) -> None:
    sim = sims()
    record = sim.run(sim.submit(valid_until=sim.tip.number + 2))
    ours = record.sender
    sim.run(sim.mine(3, exclude=lambda tx: tx.sender == ours and not tx.is_noop))
    sim.run(sim.finish())
    assert sim.record(record.intent.id).state is _S.EXPIRED
    assert not sim.checker.mined(record.intent.id)
    sim.check()


# -- 7. kill -9 loses a replacement's journal entry --------------------------------------------


@pytest.mark.parametrize("kept", [1, 0], ids=["reorg-journaled", "nothing-journaled"])
# Failed before the fix (issue 11): when kill -9 lost the journal entry of a mined replacement and
# the node has no eth_getTransactionBySenderAndNonce, recovery calls the nonce foreign instead of
# scanning canonical blocks for (sender, nonce): the intent ends failed (or, if the journal still
# says included, stays included in the abandoned block)
def test_a_mined_replacement_the_journal_lost_is_recovered_as_included(
    sims: SimFactory, kept: int
) -> None:
    sim = sims(linger=None)  # the journal writes at flushes only: the crash window is explicit
    for node in sim.network.nodes.values():
        node.sender_nonce_lookup = False
    record = sim.run(sim.submit())
    sim.run(sim.mine())
    assert sim.host is not None
    sim.host.journal.commit()  # everything up to the inclusion is on disk
    sim.run(sim.reorg(1, reinclude=False, wait=0.005))  # the presigned replacement goes out
    lost = sim.run(sim.crash(keep=kept))  # kept=1: "reorged" reached the disk, the attempt not
    assert lost > 0, "the crash lost nothing: the scenario did not happen"
    sim.run(sim.mine())  # the replacement is mined while the broadcaster is down
    sim.run(sim.restart())
    sim.run(sim.finish())
    final = sim.record(record.intent.id)
    assert final.state in (_S.INCLUDED, _S.FINALIZED), f"{final.state.value}: {final.state_reason}"
    assert final.block is not None and sim.chain.truth.contains(final.block.hash), (
        f"{final.state.value} in abandoned block {final.block}"
    )


# -- 12. an unsigned intent expires while the signer is down -----------------------------------


# Failed before the fix (issue 11): an unsigned intent that expires while the signer is down
# leaves its nonce a hole (no noop, no resync): every later nonce of the sender is stuck behind it
def test_an_intent_that_expires_unsigned_leaves_no_nonce_hole(sims: SimFactory) -> None:
    sim = sims()
    sim.enclave.down = True
    expiring = sim.run(sim.submit(valid_until=sim.tip.number + 2))
    later = sim.run(sim.submit())
    sim.run(sim.mine(3))
    assert "expired" in sim.checker.events(expiring.intent.id)
    sim.enclave.down = False
    sim.run(sim.mine(6))
    final = sim.record(later.intent.id)
    assert final.state is _S.INCLUDED, (
        f"nonce {later.nonce} is {final.state.value}: chain nonce stuck at "
        f"{sim.tip.nonce(later.sender)} (hole at {expiring.nonce})"
    )


# Failed before the fix (issue 11): a gap fill the signer could not sign (down) is never retried,
# and nothing asks for another resync: the hole below a later signed nonce stays for ever
def test_a_gap_fill_that_could_not_be_signed_is_retried(sims: SimFactory) -> None:
    sim = sims()
    sim.enclave.down = True
    doomed = sim.run(sim.submit())
    later = sim.run(sim.submit())
    sim.run(sim.cancel(doomed.intent.id))  # a hole under `later`: the resync tries a gap fill
    sim.run(sim.advance(1.0))
    sim.enclave.down = False
    sim.run(sim.mine(6))
    final = sim.record(later.intent.id)
    assert final.state is _S.INCLUDED, (
        f"nonce {later.nonce} is {final.state.value}: chain nonce stuck at "
        f"{sim.tip.nonce(later.sender)} (hole at {doomed.nonce})"
    )


# -- 14. recovery and finality bookkeeping -----------------------------------------------------


# Failed before the fix (issue 11): recovery tells 'included' for a cancelled intent whose noop it
# finds mined (its status did not change: it stays cancelled)
def test_recovery_does_not_tell_included_when_nothing_changed(sims: SimFactory) -> None:
    sim = sims(linger=None)
    record = sim.run(sim.submit())
    sim.run(sim.cancel(record.intent.id))  # a noop takes the nonce (flushed)
    sim.run(sim.mine())  # the noop is mined; that fact is not on disk yet
    sim.run(sim.crash())
    sim.run(sim.restart())
    wrong = [v for v in sim.checker.violations if v.kind.startswith("told_included_but")]
    assert not wrong, wrong[0]


# Failed before the fix (issue 11): after a restart, intents the journal holds as included are
# never finalized: the canonical window's held blocks are not rebuilt from the book
def test_a_restart_keeps_finalizing_what_was_included_before_it(sims: SimFactory) -> None:
    sim = sims()
    record = sim.run(sim.submit())
    sim.run(sim.mine())
    assert record.state is _S.INCLUDED
    sim.run(sim.crash())
    sim.run(sim.restart())
    sim.run(sim.finish())
    final = sim.record(record.intent.id)
    assert final.state is _S.FINALIZED, f"still {final.state.value} at tip {sim.tip.number}"


# Failed before the fix (issue 11): an inclusion found by crash recovery is never held for
# finality (no window.hold): the intent stays 'included' for ever
def test_an_inclusion_found_by_recovery_finalizes(sims: SimFactory) -> None:
    sim = sims()
    record = sim.run(sim.submit(wait=0.01))
    sim.run(sim.crash())
    sim.run(sim.mine(3))  # mined while down, below the tip the restarted tracker anchors on
    sim.run(sim.restart())
    sim.run(sim.finish())
    final = sim.record(record.intent.id)
    assert final.state is _S.FINALIZED, f"still {final.state.value} at tip {sim.tip.number}"


# Failed before the fix (issue 11): an inclusion found by the deep-reorg reconcile is never held
# for finality: the intent stays 'included' for ever
def test_an_inclusion_found_after_a_deep_reorg_finalizes(sims: SimFactory) -> None:
    sim = sims(history=12)
    record = sim.run(sim.submit())
    sim.run(sim.mine())
    assert record.state is _S.INCLUDED
    sim.run(sim.reorg(sim.config.finality_depth + 2, reinclude=True))  # below the window
    assert any(kind == "deep_reorg" for _, kind, _ in sim.alerts), "no deep reorg happened"
    sim.run(sim.finish())
    final = sim.record(record.intent.id)
    assert final.state is _S.FINALIZED, f"still {final.state.value} at tip {sim.tip.number}"


# Failed before the fix (issue 11): given-up records without a finalized noop (cancelled before
# signing, failed by policy) are never evicted: the book grows with every one
def test_given_up_records_are_evicted_like_finalized_ones(sims: SimFactory) -> None:
    sim = sims(retain_settled=5)
    for _ in range(10):
        sim.enclave.down = True
        doomed = sim.run(sim.submit())
        sim.run(sim.cancel(doomed.intent.id))
        sim.enclave.down = False
        sim.run(sim.submit(to=FOREIGN_TO))  # the enclave's allowlist refuses it: failed
        sim.run(sim.advance(1.0))
    for _ in range(10):
        sim.run(sim.submit())
    sim.run(sim.finish())
    sizes = sim.adapter.sizes()
    assert sizes["records"] <= 5 + 5, f"{sizes['records']} records kept with retain_settled=5"


# -- further defects found while building the scenarios ---------------------------------------


# Failed before the fix (issue 11): when the gap-fill noop at a cancelled intent's nonce
# finalizes, the bot is told 'finalized' for the cancelled intent (finalize reports every record
# in the block)
def test_a_cancelled_intent_is_never_told_finalized(sims: SimFactory) -> None:
    sim = sims()
    sim.enclave.down = True
    doomed = sim.run(sim.submit())
    sim.run(sim.cancel(doomed.intent.id))
    sim.enclave.down = False
    sim.run(sim.submit())  # booked above the hole before the resync: a gap fill takes it
    sim.run(sim.finish())
    events = sim.checker.events(doomed.intent.id)
    assert "finalized" not in events, f"told {events}"


# Failed before the fix (issue 11): a cancel while the signer is down is told 'cancelled' with no
# noop signed; the payload already in the pools is then mined
def test_a_cancel_with_the_signer_down_is_not_told_cancelled_without_a_noop(
    sims: SimFactory,
) -> None:
    sim = sims()
    record = sim.run(sim.submit())
    sim.enclave.down = True
    with pytest.raises(CancelFailed, match="not cancelled"):  # the bot hears the truth
        sim.run(sim.cancel(record.intent.id))
    found = sim.checker.of("cancelled_without_noop")
    assert not found, found[0]
    assert "cancelled" not in sim.checker.events(record.intent.id)
    sim.enclave.down = False
    sim.run(sim.cancel(record.intent.id))  # once the signer is back, the cancel goes through
    assert sim.record(record.intent.id).state is _S.CANCELLED


# Failed before the fix (issue 11): an intent told expired whose payload then won (mined in
# validUntilBlock) has a noop attempt; after a reorg its presigned noop is mined and the intent is
# told 'included'
def test_an_intent_is_never_told_included_for_its_noop(sims: SimFactory) -> None:
    sim = sims()
    sim.run(sim.submit(valid_until=sim.tip.number + 1))
    sim.run(sim.mine())  # mined in validUntilBlock (told expired, then included: scenario 4)
    sim.run(sim.reorg(1, reinclude=False))
    sim.run(sim.mine(2))
    found = sim.checker.of("included_by_noop")
    assert not found, found[0]

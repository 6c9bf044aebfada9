"""The intent path's ordering promise (DESIGN.md §5, issue 14), in the deterministic simulator.

``TxManager.complete`` starts the journal's flush and asks the signer while its fsync runs (the
overlap; ``SimConfig.overlap``, the service's default with ``[audit]``), or flushes first and
signs only then (``overlap=False``). Either way the intent is acknowledged only once durable and
is never on the wire before its journal entry is. The simulator's journal can hold its flush (a
slow fsync). A crash in that window leaves no broadcast transaction the journal does not know;
with the overlap it may leave the enclave holding a signature at a nonce the restarted journal
does not know, which recovery reads from the enclave's verified audit log and takes with a noop
before the next intent gets a nonce (``broadcaster.tx.unjournaled``): else the enclave's
intent-bound nonce protection refuses the next intent's payload there for ever.
"""

from __future__ import annotations

import pytest

from broadcaster.tx.testing import SimFactory
from broadcaster.tx.unjournaled import NoopAt
from nonce import TxState

_S = TxState


def _received(sim: object, sender: str) -> list[object]:
    nodes = sim.network.nodes.values()  # type: ignore[attr-defined]
    return [tx for node in nodes for tx in node.received if tx.sender == sender]


@pytest.mark.parametrize("overlap", [True, False])
def test_no_rpc_receives_the_intent_before_its_journal_flush_completes(
    sims: SimFactory, overlap: bool
) -> None:
    sim = sims(overlap=overlap)
    journal = sim.host.journal  # type: ignore[union-attr]
    intent = sim.intent()
    signed_before = len(sim.enclave.signed())
    journal.hold()
    submission = sim.loop.create_task(sim.adapter.submit(intent))
    sim.run(sim.advance(1.0))  # the signer answers in 0.2 ms; the fsync still has not finished
    assert journal.flushes_started >= 1
    # The overlap signs during the fsync; flush-then-sign has not asked the signer yet.
    assert len(sim.enclave.signed()) == signed_before + (1 if overlap else 0)
    assert not submission.done(), "acknowledged before the intent was durable"
    assert _received(sim, intent.sender) == [], "on the wire before its journal entry is durable"
    journal.release()
    record = sim.run(submission)
    sim.run(sim.advance(0.01))
    assert record.state in (_S.SIGNED, _S.BROADCAST)
    assert len(_received(sim, intent.sender)) == len(sim.network.nodes)
    sim.run(sim.mine(2))
    assert sim.record(intent.id).state is _S.INCLUDED
    sim.check()


@pytest.mark.parametrize("overlap", [True, False])
def test_a_crash_between_the_signature_and_the_durable_flush_broadcasts_nothing(
    sims: SimFactory, overlap: bool
) -> None:
    sim = sims(linger=None, overlap=overlap)  # nothing reaches the disk but through a flush
    journal = sim.host.journal  # type: ignore[union-attr]
    lost = sim.intent()
    journal.hold()
    submission = sim.loop.create_task(sim.adapter.submit(lost))
    sim.run(sim.advance(1.0))
    signed_lost = [r for r in sim.enclave.signed() if r.fields.value == lost.value]
    assert len(signed_lost) == (1 if overlap else 0)
    sim.run(sim.crash())  # kill -9 while the fsync is under way: the intent never became durable
    with pytest.raises(BaseException):  # noqa: B017 - the killed process's await fails somehow
        sim.run(submission)
    assert _received(sim, lost.sender) == [], "a crash left a broadcast intent the journal lost"
    sim.run(sim.restart())
    assert sim.adapter.find(lost.id) is None, "never durable: the restarted book does not know it"
    # The next intent: with the overlap the enclave signed the lost payload at the nonce the
    # restarted book would hand out; recovery took that nonce with a noop first.
    noops = [a for a in sim.host.recovery if isinstance(a, NoopAt)]  # type: ignore[union-attr]
    if overlap:
        assert [(n.nonce, n.signed) for n in noops] == [(signed_lost[0].fields.nonce, True)]
    else:
        assert noops == []
    after = sim.run(sim.submit())
    sim.run(sim.mine(3))
    sim.run(sim.finish())
    assert sim.record(after.intent.id).state in (_S.INCLUDED, _S.FINALIZED)
    assert not sim.enclave.denials(), "the enclave refused something after the restart"
    mined = [tx for b in sim.chain.truth.blocks() for tx in b.txs if tx.sender == lost.sender]
    assert all(tx.value != lost.value for tx in mined), "the lost intent reached the chain"
    if overlap:  # the lost signature's nonce went to a noop, mined before the next intent
        at = {tx.nonce: tx for tx in mined}
        assert at[signed_lost[0].fields.nonce].value == 0
    sim.check()


def test_with_the_signer_down_at_restart_no_new_intent_takes_a_nonce_until_its_log_is_read(
    sims: SimFactory,
) -> None:
    """The crash above, and the enclave unreachable when the service comes back: recovery
    cannot tell which nonces it signed, so the next intent waits (it could not be signed
    anyway) instead of taking the lost one's nonce; once the signer answers, the noop first."""
    sim = sims(linger=None)
    journal = sim.host.journal  # type: ignore[union-attr]
    lost = sim.intent()
    journal.hold()
    submission = sim.loop.create_task(sim.adapter.submit(lost))
    sim.run(sim.advance(1.0))
    (signed_lost,) = [r for r in sim.enclave.signed() if r.fields.value == lost.value]
    sim.run(sim.crash())
    with pytest.raises(BaseException):  # noqa: B017 - the killed process's await fails somehow
        sim.run(submission)
    sim.enclave.down = True
    sim.run(sim.restart())
    nxt = sim.intent()
    waiting = sim.loop.create_task(sim.adapter.submit(nxt))
    sim.run(sim.advance(3.0))
    assert not waiting.done(), "a new intent took a nonce before the audit log was read"
    assert sim.adapter.find(nxt.id) is None
    sim.enclave.down = False
    record = sim.run(waiting)
    assert record.nonce == signed_lost.fields.nonce + 1
    sim.run(sim.mine(3))
    sim.run(sim.finish())
    assert sim.record(nxt.id).state in (_S.INCLUDED, _S.FINALIZED)
    assert not sim.enclave.denials()
    mined = {
        tx.nonce: tx for b in sim.chain.truth.blocks() for tx in b.txs if tx.sender == lost.sender
    }
    assert mined[signed_lost.fields.nonce].value == 0, "the lost nonce is not a noop"
    sim.check()


def test_intent_seconds_is_observed_for_the_first_attempt(sims: SimFactory) -> None:
    sim = sims()
    seen: list[float] = []
    observer = sim.adapter.manager.observer  # type: ignore[attr-defined]
    original = observer.intent_to_wire

    def spy(seconds: float) -> None:
        seen.append(seconds)
        original(seconds)

    observer.intent_to_wire = spy
    sim.run(sim.submit())
    sim.run(sim.submit())
    assert len(seen) == 2 and all(s >= 0 for s in seen)
    sim.run(sim.mine(1))
    sim.run(sim.reorg(1))  # a reorg's re-sends are reaction_seconds, not intent_seconds
    assert len(seen) == 2


def test_a_duplicate_key_is_answered_with_the_earlier_intent_only_once_it_is_durable(
    sims: SimFactory,
) -> None:
    """Adversarial (review): a retried request (same idempotency key) arrives while the first
    one's journal flush is still under way. The API answers it with the earlier intent: that is
    an acknowledgement, so it must wait for the earlier intent to be durable too; else a crash
    right then loses an intent a bot was told was accepted."""
    import dataclasses

    from nonce.errors import DuplicateIdempotencyKey

    sim = sims(linger=None)
    journal = sim.host.journal  # type: ignore[union-attr]
    manager = sim.adapter.manager  # type: ignore[attr-defined]
    first = dataclasses.replace(sim.intent(), key="retry-me")
    again = dataclasses.replace(first, id=first.id + "-again")
    journal.hold()
    submission = sim.loop.create_task(sim.adapter.submit(first))
    sim.run(sim.advance(0.001))
    duplicate = sim.loop.create_task(manager.admit(again))
    sim.run(sim.advance(1.0))
    assert not duplicate.done(), "answered with the earlier intent before it was durable"
    journal.release()
    with pytest.raises(DuplicateIdempotencyKey) as info:
        sim.run(duplicate)
    assert info.value.record.intent.id == first.id
    sim.run(submission)
    sim.check()


def test_a_signature_retried_in_the_background_waits_for_the_flush_too(
    sims: SimFactory,
) -> None:
    """Adversarial (review): with the overlap, the first signature fails (the signer is briefly
    unreachable) while the fsync is slow; ``sign_and_send`` hands the intent to the background
    retry (0.1 s backoff), which signed and sent it without waiting for the flush. A ``kill -9``
    then left a transaction on the wire the journal never knew, unacknowledged: the bot's retry
    with the same idempotency key gets a new intent at the next nonce, executed twice."""
    sim = sims(linger=None)
    journal = sim.host.journal  # type: ignore[union-attr]
    intent = sim.intent()
    journal.hold()
    sim.enclave.down = True
    submission = sim.loop.create_task(sim.adapter.submit(intent))
    sim.run(sim.advance(0.01))  # the overlapped signature failed: the retry is in the background
    sim.enclave.down = False
    sim.run(sim.advance(5.0))  # the retries run; the fsync still has not finished
    assert not submission.done(), "acknowledged before the intent was durable"
    assert _received(sim, intent.sender) == [], "a retried signature went out before the flush"
    sim.run(sim.crash())
    with pytest.raises(BaseException):  # noqa: B017 - the killed process's await fails somehow
        sim.run(submission)
    assert _received(sim, intent.sender) == [], "a crash left a broadcast intent the journal lost"
    sim.run(sim.restart())
    again = sim.run(sim.adapter.submit(intent))  # the bot's retry
    sim.run(sim.mine(3))
    sim.run(sim.finish())
    mined = [tx for b in sim.chain.truth.blocks() for tx in b.txs if tx.sender == intent.sender]
    assert [tx.value for tx in mined].count(intent.value) == 1, "the intent executed twice"
    assert sim.record(again.intent.id).state in (_S.INCLUDED, _S.FINALIZED)
    sim.check()

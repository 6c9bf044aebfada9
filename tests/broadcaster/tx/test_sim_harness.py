"""The simulator itself: virtual time, the chain and its pools, the real enclave, the journal's
crash window, the head feed and the invariant checker (so a green scenario means something)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from broadcaster.tx.testing import (
    FOREIGN_TO,
    GWEI,
    RECIPIENTS,
    Sim,
    SimFactory,
    VirtualDeadlock,
)
from broadcaster.tx.testing.journal import SimJournal, reopen
from broadcaster.tx.testing.signer import SimSigner
from broadcaster.tx.testing.vloop import VirtualTimeLoop, run_virtual
from heads.events import Reorg
from nonce import Intent, TxState
from signer_client import PolicyDenied, ReplyVerificationError

# -- virtual time -----------------------------------------------------------------------------


def test_virtual_time_runs_an_hour_of_timers_instantly_and_in_order() -> None:
    order: list[tuple[str, float]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def after(delay: float, name: str) -> None:
            await asyncio.sleep(delay)
            order.append((name, loop.time()))

        await asyncio.gather(after(3600, "hour"), after(0.2, "resync"), after(0.05, "scan"))
        assert await asyncio.to_thread(lambda: 7) == 7  # runs inline, no thread races the clock

    started = time.perf_counter()
    run_virtual(main())
    assert time.perf_counter() - started < 1.0
    assert order == [("scan", 0.05), ("resync", 0.2), ("hour", 3600.0)]


def test_a_loop_with_nothing_to_wait_for_is_a_deadlock_not_a_hang() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(VirtualDeadlock):
        run_virtual(main())


def test_two_runs_of_the_same_script_are_the_same_run(tmp_path: Path) -> None:
    def script(workdir: Path) -> tuple[list[tuple[str, str]], list[bytes]]:
        workdir.mkdir()
        sim = Sim(workdir)
        try:
            sim.run(sim.boot())
            for _ in range(3):
                sim.run(sim.submit())
            sim.run(sim.mine())
            sim.run(sim.reorg(1, reinclude=False))
            sim.run(sim.crash())
            sim.run(sim.restart())
            sim.run(sim.finish())
            told = [(t.intent, t.event) for t in sim.checker.told]
            return told, [r.raw or b"" for r in sim.enclave.signed()]
        finally:
            sim.close()

    assert script(tmp_path / "one") == script(tmp_path / "two")


# -- the chain and the pools --------------------------------------------------------------------


def test_mining_takes_nonces_in_order_and_waits_for_a_fee_cap_under_the_base_fee(
    sims: SimFactory,
) -> None:
    sim = sims()
    cheap = sim.run(sim.submit(max_fee=8 * GWEI))  # base fee is 10 gwei
    after = sim.run(sim.submit())
    sim.run(sim.mine())
    assert sim.tip.txs == ()  # the first nonce cannot pay the base fee, the second waits
    sim.run(sim.mine(base_fee=5 * GWEI))
    assert [tx.nonce for tx in sim.tip.txs] == [cheap.nonce, after.nonce]


def test_a_pool_applies_geths_replace_rule(sims: SimFactory) -> None:
    sim = sims()
    record = sim.run(sim.submit())
    node = sim.node("a")
    held = node.pool[(record.sender, record.nonce)]
    assert node.send(held) == "already known"
    bumped = sim.foreign_tx(record.nonce, tip=held.tip_cap + 1)  # +1 wei: not +10 %
    assert node.send(bumped) == "replacement transaction underpriced"
    sim.run(sim.mine())
    assert node.send(held) == "nonce too low"


def test_a_node_reinjects_what_a_reorg_dropped_unless_the_script_loses_it(
    sims: SimFactory,
) -> None:
    sim = sims()
    record = sim.run(sim.submit())
    sim.run(sim.mine())
    parent = sim.chain.truth.at(sim.tip.number - 1)
    assert parent is not None
    other = sim.chain.build(sim.chain.build(parent, []), [])  # a longer branch without it
    key = (record.sender, record.nonce)
    assert key not in sim.node("b").pool and key not in sim.node("c").pool
    sim.node("b").adopt(other, reinject=True)
    sim.node("c").adopt(other, reinject=False)
    assert key in sim.node("b").pool  # geth's txpool.reset puts it back
    assert key not in sim.node("c").pool


def test_a_frozen_node_keeps_answering_from_the_branch_it_saw(sims: SimFactory) -> None:
    sim = sims()
    record = sim.run(sim.submit())
    sim.run(sim.mine())
    original = record.latest
    assert original is not None
    sim.node("c").frozen = True
    sim.run(sim.reorg(1, reinclude=False, length=2))
    assert sim.node("c").receipts([original.hash])  # its abandoned block still holds it
    assert not sim.chain.truth.block_of(original.hash)


# -- the enclave --------------------------------------------------------------------------------


def test_the_real_enclave_policy_protects_a_signed_nonce(sims: SimFactory) -> None:
    sim = sims()
    record = sim.run(sim.submit())
    signer = SimSigner(sim.enclave)
    other = {
        "type": 2,
        "chainId": 31337,
        "nonce": record.nonce,
        "to": RECIPIENTS[1],
        "value": 5,
        "data": b"",
        "gas": 21_000,
        "maxFeePerGas": 100 * GWEI,
        "maxPriorityFeePerGas": 2 * GWEI,
    }
    with pytest.raises(PolicyDenied) as denied:
        sim.run(signer.sign_transaction(other, record.sender))
    assert denied.value.rule == "nonce_conflict"  # a different payload without a +10 % bump
    with pytest.raises(PolicyDenied) as denied:
        sim.run(signer.sign_transaction({**other, "nonce": 99, "to": FOREIGN_TO}, record.sender))
    assert denied.value.rule == "to_not_allowed"


def test_an_enclave_restart_keeps_its_nonce_memory_unless_told_to_lose_it(
    sims: SimFactory,
) -> None:
    sim = sims()
    record = sim.run(sim.submit())
    signer = SimSigner(sim.enclave)
    other = {
        "type": 2,
        "chainId": 31337,
        "nonce": record.nonce,
        "to": RECIPIENTS[1],
        "value": 5,
        "data": b"",
        "gas": 21_000,
        "maxFeePerGas": 30 * GWEI,
        "maxPriorityFeePerGas": 2 * GWEI,
    }
    sim.enclave.restart(keep_state=True)
    with pytest.raises(PolicyDenied):
        sim.run(signer.sign_transaction(other, record.sender))
    sim.enclave.restart(keep_state=False)
    assert sim.run(signer.sign_transaction(other, record.sender)).nonce == record.nonce


def test_every_enclave_reply_goes_through_the_clients_verification(sims: SimFactory) -> None:
    sim = sims()
    real = sim.enclave.core.handle

    def lying(message: dict[str, object], now: float) -> dict[str, object]:
        params = dict(message["params"])  # type: ignore[arg-type]
        payload = bytes.fromhex(str(params["payload"])[2:])
        params["payload"] = "0x" + payload.replace(b"\x03\xe9", b"\x03\xea").hex()  # value + 1
        return real({**message, "params": params}, now)

    sim.enclave.core.handle = lying  # type: ignore[method-assign]
    with pytest.raises(ReplyVerificationError):
        sim.run(
            SimSigner(sim.enclave).sign_transaction(
                {
                    "type": 2,
                    "chainId": 31337,
                    "nonce": 0,
                    "to": RECIPIENTS[0],
                    "value": 1001,
                    "data": b"",
                    "gas": 21_000,
                    "maxFeePerGas": 30 * GWEI,
                    "maxPriorityFeePerGas": GWEI,
                },
                sim.accounts[0],
            )
        )


# -- the journal's crash window ----------------------------------------------------------------


def test_a_crash_loses_exactly_what_was_not_flushed(tmp_path: Path) -> None:
    loop = VirtualTimeLoop()
    try:
        book, journal = reopen(tmp_path / "j.db", loop=loop, linger=None)
        book.resync("0x" + "11" * 20, chain_latest=0, chain_pending=0, now=0.0)
        for k in range(3):
            intent = Intent(
                id=f"i{k}",
                sender="0x" + "11" * 20,
                to=RECIPIENTS[0],
                value=k,
                data=b"",
                gas=21_000,
                max_fee_per_gas=1,
                max_priority_fee_per_gas=1,
                chain_id=31337,
            )
            book.accept(intent, now=0.0)
            if k == 0:
                loop.run_until_complete(journal.flush())
        assert journal.crash(keep=1) == 1  # i1 reached the disk, i2 did not
        again, journal2 = reopen(tmp_path / "j.db", loop=loop)
        assert sorted(r.intent.id for r in again.all_records()) == ["i0", "i1"]
        journal2.close()
    finally:
        loop.close()


def test_the_writer_tick_commits_linger_seconds_after_an_append(tmp_path: Path) -> None:
    loop = VirtualTimeLoop()
    try:
        book, journal = reopen(tmp_path / "j.db", loop=loop, linger=0.002)
        assert isinstance(journal, SimJournal)
        book.resync("0x" + "11" * 20, chain_latest=0, chain_pending=0, now=0.0)
        intent = Intent(
            id="i0",
            sender="0x" + "11" * 20,
            to=RECIPIENTS[0],
            value=0,
            data=b"",
            gas=21_000,
            max_fee_per_gas=1,
            max_priority_fee_per_gas=1,
            chain_id=31337,
        )
        book.accept(intent, now=0.0)
        assert journal.queued == 1
        loop.run_until_complete(asyncio.sleep(0.003))
        assert journal.queued == 0
        journal.close()
    finally:
        loop.close()


# -- the head feed and the checker ------------------------------------------------------------


def test_a_reorg_announced_at_its_tip_is_backfilled_into_one_reorg_event(
    sims: SimFactory,
) -> None:
    sim = sims(head_clients=("a",))
    sim.run(sim.mine())
    sim.run(sim.reorg(2, length=3))
    assert sim.host is not None
    reorgs = [e for _, _, events in sim.host.feed.log for e in events if isinstance(e, Reorg)]
    assert [r.depth for r in reorgs] == [2]
    assert sim.host.feed.tracker.tip is not None
    assert sim.host.feed.tracker.tip.hash == sim.tip.hash


def test_the_checker_flags_a_status_that_was_not_true_when_told(sims: SimFactory) -> None:
    sim = sims()
    record = sim.run(sim.submit())
    sim.run(sim.mine())
    assert record.state is TxState.INCLUDED
    sim.run(sim.reorg(1, reinclude=False))
    assert record.state is not TxState.INCLUDED
    sim.checker.status(record, "included")  # as if the manager had said so now
    assert any(v.kind.startswith("told_included_but") for v in sim.checker.violations)
    with pytest.raises(AssertionError, match="invariant violation"):
        sim.check()

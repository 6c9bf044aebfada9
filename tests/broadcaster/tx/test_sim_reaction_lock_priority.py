"""Adversarial (review of the reaction priority): an ordinary re-sign holding a nonce's lock
while it waits at the signer behind the intent backlog. An "underpriced" answer from one RPC
spawns a fee bump of our transaction; the bump's signature waits behind a burst of intents at the
(serial) signer, under the nonce's lock. The transaction is mined meanwhile and reorged out: the
reaction's re-sign needs that lock, so it waits for the bump, and the bump waited for the whole
backlog. The replacement must still reach the RPCs ahead of the backlog's remainder."""

from __future__ import annotations

import asyncio
from typing import Any

from broadcaster.tx.testing import SimFactory
from broadcaster.tx.testing.chain import SimTx
from nonce import TxState

_S = TxState
BACKLOG = 200


def test_a_reaction_does_not_wait_behind_the_backlog_for_a_bump_holding_its_nonce(
    sims: SimFactory,
) -> None:
    sim = sims(presign=False)
    sim.enclave.serial = True
    intent = sim.intent()
    first_hash: list[str] = []

    def underpriced_once(tx: SimTx) -> str | None:
        if tx.sender == intent.sender and not first_hash:
            first_hash.append(tx.hash)
            return "transaction underpriced"
        return None

    rpc = next(iter(sim.config.rpcs))
    sim.network[rpc].rules.append(underpriced_once)
    sim.network[rpc].latency = 0.003  # its answer (and so the bump) after the burst queued
    submitted = sim.loop.create_task(sim.adapter.submit(intent))
    sim.run(sim.advance(0.0005))  # signed and written (the bump follows the answer)
    backlog = [sim.intent() for _ in range(BACKLOG)]
    tasks = [sim.loop.create_task(sim.adapter.submit(i)) for i in backlog]
    sim.run(sim.advance(0.004))  # the bump's signature waits behind them, under the lock
    record = sim.run(submitted)
    nonce = record.nonce
    bumps = [a for a in sim.enclave.asked if a[2] == nonce]
    assert len(bumps) >= 2, "no bump was asked for"
    sim.run(sim.mine(1, wait=0.01))
    assert sim.record(intent.id).state is _S.INCLUDED
    reorg_at = sim.enclave._clock()
    sent_before = {name: len(sim.network[name].received) for name in sim.config.rpcs}
    sim.run(sim.reorg(1, reinclude=False, wait=0.5))
    sim.run(_all(tasks))
    # The reaction's re-sign: the first signature asked for at the nonce after the reorg.
    asked = next(a for a in sim.enclave.asked if a[2] == nonce and a[0] >= reorg_at)
    signatures = [(r.at, r.fields.nonce) for r in sim.enclave.signed()]
    replacement = next(at for at, n in signatures if n == nonce and at >= asked[0])
    passed = [n for at, n in signatures if asked[0] < at < replacement and n > nonce]
    assert len(passed) <= 1, passed
    # Asked for while the backlog still waited (before the fix, only once the bump holding
    # the nonce's lock was signed, behind nearly all of it: 131 of 200 passed it).
    waiting = {n for at, n in signatures if at > asked[0] and n > nonce}
    assert len(waiting) >= BACKLOG // 4, (len(waiting), len(bumps))
    for name in sim.config.rpcs:
        received = sim.network[name].received[sent_before[name] :]
        ours = [tx for tx in received if tx.sender == intent.sender]
        assert any(tx.nonce == nonce for tx in ours), f"{name}: no replacement"
    sim.run(sim.finish())
    assert sim.record(intent.id).state in (_S.INCLUDED, _S.FINALIZED)
    sim.check()


async def _all(tasks: list[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks)

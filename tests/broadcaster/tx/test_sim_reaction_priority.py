"""A reorg reaction goes ahead of the intents waiting at the signer (deterministic simulator).

The simulated enclave signs one request at a time (``SimEnclave.serial``), so a burst of intents
is a backlog at the signer, as under the 2,500/s stream of ``bench/throughput.py``. A reorg
that drops one of ours arrives while that backlog waits: its replacement's signature is urgent
(``signer_client.priority``), so it reaches every RPC before the backlog's remainder instead of
after all of it (what the first pass measured: 108-798 ms reactions under load). The lanes'
half (a reaction's write ahead of each endpoint's queued intents) is pinned with the real
fan-out in ``tests/broadcaster/rpc/test_fanout_priority.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broadcaster.tx.testing import SimFactory
from nonce import TxState

_S = TxState
BACKLOG = 200


@pytest.mark.parametrize("presign", [False, True])
def test_a_reorg_replacement_reaches_every_rpc_before_the_intent_backlog(
    sims: SimFactory, presign: bool
) -> None:
    """Our transaction is included and reorged out while a burst of intents waits at the
    signer. Without presign the reaction re-signs; with it, the presignature asked for at
    inclusion is made then (behind the backlog, before the change: the reaction then waited
    for it under the nonce's lock). Either way the replacement must not wait for the backlog."""
    sim = sims(presign=presign)
    sim.enclave.serial = True
    included = sim.run(sim.submit())
    nonce = included.nonce
    backlog = [sim.intent() for _ in range(BACKLOG)]
    tasks = [sim.loop.create_task(sim.adapter.submit(i)) for i in backlog]
    sim.run(sim.advance(0.004))  # journaled; a few signed, the rest waiting for the signer
    # `included` in a block (its presignature is asked for): two reader round trips, the hash
    # list and the proven body of the block that names it (issue 18).
    sim.run(sim.mine(1, wait=0.004))
    assert sim.record(included.intent.id).state is _S.INCLUDED
    reorg_at = sim.enclave._clock()
    sent_before = {name: len(sim.network[name].received) for name in sim.config.rpcs}
    sim.run(sim.reorg(1, reinclude=False, wait=0.5))  # dropped: the reaction; all drains
    sim.run(_all(tasks))
    signatures = [(r.at, r.fields.nonce) for r in sim.enclave.signed()]
    at_nonce = [at for at, n in signatures if n == nonce]
    assert len(at_nonce) >= 2, "the replacement was never signed"
    replacement_signed = at_nonce[1]
    if presign:
        # Asked for at inclusion, urgent; the reaction sends it as soon as it is there.
        asked = [a for a in sim.enclave.asked if a[2] == nonce][1]
    else:
        asked = next(a for a in sim.enclave.asked if a[2] == nonce and a[0] >= reorg_at)
    # Signed while it waited: at most the one the enclave was making when it was asked for
    # (FIFO, as before the change: every intent queued ahead of it, 160 here).
    passed = [n for at, n in signatures if asked[0] < at < replacement_signed and n > nonce]
    assert len(passed) <= 1, passed
    assert asked[3], "the replacement's signature was not asked for as urgent"
    waiting = len({n for at, n in signatures if n > nonce and at > asked[0]})
    assert waiting >= BACKLOG // 4, "no backlog at the signer to go ahead of"
    for name in sim.config.rpcs:
        received = sim.network[name].received[sent_before[name] :]
        ours = [tx for tx in received if tx.sender == included.sender]
        first = next((k for k, tx in enumerate(ours) if tx.nonce == nonce), None)
        assert first is not None, f"{name}: no replacement at nonce {nonce}"
        behind = {tx.nonce for tx in ours[first + 1 :] if tx.nonce > nonce}
        # Every RPC gets it before the backlog's remainder (all but the signature under way
        # and a retried send or two).
        assert len(behind) >= waiting - 3, (name, len(behind), waiting)
    sim.run(sim.mine(3))
    sim.run(sim.finish())
    assert sim.record(included.intent.id).state in (_S.INCLUDED, _S.FINALIZED)
    assert all(sim.record(i.id).state in (_S.INCLUDED, _S.FINALIZED) for i in backlog)
    sim.check()


async def _all(tasks: list[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks)

"""A lying head client against the real tracker, the real manager and the real enclave policy
(DESIGN.md §3 trust, §5): the simulator's client ``b`` sends hash-consistent forgeries (whole
London headers whose hash is their real keccak256(rlp(header))) while ``a`` stays honest.

After each lie: the tracker's tip, and the block number the API reports (the manager's view),
are the real chain's; no intent is expired or finalized by the fake height; and a real reorg
that drops our transaction afterwards is still seen once and repaired with a +10% replacement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from broadcaster.tx.testing import Sim, SimFactory
from broadcaster.tx.testing.chain import header_hash, london_header
from heads.events import Quarantine, Reorg
from nonce import TxState

_S = TxState


def sealed(number: int, parent: str, timestamp: int, base_fee: int, extra: str) -> dict[str, Any]:
    header = london_header(number, parent, timestamp, base_fee, extra)
    header["hash"] = header_hash(number, parent, timestamp, base_fee, extra)
    return header


def tip_child_a_million_ahead(sim: Sim) -> None:
    tip = sim.tip
    sim.host.feed.announce_raw(  # type: ignore[union-attr]
        "b", sealed(tip.number + 10**6, tip.hash, tip.timestamp + 1, 1, "0x01")
    )


def orphan_a_thousand_ahead(sim: Sim) -> None:
    tip = sim.tip
    sim.host.feed.announce_raw(  # type: ignore[union-attr]
        "b", sealed(tip.number + 1000, "0x" + "ab" * 32, tip.timestamp + 1000, 1, "0x02")
    )


def sibling_flood(sim: Sim) -> None:
    tip = sim.tip
    parent = sim.chain.blocks[tip.parent_hash]
    feed = sim.host.feed  # type: ignore[union-attr]
    for i in range(2_000):
        feed.announce_raw("b", sealed(tip.number, parent.hash, tip.timestamp, 1, "0x" + f"{i:08x}"))


LIES: dict[str, Callable[[Sim], None]] = {
    "tip child numbered 10^6 ahead": tip_child_a_million_ahead,
    "orphan 1,000 ahead": orphan_a_thousand_ahead,
    "sibling flood": sibling_flood,
}


@pytest.mark.parametrize("lie", list(LIES))
def test_a_lying_client_moves_nothing_and_a_real_reorg_is_still_repaired(
    sims: SimFactory, lie: str
) -> None:
    sim = sims()
    included = sim.run(sim.submit(valid_until=sim.tip.number + 30))
    sim.run(sim.mine())
    assert included.state is _S.INCLUDED
    waiting = sim.run(sim.submit(valid_until=sim.tip.number + 3))  # expires 3 blocks on
    feed = sim.host.feed  # type: ignore[union-attr]
    frames_before = len(feed.log)

    LIES[lie](sim)

    tracker = feed.tracker
    real = sim.tip
    assert tracker.tip is not None and tracker.tip.hash == real.hash, lie
    assert sim.adapter.manager.tip.number == real.number  # what eth_blockNumber reports
    assert sim.record(waiting.intent.id).state is not _S.EXPIRED
    assert sim.record(included.intent.id).state is not _S.FINALIZED
    events = [e for _, _, evs in feed.log[frames_before:] for e in evs]
    assert sum(isinstance(e, Reorg) for e in events) <= tracker.trust.quarantine_after
    if lie == "sibling flood":
        assert any(isinstance(e, Quarantine) and e.active for e in events)
        assert tracker.stats()["blocks"] <= 8 * (sim.config.finality_depth + 40)

    # A real reorg that drops the included transaction: seen once, replaced at +10%.
    record = sim.record(included.intent.id)
    first = record.attempts[0]
    frames_before = len(feed.log)
    sim.run(sim.reorg(1, reinclude=False))
    events = [e for _, _, evs in feed.log[frames_before:] for e in evs]
    assert sum(isinstance(e, Reorg) for e in events) == 1, lie
    sim.run(sim.mine(3))
    final = sim.record(included.intent.id)
    assert final.state in (_S.INCLUDED, _S.FINALIZED), final.state
    replacement = final.attempts[-1]
    assert replacement.max_fee_per_gas >= first.max_fee_per_gas * 110 // 100
    assert replacement.max_priority_fee_per_gas >= first.max_priority_fee_per_gas * 110 // 100
    sim.run(sim.finish())
    sim.check()

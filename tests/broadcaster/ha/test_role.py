"""Leadership over a scripted lease store: a standby waits, a leader renews, and the fence lapses
when the lease is not ours any more or cannot be renewed before its deadline."""

from __future__ import annotations

import psycopg

from broadcaster.ha.fence import Fence
from broadcaster.ha.lease import Grant, Holder
from broadcaster.ha.role import Leadership
from broadcaster.metrics import Metrics


class ScriptedStore:
    def __init__(self, acquire: list[Grant | Holder], renew: list[bool | Exception]) -> None:
        self.acquire = acquire
        self.renewals = renew
        self.renewed = 0

    def try_acquire(self, instance: str, lease_seconds: float) -> Grant | Holder:
        return self.acquire.pop(0)

    def renew(self, instance: str, epoch: int, lease_seconds: float) -> bool:
        self.renewed += 1
        answer = self.renewals.pop(0) if self.renewals else True
        if isinstance(answer, Exception):
            raise answer
        return answer


def leadership(store: ScriptedStore, lapses: list[str]) -> tuple[Leadership, Metrics]:
    metrics = Metrics(clients=[], rpcs=["r"], senders=[])
    role = Leadership(
        store,  # type: ignore[arg-type]
        instance="b", lease_seconds=0.2, fence=Fence(lapses.append), metrics=metrics,
    )  # fmt: skip
    return role, metrics


async def test_a_standby_names_the_holder_then_takes_over_and_counts_a_failover() -> None:
    lapses: list[str] = []
    store = ScriptedStore([Holder("a", 1, 0.1), Holder("a", 1, 0.15), Grant(2, "a")], [False])
    role, metrics = leadership(store, lapses)
    assert role.status().text == "standby, no leader"
    grant = await role.acquire()
    assert grant == Grant(2, "a")
    assert role.status().text == "leader (epoch 2)"
    assert metrics.sample("broadcaster_is_leader") == 1
    assert metrics.sample("broadcaster_failovers_total") == 1
    assert role.fence.valid()
    await role.keep()  # the first renewal says: not ours
    assert lapses == ["the lease is not ours any more"]
    assert metrics.sample("broadcaster_is_leader") == 0


async def test_a_leader_that_cannot_renew_lapses_at_its_deadline() -> None:
    lapses: list[str] = []
    down = psycopg.OperationalError("connection refused")
    store = ScriptedStore([Grant(1, None)], [down] * 1000)
    role, metrics = leadership(store, lapses)
    await role.acquire()
    assert metrics.sample("broadcaster_failovers_total") == 0  # the first lease is no failover
    await role.keep()
    assert lapses and lapses[0] in (
        "the lease was not renewed in time",
        "the lease renewal did not answer before the deadline",
    )
    assert store.renewed >= 1 and not role.fence.valid()

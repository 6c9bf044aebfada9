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


async def test_a_late_renewal_answer_extends_the_deadline_from_when_it_was_sent() -> None:
    """The database counts the new expiry from when it ran the renewal, at or after the send:
    the fence must count from the send, never from the (late) answer."""
    import asyncio
    import time

    from broadcaster.ha.fence import FENCE_CLOCK, MARGIN

    entered: list[float] = []

    class SlowStore(ScriptedStore):
        def renew(self, instance: str, epoch: int, lease_seconds: float) -> bool:
            entered.append(FENCE_CLOCK())
            time.sleep(lease_seconds / 4)  # the answer comes late, still before the deadline
            return True

    class Watched(Fence):
        extended = asyncio.Event()

        def extend(self, sent_at: float, lease_seconds: float, epoch: int) -> None:
            super().extend(sent_at, lease_seconds, epoch)
            self.extended.set()

    lapses: list[str] = []
    fence = Watched(lapses.append)
    role = Leadership(
        SlowStore([Grant(1, None)], []),  # type: ignore[arg-type]
        instance="b", lease_seconds=2.0, fence=fence,
        metrics=Metrics(clients=[], rpcs=["r"], senders=[]),
    )  # fmt: skip
    await role.acquire()
    fence.extended.clear()
    keeping = asyncio.create_task(role.keep())
    await asyncio.wait_for(fence.extended.wait(), 30)  # the first renewal's extension
    keeping.cancel()
    assert role.fence.deadline <= entered[0] + role.lease_seconds * (1 - MARGIN)
    assert not lapses


async def test_the_lease_epoch_metric_follows_the_holder_then_our_own_grant() -> None:
    """``lease_epoch`` (what the flapping alert reads: it survives restarts, a process's
    ``failovers_total`` does not) is the holder's epoch while standing by, ours once leading;
    an unknown holder (epoch 0: another instance inserted the row first) leaves it as it was."""
    store = ScriptedStore([Holder("a", 4, 0.1), Holder("?", 0, 0.0), Grant(5, "a")], [])
    role, metrics = leadership(store, [])
    assert metrics.sample("broadcaster_lease_epoch") == 0
    seen: list[float | None] = []
    real = metrics.leadership

    def spy(leader: bool, lease_age: float | None = None, epoch: int | None = None) -> None:
        real(leader, lease_age, epoch)
        seen.append(metrics.sample("broadcaster_lease_epoch"))

    metrics.leadership = spy  # type: ignore[method-assign]
    await role.acquire()
    assert seen == [4, 4, 5]

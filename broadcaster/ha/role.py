"""This instance's role under ``[ha]``: wait as a standby until the lease is ours, then keep it.

- :meth:`Leadership.acquire` polls the lease every ``lease_seconds / 4`` (the database may be
  down: retried) and returns the grant; meanwhile :attr:`leader` names the holder for
  ``/healthz`` and the standby API. A lease is taken once expired on the database's clock and
  seen unchanged for ``lease_seconds`` on ours (``broadcaster.ha.lease``): the last renewal is
  seen within a poll and the standby polls again the moment that wait ends, so it takes over
  within ``1.25 x lease_seconds`` of the leader's last renewal (DESIGN.md asks for ``2 x``; the
  journal reload and recovery come on top).
- :meth:`Leadership.keep` renews every ``lease_seconds / 4`` while leading. A renewal that says
  the lease is not ours, or a deadline that passes without one (the database unreachable, this
  process paused), lapses the fence (:class:`broadcaster.ha.fence.Fence`): the service exits
  there, and restarted it comes back as a standby.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import psycopg

from broadcaster.ha.fence import Fence
from broadcaster.ha.lease import Grant, Holder, PgLeaseStore
from broadcaster.metrics import Metrics

__all__ = ["Leadership", "RoleStatus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RoleStatus:
    leader: bool
    instance: str
    leader_name: str | None
    epoch: int | None

    @property
    def text(self) -> str:
        if self.leader:
            return f"leader (epoch {self.epoch})"
        return (
            f"standby, leader is {self.leader_name}" if self.leader_name else "standby, no leader"
        )


class Leadership:
    def __init__(
        self,
        store: PgLeaseStore,
        *,
        instance: str,
        lease_seconds: float,
        fence: Fence,
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.instance = instance
        self.lease_seconds = lease_seconds
        self.fence = fence
        self.metrics = metrics
        self.leader: str | None = None
        self.epoch: int | None = None
        self.leading = False
        metrics.leadership(False)

    def status(self) -> RoleStatus:
        return RoleStatus(self.leading, self.instance, self.leader, self.epoch)

    @property
    def period(self) -> float:
        return self.lease_seconds / 4

    async def acquire(self) -> Grant:
        """Wait as a standby until the lease is ours."""
        while True:
            sent_at = self.fence.now()  # on the fence's clock, before sending
            try:
                answer = await asyncio.to_thread(
                    self.store.try_acquire, self.instance, self.lease_seconds
                )
            except psycopg.Error as exc:
                log.warning("lease: database unreachable (%s); retrying", exc)
                self.leader = None
                await asyncio.sleep(self.period)
                continue
            if isinstance(answer, Grant):
                self.fence.extend(sent_at, self.lease_seconds, answer.epoch)
                self.epoch, self.leader, self.leading = answer.epoch, self.instance, True
                self.metrics.leadership(True, 0.0, answer.epoch)
                if answer.previous is not None:
                    self.metrics.failover()
                log.warning(
                    "lease: %s is the leader at epoch %d (took over from %s)",
                    self.instance,
                    answer.epoch,
                    answer.previous or "nobody",
                )
                return answer
            assert isinstance(answer, Holder)
            if answer.holder != self.leader:
                log.info("lease: standby, leader is %s (epoch %d)", answer.holder, answer.epoch)
            self.leader = answer.holder
            self.metrics.leadership(False, answer.age, answer.epoch)
            # Poll again when it may be taken, if that comes before the next period.
            await asyncio.sleep(min(self.period, answer.ready_in + 0.005))

    async def keep(self) -> None:
        """Renew while leading; lapse the fence when the lease is not ours any more."""
        assert self.epoch is not None
        epoch = self.epoch
        renewed = self.fence.now()
        while not self.fence.lapsed:
            await asyncio.sleep(min(self.period, max(0.0, self.fence.remaining())))
            if not self.fence.valid():
                self.fence.lapse("the lease was not renewed in time")
                break
            sent_at = self.fence.now()  # on the fence's clock, before sending
            try:
                ours = await asyncio.wait_for(
                    asyncio.to_thread(self.store.renew, self.instance, epoch, self.lease_seconds),
                    max(0.01, self.fence.remaining()),
                )
            except TimeoutError:
                self.fence.lapse("the lease renewal did not answer before the deadline")
                break
            except psycopg.Error as exc:
                log.warning("lease: renewal failed (%s)", exc)
                self.metrics.leadership(True, self.fence.now() - renewed)
                continue
            if not ours:
                self.fence.lapse("the lease is not ours any more")
                break
            self.fence.extend(sent_at, self.lease_seconds, epoch)
            renewed = sent_at
            self.metrics.leadership(True, 0.0)
        self.leading = False
        self.metrics.leadership(False)

"""The fence: before every signature and every RPC write, the lease deadline is checked
against a monotonic clock (DESIGN.md §9: a leader whose lease lapsed stops sending at once).

The deadline is set from the moment a lease grant or renewal was *sent* (the database's expiry
is later than that: it counts from when the database ran it), minus a margin, so a leader stops
before a standby may take over even if the answer took long. A paused process (SIGSTOP, a VM
freeze, a suspended machine: the clock is ``CLOCK_BOOTTIME``) finds its deadline passed on its
first step after resuming, before it writes anything.

``check()`` is the fence: past the deadline it calls ``on_lapse`` (the service exits there: a
crash, recovered as one by whichever instance holds the lease next) and, if that returns,
raises :class:`~broadcaster.ha.errors.LeaseLost`. The wrappers put it in front of the signer
(:class:`FencedSigner`) and of every transport write of the fan-out (:func:`fenced_transports`:
first sends, queued sends and retries alike).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from broadcaster.ha.errors import LeaseLost
from broadcaster.rpc.fanout import Endpoint, TransportFactory
from broadcaster.rpc.transport.base import OnReply, Transport
from broadcaster.tx.seams import Signer
from signer_client import PolicyDenied, SignedTx

__all__ = ["FENCE_CLOCK", "MARGIN", "Fence", "FencedSigner", "FencedTransport", "fenced_transports"]

MARGIN = 0.1
"""Fraction of the lease the fence gives up early (clock rates, scheduling)."""


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


FENCE_CLOCK: Callable[[], float] = _boottime if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic
"""The fence's clock: ``CLOCK_BOOTTIME`` (Linux), which goes on counting while the machine is
suspended (a VM paused or a host put to sleep); ``CLOCK_MONOTONIC`` does not, and a leader
woken after a suspend longer than its lease would find its deadline not yet passed."""


class Fence:
    """The leader's deadline (:data:`FENCE_CLOCK` seconds); ``0``: not the leader."""

    def __init__(
        self,
        on_lapse: Callable[[str], None],
        *,
        clock: Callable[[], float] = FENCE_CLOCK,
    ) -> None:
        self.deadline = 0.0
        self.epoch: int | None = None
        self._on_lapse = on_lapse
        self._clock = clock
        self.lapsed = False

    def extend(self, sent_at: float, lease_seconds: float, epoch: int) -> None:
        """A grant or renewal sent at ``sent_at`` (this clock) succeeded."""
        if self.lapsed:
            return  # never again: a lapsed leader does not come back in this process
        self.epoch = epoch
        self.deadline = max(self.deadline, sent_at + lease_seconds * (1 - MARGIN))

    def now(self) -> float:
        """This fence's clock: a grant or renewal is timed on it (``extend(sent_at=...)``)."""
        return self._clock()

    def remaining(self) -> float:
        return self.deadline - self._clock()

    def valid(self) -> bool:
        return not self.lapsed and self._clock() < self.deadline

    def check(self) -> None:
        """The fence: return only while the lease is ours."""
        if self.lapsed or self._clock() >= self.deadline:
            self.lapse("lease deadline passed")
            raise LeaseLost("the leader lease lapsed: not signing or sending")

    def lapse(self, why: str) -> None:
        first = not self.lapsed
        self.lapsed = True
        self.deadline = 0.0
        if first:
            self._on_lapse(why)


class FencedSigner:
    """The signer behind the fence (the executor's ``Signer`` seam)."""

    def __init__(self, inner: Signer, fence: Fence) -> None:
        self.inner = inner
        self.fence = fence

    async def sign_transaction(self, tx: Mapping[str, Any], sender: str) -> SignedTx:
        self.fence.check()
        return await self.inner.sign_transaction(tx, sender)

    async def advance_nonce_floor(self, chain_id: int, sender: str, nonce: int) -> None:
        """Passed through behind the fence: moving the enclave's nonce window is an act of the
        leader too (the executor finds it with ``getattr``; without it a fenced service would
        never move the window)."""
        self.fence.check()
        advance = getattr(self.inner, "advance_nonce_floor", None)
        if advance is not None:
            await advance(chain_id, sender, nonce)

    async def sign_authorization(self, authorization: Mapping[str, Any], sender: str) -> Any:
        """Behind the fence like a transaction signature (EIP-7702, ``broadcaster.tx.typed``)."""
        self.fence.check()
        sign = getattr(self.inner, "sign_authorization", None)
        if sign is None:
            raise PolicyDenied(
                "no_authorizations", "this signer cannot sign EIP-7702 authorizations"
            )
        return await sign(authorization, sender)


class FencedTransport:
    """A fan-out transport whose every write passes the fence first."""

    def __init__(self, inner: Transport, fence: Fence) -> None:
        self.inner = inner
        self.fence = fence
        self.name = inner.name

    def ready(self) -> bool:
        return self.inner.ready()

    def send(self, rid: int, body: bytes, ids: Sequence[int] = ()) -> None:
        try:
            self.fence.check()
        except LeaseLost as exc:
            raise RuntimeError(str(exc)) from exc  # the lane settles the job as not written
        self.inner.send(rid, body, ids)

    def send_headed(self, rid: int, body: bytes, headers: bytes) -> None:
        """The orderflow's authenticated write (``HttpTransport.send_headed``), fenced too."""
        try:
            self.fence.check()
        except LeaseLost as exc:
            raise RuntimeError(str(exc)) from exc
        self.inner.send_headed(rid, body, headers)  # type: ignore[attr-defined]

    def forget(self, rid: int) -> None:
        self.inner.forget(rid)

    async def wait_ready(self) -> None:
        await self.inner.wait_ready()

    async def start(self) -> None:
        await self.inner.start()

    async def aclose(self) -> None:
        await self.inner.aclose()


def fenced_transports(factory: TransportFactory, fence: Fence) -> TransportFactory:
    def make(endpoint: Endpoint, on_reply: OnReply) -> Transport:
        return FencedTransport(factory(endpoint, on_reply), fence)

    return make

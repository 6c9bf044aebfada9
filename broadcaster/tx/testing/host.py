"""One life of the broadcaster process: journal, tracker, seams and the manager, until killed.

:func:`boot` does what ``broadcaster/service.py`` does at start-up, in its order: reload the book
from the journal file, build the fan-out and the chain reader, build the manager, resync and
recover (``start``, retried while no RPC answers), start the background tasks (the manager's
``run``), then connect the head clients. :meth:`Host.kill` is ``kill -9``:
the journal queue is lost (or a prefix of it kept), the tracker and every task die, bytes already
written still reach the nodes but their answers reach nobody. The enclave and the nodes live
outside the process and are not touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broadcaster.tx.bundle_plans import plan_restore
from broadcaster.tx.routing import Router, member_canceller
from broadcaster.tx.testing.adapter import FeeSettings, Hooks, ManagerAdapter
from broadcaster.tx.testing.builder import SimBuilder
from broadcaster.tx.testing.chain import SimTx
from broadcaster.tx.testing.heads import HeadFeed
from broadcaster.tx.testing.journal import SimJournal, reopen
from broadcaster.tx.testing.nodes import Network
from broadcaster.tx.testing.rpc import SimChainState, SimFanOut
from broadcaster.tx.testing.signer import SimEnclave, SimSigner
from broadcaster.tx.testing.vloop import VirtualClock
from broadcaster.tx.unjournaled import log_source
from heads.events import Event
from nonce.journal import load_bundles
from nonce.state import TxState

__all__ = ["Host", "HostPlan", "boot"]


@dataclass(frozen=True, slots=True)
class HostPlan:
    """What a process is started with (the parts of the config the simulation varies)."""

    chain_id: int
    accounts: Sequence[str]
    head_clients: Sequence[str]
    rpcs: Sequence[str]
    readers: Sequence[str]
    finality_depth: int
    fees: FeeSettings
    presign: bool
    retain_settled: int
    journal_path: Path
    linger: float | None
    builder: SimBuilder | None = None  # the private-orderflow endpoint (router in front)
    overlap: bool = True  # SimConfig.overlap


@dataclass(eq=False)
class Host:
    plan: HostPlan
    journal: SimJournal
    fanout: SimFanOut
    chain: SimChainState
    adapter: ManagerAdapter
    feed: HeadFeed
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    recovery: list[Any] = field(default_factory=list)
    alive: bool = True
    router: Router | None = None  # the private orderflow's router (SimConfig.builder)

    async def kill(self, keep: int = 0) -> int:
        """``kill -9``; ``keep`` queued journal entries still reach the disk. Returns the lost."""
        self.alive = False
        self.fanout.detach()
        self.feed.stop()
        lost = self.journal.crash(keep)
        await _cancel(self.tasks)
        return lost

    async def shutdown(self) -> None:
        """An orderly stop (SIGTERM): the journal is flushed and closed."""
        self.alive = False
        self.fanout.detach()
        self.feed.stop()
        await _cancel(self.tasks)
        self.journal.close()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    tasks.clear()


async def boot(
    plan: HostPlan,
    *,
    network: Network,
    enclave: SimEnclave,
    clock: VirtualClock,
    hooks: Hooks,
    on_send: Any,
) -> Host:
    book, journal = reopen(plan.journal_path, loop=clock.loop, linger=plan.linger)
    adapter: ManagerAdapter | None = None
    router: Router | None = None
    retargeted: list[int] = []

    def on_chain(events: list[Event], client: str, recv_ns: int, header: Mapping[str, Any]) -> None:
        if adapter is not None:
            adapter.on_chain(events, client, recv_ns, header)
        tip = feed.tracker.tip
        if router is not None and tip is not None and tip.number not in retargeted[-1:]:
            retargeted.append(tip.number)  # as broadcaster/service.py: once per new tip
            router.on_head(tip.number)

    def sent(tx: SimTx) -> None:
        on_send(tx)

    fanout = SimFanOut(
        network,
        plan.rpcs,
        loop=clock.loop,
        clock_ns=clock.ns,
        on_send=sent,
    )
    if plan.builder is not None:
        router = Router(
            fanout,
            plan.builder,
            builders=1,
            private=0,
            tip_number=lambda: feed.tracker.tip.number if feed.tracker.tip else None,
            clock_ns=clock.ns,
            jobs_per_send=len(plan.rpcs),  # the adapter's endpoints=
        )
    chain = SimChainState(network, plan.readers)
    feed = HeadFeed(
        network,
        plan.head_clients,
        finality_depth=plan.finality_depth,
        clock_ns=clock.ns,
        consumer=on_chain,
        loop=clock.loop,
    )
    signer = SimSigner(enclave)
    adapter = ManagerAdapter(
        chain_id=plan.chain_id,
        book=book,
        journal=journal,
        signer=signer,
        fanout=router if router is not None else fanout,
        endpoints=len(plan.rpcs),
        chain=chain,
        finality_depth=plan.finality_depth,
        fees=plan.fees,
        hooks=hooks,
        clock=clock.wall,
        clock_ns=clock.ns,
        presign=plan.presign,
        retain_settled=plan.retain_settled,
        canonical_chain=feed.tracker.canonical_chain,
        signed_nonces=log_source(signer, [enclave.log_key], chain_id=plan.chain_id)
        if plan.overlap
        else None,
    )
    if router is not None:
        # Journaled bundles first (as broadcaster/service.py): recovery re-submits their members.
        def settled(intent_id: str) -> bool | None:
            record = book.find_intent(intent_id)
            return None if record is None else record.settled

        def given_up(intent_id: str) -> bool:
            record = book.find_intent(intent_id)
            return record is not None and record.state in (
                TxState.CANCELLED,
                TxState.EXPIRED,
                TxState.FAILED,
            )

        _, live, dead, _ = plan_restore(load_bundles(plan.journal_path), settled, given_up)
        for spec in live:
            router.add_bundle(spec)
        for bundle_id in dead:  # a member gave up or was never booked: cancel the rest
            router.kill_bundle(bundle_id)
        adapter.observer.listeners.append(router.on_status)  # cancels bundles (cancel, expiry)
        router.cancel_member = member_canceller(adapter.cancel, router)  # a dead bundle's members
    host = Host(plan, journal, fanout, chain, adapter, feed, router=router)
    host.recovery = await adapter.start(plan.accounts)
    loop = asyncio.get_running_loop()
    host.tasks.append(loop.create_task(adapter.run(), name="txmanager"))
    await asyncio.sleep(0)  # let the manager's TaskGroup start before heads arrive
    feed.connect()
    return host

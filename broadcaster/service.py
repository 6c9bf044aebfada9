"""``broadcaster run``: every part of the service under one supervisor (DESIGN.md §2).

    subscriber -> tracker -> (events) -> tx manager -> signer client -> fan-out -> RPCs
                                             ^ intent API            everything -> metrics

Start-up order: metrics endpoint (so an operator sees a starting service), journal reload,
fan-out connections, nonce resync and crash recovery against the chain (retried until an RPC
answers), the intent API, then the head subscriptions. Everything then runs in one TaskGroup: a
part that fails takes the service down (a supervisor restarts it) rather than limping on.

Shutdown (SIGTERM/SIGINT, or cancelling :meth:`Service.run`) drains: the API stops accepting
intents, in-flight requests finish, the journal is flushed and closed, connections close.

With ``[ha]`` (a PostgreSQL journal, DESIGN.md §9) the service starts as a standby: metrics,
the head subscriptions, and on ``[api] listen`` the standby API (every request refused, naming
the leader: ``broadcaster.ha.standby``), while it polls the leader lease. Once the lease is
its own it closes the standby API and starts as above -- the journal reloaded (fenced on the
lease epoch), recovery as after a crash, the intent API -- and renews the lease. Every
signature and every RPC write passes the fence (``broadcaster.ha.fence``); when the lease
lapses the process exits at once (code 75) without sending anything more: a crash, which the
next leader recovers from, and a supervisor restarts this one as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from broadcaster.api.server import ApiLimits, IntentApi
from broadcaster.api.subscriptions import Subscriptions
from broadcaster.audit import AuditStreamer, ForeignReport, LiveReconciler, SigningGate
from broadcaster.audit.chain import full_blocks
from broadcaster.audit.logs import VerifiedLogs
from broadcaster.audit.verify import AuditRefused
from broadcaster.backoff import backoff
from broadcaster.ha.fence import Fence, FencedSigner, FencedTransport, fenced_transports
from broadcaster.ha.role import Leadership
from broadcaster.ha.standby import StandbyApi
from broadcaster.metrics import Metrics, MetricsServer, start_metrics_server
from broadcaster.rpc.chain_id import screen_rpcs
from broadcaster.rpc.chain_reader import ChainReader, ChainReadError
from broadcaster.rpc.error_table import ErrorKind
from broadcaster.rpc.fanout import BroadcastResult, Endpoint, FanOut, default_transport
from broadcaster.rpc.orderflow import OrderflowSender
from broadcaster.scheduling import apply_slice
from broadcaster.settings import Config
from broadcaster.tx.bundle_plans import plan_restore
from broadcaster.tx.manager import FeePolicy, TxManager, TxObserver
from broadcaster.tx.routing import Router, member_canceller
from broadcaster.tx.unjournaled import copy_source
from heads.events import DeepReorg, Event, Quarantine, Rejected, Reorg
from heads.hub import HeadHub, HubHooks
from heads.subscriber import SubscriptionOptions
from heads.tracker import ChainTracker
from nonce import JournalError, NonceBook, TxRecord, TxState
from nonce.audit_copy import AuditCopyBase, open_audit_copy
from nonce.backends import load_bundles, lookup, open_book
from signer_client import AttestationPolicy, SignerClient, SignerPins
from signer_client.events import SignerEvent

__all__ = ["Service"]

log = logging.getLogger(__name__)

_GIVEN_UP = frozenset({TxState.CANCELLED, TxState.EXPIRED, TxState.FAILED})
_COUNTED_STATUSES = frozenset({"included", "finalized", "failed", "expired", "cancelled"})


class _HubMetrics(HubHooks):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_client_state(self, client: str, connected: bool) -> None:
        self.metrics.client_connected(client, connected)
        log.info("client %s %s", client, "connected" if connected else "disconnected")

    def on_head(self, client: str) -> None:
        self.metrics.head(client)

    def on_invalid(self, client: str, reason: str) -> None:
        self.metrics.invalid_message(client, reason)

    def on_backfill_missing(self, client: str, block_hash: str) -> None:
        self.metrics.invalid_message(client, "missing_ancestor")


class _TxMetrics(TxObserver):
    """Maps the tx manager's hooks to Prometheus and to API subscriptions."""

    def __init__(self, metrics: Metrics, subscriptions: Subscriptions) -> None:
        self.metrics = metrics
        self.subscriptions = subscriptions
        self.router: Router | None = None  # cancels a private intent's bundle (section 5a)
        self.report: ForeignReport | None = None  # set once the service has built it

    def status(self, record: TxRecord, event: str) -> None:
        self.subscriptions.notify(record, event)
        if self.router is not None:
            self.router.on_status(record, event)
        if event in _COUNTED_STATUSES:
            self.metrics.intent(event)

    def reaction(self, seconds: float, dropped: int) -> None:
        self.metrics.reaction(seconds)
        log.info(
            "reorg reaction: %d tx re-signed and rebroadcast in %.0f µs", dropped, seconds * 1e6
        )

    def intent_to_wire(self, seconds: float) -> None:
        self.metrics.intent_to_wire(seconds)

    def resend(self, reason: str) -> None:
        self.metrics.resend(reason)

    def signed(self, seconds: float) -> None:
        self.metrics.sign(seconds)

    def signer_error(self, kind: str) -> None:
        # Not counted here: the signer client reports each failure once through its event sink
        # (``Service._on_signer_event``), with the closed set of kinds the alerts name; the
        # executor's report of the same failure would count it twice, under another label.
        del kind

    def broadcast(self, result: BroadcastResult) -> None:
        if result.latency_s is not None:
            self.metrics.broadcast(result.endpoint, result.latency_s)
        if result.kind is not ErrorKind.ACCEPTED:
            self.metrics.broadcast_error(result.endpoint, result.kind.value)

    def pending(self, counts: Mapping[str, int]) -> None:
        for sender, count in counts.items():
            self.metrics.pending(sender, count)

    def alert(self, kind: str, detail: str) -> None:
        log.error("ALERT %s: %s", kind, detail)

    def bad_block(self, reason: str) -> None:
        self.metrics.inclusion_bad_block(reason)

    def foreign(self, sender: str, nonce: int | None = None) -> None:
        if self.report is not None:
            self.report.foreign(sender, nonce)  # once per (sender, nonce), whoever found it
        else:
            self.metrics.foreign_transaction(sender)


RETAIN_SETTLED = 10_000
_RECHECK_ON = frozenset({SignerEvent.DISCONNECTED, SignerEvent.CONNECTED})
"""Finalized records kept in memory; older ones are answered from the journal file."""


EXIT_LEASE_LOST = 75
"""Exit code of a leader whose lease lapsed (EX_TEMPFAIL: a supervisor restarts it, a standby)."""


def _journal_lookup(path: Path | str, intent_id: str | None, key: str | None) -> TxRecord | None:
    return lookup(path, intent_id=intent_id, key=key)


def exit_on_lapse(why: str) -> None:
    """The fence's ``on_lapse`` in production: stop at once, before anything else runs."""
    log.critical("leader lease lost (%s): exiting now, sending nothing more", why)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_LEASE_LOST)


def _http_of(ws_url: str) -> str:
    """anvil, geth and reth serve HTTP JSON-RPC beside the websocket: derive it for reads."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}{parts.path}"


class Service:
    """The assembled broadcaster. ``await Service(config).run()`` until cancelled."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        on_lapse: Callable[[str], None] = exit_on_lapse,
    ) -> None:
        self.config = config
        accounts = [a.address.lower() for a in config.accounts]
        self.accounts = accounts
        self.metrics = metrics or Metrics(
            clients=[c.name for c in config.clients],
            rpcs=[r.name for r in config.rpcs],
            senders=accounts,
        )
        self.ready = asyncio.Event()
        self.api: IntentApi | None = None
        self.api_port: int | None = None
        self.metrics_server: MetricsServer | None = None
        self.manager: TxManager | None = None
        self.hub: HeadHub | None = None
        self.fence = Fence(on_lapse)
        self.leadership: Leadership | None = None
        self.router: Router | None = None
        self._retargeted: int | None = None  # the tip the live bundles were last sent for
        self.gate: SigningGate | None = None
        self.streamer: AuditStreamer | None = None
        self._auth_rpcs: list[str] = []  # auth = "flashbots" rpcs (section 5a)
        self.reconciler: LiveReconciler | None = None

    def health(self) -> Mapping[str, Any]:
        hub = self.hub
        clients = hub.status() if hub is not None else []
        up = sum(1 for c in clients if c.connected)
        tip = hub.tracker.tip if hub is not None else None
        role = self.leadership.status() if self.leadership is not None else None
        return {
            "healthy": self.ready.is_set() and up > 0 and (role is None or role.leader),
            "ready": self.ready.is_set(),
            **({"role": role.text, "leader": role.leader_name} if role is not None else {}),
            "clients_up": up,
            "clients": len(clients),
            "tip": tip.number if tip else None,
            # Live asyncio tasks: flat in a healthy service (the soak test watches it for leaks).
            "tasks": len(asyncio.all_tasks()),
            "audit": self._audit_health(),
        }

    def _audit_health(self) -> Mapping[str, Any] | None:
        streamer, reconciler = self.streamer, self.reconciler
        if streamer is None or reconciler is None:
            return None
        refused = streamer.refused
        return {
            "verified_seq": streamer.anchor.seq,
            "log": streamer.log_id,
            "refused": str(refused) if refused is not None else None,
            "blocks_checked": reconciler.blocks_checked,
            "last_block_checked": max(reconciler.heights, default=None),
            "blocks_queued": len(reconciler.queue),
            "stopped_senders": sorted(self.gate.stopped) if self.gate is not None else [],
        }

    async def run(self) -> None:
        config = self.config
        if config.cpu.pinning:
            os.sched_setaffinity(0, config.cpu.pinning)
            log.info("pinned to CPUs %s", list(config.cpu.pinning))
        if config.cpu.slice_us is not None:
            result = apply_slice(config.cpu.slice_us)
            if result.applied:
                log.info("scheduler slice set to %d µs ([cpu] slice_us)", result.slice_us)
            else:
                log.warning(
                    "[cpu] slice_us = %d not in effect: %s", config.cpu.slice_us, result.reason
                )
        self.metrics_server = await start_metrics_server(
            self.metrics, config.metrics.listen.host, config.metrics.listen.port, self.health
        )
        tracker = ChainTracker(
            finality_depth=config.finality_depth,
            fork_choice=config.fork_choice,
            clients=len(config.clients),
            # A peer without a new block for a watchdog period is no peer to run ahead of nor
            # one to wait for (docs/chain-tracking.md); the watchdog then drops it anyway.
            stall_seconds=config.heads.watchdog_seconds or None,
        )
        hub = self.hub = HeadHub(
            [(c.name, c.url) for c in config.clients],
            tracker=tracker,
            on_events=self._on_events,
            hooks=_HubMetrics(self.metrics),
            options=SubscriptionOptions(
                watchdog=config.heads.watchdog_seconds, chain_id=config.chain_id
            ),
        )
        heads_task: asyncio.Task[None] | None = None
        lease_task: asyncio.Task[None] | None = None
        if config.ha is None:
            # Finalized records beyond the newest few thousand stay on disk (journal lookups).
            book, journal = open_book(config.journal.target, settled_kept=RETAIN_SETTLED)
        else:
            loop = asyncio.get_running_loop()
            heads_task = loop.create_task(hub.run(), name="heads")
            try:
                epoch = await self._standby(config)
                assert self.leadership is not None
                # Renewing from now on: the reload and the recovery below may take a while.
                lease_task = loop.create_task(self.leadership.keep(), name="lease")
                # Off the loop, so the renewals go on while a big journal loads.
                book, journal = await asyncio.to_thread(
                    open_book, config.journal.target, epoch=epoch, settled_kept=RETAIN_SETTLED
                )
                from nonce.pg_journal import PgJournal

                if isinstance(journal, PgJournal):  # another instance holds the lease: stop now
                    journal.on_stale = lambda stale: self.fence.lapse(f"journal: {stale}")
            except BaseException:
                heads_task.cancel()
                if lease_task is not None:
                    lease_task.cancel()
                await self.metrics_server.close()
                raise
        # before the manager and the API: both only use it
        subscriptions = Subscriptions(on_dropped=self.metrics.api_notifications_dropped_total.inc)
        observer = _TxMetrics(self.metrics, subscriptions)
        signer = _signer_client(config, self._on_signer_event)
        self._signer = signer
        # auth = "flashbots" rpcs (section 5a): named in the error when the signer has no auth key
        self._auth_rpcs = [r.name for r in config.rpcs if r.auth]
        gate = self.gate = SigningGate(signer, hold_timeout=config.signer.timeout_seconds)
        report = observer.report = ForeignReport(
            count=self.metrics.foreign_transaction,
            alert=observer.alert,
            gate=gate,
            stop_signing=config.audit.stop_signing_on_foreign,
        )
        # A signature the gate gives up while holding: the client never saw it (not counted).
        gate.on_timeout = lambda: self.metrics.signer_error(SignerEvent.TIMEOUT)
        fenced = config.ha is not None
        # Every RPC of every kind is asked eth_chainId first: one of another chain is kept out (a
        # builder that serves only the bundle API and answers an error is kept, unverified).
        screen = await screen_rpcs(
            [(r.name, r.url) for r in config.rpcs],
            config.chain_id,
            bundle_only=[r.name for r in config.rpcs if r.kind == "builder"],
        )
        for refused in screen.refused:
            log.error("%s", refused)
            self.metrics.invalid_message(refused.name, "chain_id_mismatch")
        rpcs = [r for r in config.rpcs if r.name in screen.kept]
        if not rpcs:
            raise screen.refused[0]
        public = [r for r in rpcs if r.kind == "public"]
        private = [r for r in rpcs if r.kind != "public"]
        # Chain reads never go to private RPCs or builders (section 5a): screened public ones and
        # the head clients' nodes only.
        read_urls = [r.url for r in public] + [_http_of(c.url) for c in config.clients]
        chain = ChainReader(
            read_urls, on_lie=lambda url, what: self.metrics.invalid_message("rpc", what)
        )
        fanout = (
            FanOut(  # the manager listens (through the router)
                [Endpoint(r.name, r.url) for r in public],
                transport_factory=(
                    fenced_transports(default_transport, self.fence)
                    if fenced
                    else default_transport
                ),
            )
            if public
            else None
        )
        orderflow = (
            OrderflowSender(
                [(r.name, r.url, r.kind, r.auth) for r in private],
                on_result=self.metrics.orderflow,
                wrap=(lambda t: FencedTransport(t, self.fence)) if fenced else None,
                # auth = "flashbots": the enclave's auth key signs each body (section 5a)
                sign_auth=signer.sign_auth if any(r.auth for r in private) else None,
            )
            if private
            else None
        )
        router = self.router = observer.router = Router(
            fanout,
            orderflow,
            builders=sum(1 for r in private if r.kind == "builder"),
            private=sum(1 for r in private if r.kind == "private"),
            tip_number=lambda: tracker.tip.number if tracker.tip else None,
            clock_ns=time.perf_counter_ns,
            jobs_per_send=max(1, len(public)),  # the manager's endpoints= below
        )
        manager = TxManager(
            chain_id=config.chain_id,
            book=book,
            journal=journal,
            signer=FencedSigner(gate, self.fence) if fenced else gate,
            # tx.core.Submitter still declares submit() -> None; FanOut now returns a
            # Submitted the manager ignores. The ignore goes (warn_unused_ignores tells) once
            # the Protocol declares the return value.
            fanout=router,
            endpoints=max(1, len(public)),
            chain=chain,
            finality_depth=config.finality_depth,
            fees=FeePolicy(
                bump_percent=config.fees.bump_percent,
                fee_cap=config.fees.max_fee_cap_wei,
                priority_fee=config.fees.priority_fee_wei,
                max_gap_fill=config.fees.max_gap_fill,
            ),
            observer=observer,
            presign=config.fees.presign_replacements,
            after_reaction=os.sched_yield if config.cpu.yield_after_reaction else None,
            lookup=self._lookup(config),
            retain_settled=RETAIN_SETTLED,
            evicted_on_disk=True,
            canonical_chain=tracker.canonical_chain,
            refuse_sender=gate.why,
            # With the audit copy, an intent's fsync and its signature overlap: recovery learns
            # from the enclave's verified log which nonces a crash left signed but unjournaled.
            signed_nonces=self._signed_nonces if config.audit.enabled else None,
        )
        router.cancel_member = member_canceller(manager.cancel, router)  # a dead bundle's members
        if not fenced:
            self.manager = manager  # with [ha], once started: heads already flow to _on_events
        copy = audit_reader = None
        if config.audit.enabled:
            # The journal's copy (SQLite file or PostgreSQL, fenced on the lease epoch as the
            # journal is): this instance streams its own enclave's log into it.
            copy_epoch = self.leadership.epoch if self.leadership is not None else None
            copy = await asyncio.to_thread(open_audit_copy, config.journal.target, epoch=copy_epoch)
            if copy_epoch is not None:
                from nonce.pg_audit_copy import PgAuditCopy

                if isinstance(copy, PgAuditCopy):  # another instance leads: stop now
                    copy.on_stale = lambda stale: self.fence.lapse(f"audit copy: {stale}")
            audit_reader = ChainReader(read_urls)  # its own connections: never in the way
            self.streamer = self._streamer(copy, signer, report)
            # Nothing is signed before a first log check (the start-up sync below, or the
            # streamer's next one if the signer is not up yet): a sign request that opened the
            # connection would otherwise pass before the CONNECTED hold.
            gate.hold()
            self.reconciler = self._reconciler(copy, audit_reader, book, report, tracker)
            if config.ha is not None:  # blocks mined while nobody led: checked by nobody yet
                self.reconciler.check_window(tracker.canonical_chain())
        api = self.api = IntentApi(
            manager,
            chain_id=config.chain_id,
            accounts=self.accounts,
            tokens=config.api.tokens,
            tenants=[(t.name, t.token, t.accounts) for t in config.api.tenants],
            limits=ApiLimits(
                max_message_bytes=config.api.max_message_bytes,
                rate_per_second=config.api.rate_per_token,
                burst=config.api.rate_burst,
                max_connections_per_token=config.api.max_connections_per_token,
            ),
            tip_number=lambda: tracker.tip.number if tracker.tip else None,
            passthrough=chain.proxy,
            on_intent=self.metrics.intent,
            priority_fee=config.fees.priority_fee_wei,
            max_gap_fill=config.fees.max_gap_fill,
            subscriptions=subscriptions,
            routing=(config.routing.private, bool(private), bool(public)),
            router=router,
        )
        await self._restore_bundles(config.journal.target, book, router, api)
        server = None
        try:
            if fanout is not None:
                await fanout.connect()
            if orderflow is not None:
                await orderflow.connect()
            if self.streamer is not None:
                await self.streamer.load()
                self.metrics.audit_verified(self.streamer.anchor.seq)
                await self.streamer.sync()  # a log that does not extend ours: refused now
            await self._start_manager(manager)
            self.manager = manager
            server = await api.serve(config.api.listen.host, config.api.listen.port)
            self.api_port = int(next(iter(server.sockets)).getsockname()[1])
            log.info(
                "serving intents on %s:%d (HTTP and websocket), metrics on %s",
                config.api.listen.host,
                self.api_port,
                self.metrics_server.url,
            )
            async with asyncio.TaskGroup() as group:
                if heads_task is None:
                    group.create_task(hub.run(), name="heads")
                else:
                    group.create_task(_follow(heads_task), name="heads")
                if lease_task is not None:
                    group.create_task(_follow(lease_task), name="lease")
                if fanout is not None:
                    group.create_task(fanout.run(), name="fanout")
                if orderflow is not None:
                    group.create_task(orderflow.run(), name="orderflow")
                group.create_task(manager.run(), name="txmanager")
                group.create_task(self._lag_updater(hub), name="lag")
                if self.streamer is not None and self.reconciler is not None:
                    group.create_task(self.streamer.run(), name="audit-stream")
                    group.create_task(self.reconciler.run(), name="audit-reconcile")
                self.ready.set()
        finally:
            self.ready.clear()
            manager.stop_accepting()
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 5)
            if self.streamer is not None:  # the last entries into the copy (`broadcaster audit`)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.streamer.sync(), 5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(journal.flush(), 5)
            journal.close()
            if fanout is not None:
                await fanout.aclose()
            if orderflow is not None:
                await orderflow.aclose()
            await signer.close()
            await chain.close()
            for task in (heads_task, lease_task):
                if task is not None:
                    task.cancel()
            if self.leadership is not None:
                await self._release()
            if audit_reader is not None:
                await audit_reader.close()
            if copy is not None:
                copy.close()
            await self.metrics_server.close()
            log.info("stopped; journal flushed and closed")

    @staticmethod
    def _lookup(config: Config) -> Callable[[str | None, str | None], TxRecord | None]:
        """Finds evicted records in the journal (PostgreSQL: over one kept connection)."""
        if config.journal.url is None:
            return functools.partial(_journal_lookup, config.journal.target)
        from nonce.pg_journal import PgReader

        reader = PgReader(config.journal.url)
        return lambda intent_id, key: reader.lookup(intent_id=intent_id, key=key)

    async def _standby(self, config: Config) -> int:
        """Follow heads and refuse intents (naming the leader) until the lease is ours."""
        assert config.ha is not None and config.journal.url is not None
        from broadcaster.ha.lease import PgLeaseStore

        leadership = self.leadership = Leadership(
            PgLeaseStore(config.journal.url),
            instance=config.ha.instance,
            lease_seconds=config.ha.lease_seconds,
            fence=self.fence,
            metrics=self.metrics,
        )
        standby = StandbyApi(config.api.tokens, lambda: leadership.leader)
        server = await standby.serve(config.api.listen.host, config.api.listen.port)
        self.api_port = server.port
        log.info("standby %s: refusing intents on ws://%s:%d", config.ha.instance,
                 config.api.listen.host, self.api_port)  # fmt: skip
        audit = (
            asyncio.get_running_loop().create_task(self._standby_audit(config), name="audit")
            if config.audit.enabled
            else None
        )
        try:
            grant = await leadership.acquire()
        finally:
            if audit is not None:
                audit.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await audit
            await server.close()
        return grant.epoch

    async def _standby_audit(self, config: Config) -> None:
        """A standby streams its own enclave's log into the copy too (its own log only, nothing
        else: it does not lead, so its writes are not fenced on an epoch). The leader reconciles
        against every instance's log: what this instance's enclave signed while it led (a tail
        it never streamed before it died) reaches the copy once it is back, as a standby."""
        copy = await asyncio.to_thread(open_audit_copy, config.journal.target)
        streamer: AuditStreamer | None = None

        def on_event(kind: str) -> None:
            if kind == SignerEvent.CONNECTED and streamer is not None:
                _trust_presented(streamer, signer)
                streamer.reconnected()

        signer = _signer_client(config, on_event)

        def refused(exc: AuditRefused) -> None:
            self.metrics.audit_refused(exc.reason)
            log.error("ALERT audit_refused (standby): %s", exc)

        assert config.ha is not None
        streamer = AuditStreamer(
            copy,
            signer,
            instance=config.ha.instance,
            on_refused=refused,
            on_stored=self.metrics.audit_verified,
            poll=config.audit.poll_seconds,
        )
        try:
            await streamer.load()
            await streamer.run()
        finally:
            with contextlib.suppress(Exception):
                await signer.close()
            copy.close()

    async def _release(self) -> None:
        """A clean stop gives the lease up (nothing is sent any more): a standby takes over
        at its next poll instead of waiting the lease out."""
        leadership = self.leadership
        assert leadership is not None
        if leadership.epoch is None or self.fence.lapsed:
            return
        self.fence.lapsed = True  # no send after this point, even by a late task
        with contextlib.suppress(Exception):
            await asyncio.to_thread(leadership.store.release, leadership.instance, leadership.epoch)
        leadership.store.close()

    async def _signed_nonces(self, floors: Mapping[str, int]) -> Mapping[str, Collection[int]]:
        """``broadcaster.tx.unjournaled.copy_source`` over this instance's streamer (made after
        the manager, before its recovery runs)."""
        streamer = self.streamer
        if streamer is None:
            raise RuntimeError("recovery needs the audit streamer ([audit] enabled)")
        return await copy_source(streamer, streamer.copy, chain_id=self.config.chain_id)(floors)

    def _streamer(
        self, copy: AuditCopyBase, signer: SignerClient, report: ForeignReport
    ) -> AuditStreamer:
        def refused(exc: AuditRefused) -> None:
            self.metrics.audit_refused(exc.reason)
            report.refused(exc)

        return AuditStreamer(
            copy,
            signer,
            instance=self.config.ha.instance if self.config.ha is not None else "",
            on_refused=refused,
            on_stored=self.metrics.audit_verified,
            on_synced=self.gate.release if self.gate is not None else None,
            poll=self.config.audit.poll_seconds,
        )

    def _reconciler(
        self,
        copy: AuditCopyBase,
        reader: ChainReader,
        book: NonceBook,
        report: ForeignReport,
        tracker: ChainTracker,
    ) -> LiveReconciler:
        def own() -> tuple[str | None, int]:
            streamer = self.streamer
            return (streamer.log_id, streamer.anchor.seq) if streamer is not None else (None, 0)

        # Another instance's log counts once verified here, with attested keys only when the
        # config pins attestation (a log signed by a key the host controls never counts).
        logs = VerifiedLogs(
            copy,
            own,
            attested_only=self.config.signer.attestation_root is not None
            and self.config.signer.pcr0 is not None,
        )

        async def signed(hashes: Any) -> set[bytes]:
            return await asyncio.to_thread(logs.signed, list(hashes))

        async def external(hashes: Any) -> set[bytes]:
            found, rest = set(), []
            for h in hashes:
                record = book.by_hash(h)
                if record is not None and record.intent.external:
                    found.add(h)
                elif record is None:
                    rest.append(h)  # evicted from memory, or not ours: the journal knows
            return found | await asyncio.to_thread(copy.external, rest) if rest else found

        async def unconfirmed(hashes: Any) -> set[bytes]:
            # Attempts of ours by the journal's word (not proof: it only makes a block wait).
            return {h for h in hashes if book.by_hash(h) is not None}

        async def catch_up() -> bool:
            assert self.streamer is not None
            # Complete when synced, or refused (it takes nothing more); not when the signer
            # did not answer: the reconciler then asks again rather than call a tx foreign.
            return await self.streamer.sync() or self.streamer.refused is not None

        return LiveReconciler(
            accounts=self.accounts,
            fetch=functools.partial(
                full_blocks, reader, on_refused=lambda url, why: self.metrics.audit_bad_block(why)
            ),
            signed=signed,
            external=external,
            catch_up=catch_up,
            on_foreign=lambda f: report.foreign(f.sender, f.nonce, f),
            canonical=tracker.canonical_chain,
            on_checked=lambda audit: self.metrics.audit_block_checked(),
            unconfirmed=unconfirmed if self.config.ha is not None else None,
        )

    def _on_signer_event(self, kind: str) -> None:
        self.metrics.signer_error(kind)
        if kind == SignerEvent.CONNECTED and self._auth_rpcs:
            info = self._signer.info
            if info is not None and info.auth_address is None:
                # Every request to these rpcs fails until the enclave holds an auth key
                # (signer_errors_total{kind="no_auth_key"} counts each; the SignerErrors alert).
                log.error(
                    'rpcs %s have auth = "flashbots" but the signer names no auth key: set '
                    "[policy] auth_address in the enclave to one of its loaded keys; every "
                    "request to them fails until then",
                    ", ".join(self._auth_rpcs),
                )
        streamer = self.streamer
        if streamer is not None and self.gate is not None and kind in _RECHECK_ON:
            # Close the reconnect window: nothing is signed on a new connection before its log
            # is checked against the copy (a restarted or rolled-back enclave is refused first).
            self.gate.hold()
            streamer.reconnected()
        if kind == SignerEvent.CONNECTED and streamer is not None:
            # A (re)connected signer: trust the log key it presented (attested when the config
            # pins attestation), and check its log at once (a restarted enclave).
            _trust_presented(streamer, self._signer)
            streamer.wake()

    async def _restore_bundles(
        self, target: Any, book: NonceBook, router: Router, api: IntentApi
    ) -> None:
        """``broadcaster_sendBundle`` bundles from the journal (DESIGN.md 5a): registered with
        the router before recovery re-submits their members, so the members' attempts build
        the bundle again (re-targeted from the first head); answerable again by id. A bundle
        none of whose members is live any more is only answerable (or forgotten)."""
        try:
            rows = await asyncio.to_thread(load_bundles, target)
        except JournalError as exc:
            log.warning("journal: bundles not reloaded: %s", exc)
            return

        def settled(intent_id: str) -> bool | None:
            record = book.find_intent(intent_id)
            return None if record is None else record.settled

        def given_up(intent_id: str) -> bool:
            record = book.find_intent(intent_id)
            return record is not None and record.state in _GIVEN_UP

        answerable, live, dead, problems = plan_restore(rows, settled, given_up)
        for problem in problems:
            log.warning("journal: %s", problem)
        for spec in answerable:
            api.restore_bundle(spec)
        for spec in live:
            router.add_bundle(spec)
        for bundle_id in dead:  # a member gave up or was never booked: cancel the rest
            router.kill_bundle(bundle_id)
        if live:
            log.info("journal: %d live bundles reloaded", len(live))

    async def _start_manager(self, manager: TxManager) -> None:
        """Resync nonces and recover, retrying until an RPC answers (it may start after us)."""
        for delay in backoff(initial=0.2, maximum=5.0):
            try:
                actions = await manager.start(self.accounts)
            except ChainReadError as exc:
                log.warning("chain not reachable yet (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            if actions:
                log.info("recovery: %d actions on reloaded transactions", len(actions))
            return

    def _on_events(
        self, events: list[Event], client: str, recv_ns: int, header: Mapping[str, Any]
    ) -> None:
        manager = self.manager
        if manager is not None:
            manager.on_chain(events, client, recv_ns, header)  # the reaction first
        metrics = self.metrics
        for event in events:
            kind = type(event)
            if kind is Reorg:
                assert isinstance(event, Reorg)
                metrics.reorg(event.depth)
                log.warning(
                    "reorg depth %d at #%d (client %s): dropped %s",
                    event.depth,
                    event.ancestor.number,
                    client,
                    [b.hash[:12] for b in event.old],
                )
            elif kind is DeepReorg:
                assert isinstance(event, DeepReorg)
                metrics.deep_reorg()
            elif kind is Rejected:
                assert isinstance(event, Rejected)
                metrics.rejected_header(client, event.reason)
                metrics.invalid_message(client, f"header_{event.reason}")
                log.warning("rejected header from %s: %s (%s)", client, event.reason, event.detail)
            elif kind is Quarantine:
                assert isinstance(event, Quarantine)
                metrics.quarantine(event.client, event.active)
                log.warning(
                    "client %s %s (%d unconfirmed blocks)",
                    event.client,
                    "quarantined: its heads are no candidates" if event.active else "released",
                    event.unconfirmed,
                )
        if self.reconciler is not None:
            self.reconciler.on_events(events)  # queues blocks; checked in its own task
        hub = self.hub
        if hub is not None and hub.tracker.tip is not None:
            tip = hub.tracker.tip
            metrics.tip(tip.number)
            router = self.router
            if router is not None and router.records and tip.number != self._retargeted:
                self._retargeted = tip.number
                router.on_head(tip.number)  # bundles target one block: re-target at tip + 1
            api = self.api
            if api is not None and str(header.get("hash", "")).lower() == tip.hash.lower():
                api.subscriptions.new_head(header)  # eth_subscribe("newHeads"): the new tip

    async def _lag_updater(self, hub: HeadHub) -> None:
        while True:
            for status in hub.status():
                if status.lag is not None:
                    self.metrics.client_lag(status.name, status.lag)
            await asyncio.sleep(1.0)


async def _follow(task: asyncio.Task[None]) -> None:
    """Await a task started before the group (the standby's head subscriptions)."""
    await task


def _signer_client(config: Config, on_event: Callable[[str], None]) -> SignerClient:
    """The signer client of ``[signer]``, pinned and (with a root and PCR0) attested."""
    attestation = None
    if config.signer.attestation_root is not None and config.signer.pcr0 is not None:
        attestation = AttestationPolicy.from_files(
            str(config.signer.attestation_root), config.signer.pcr0
        )
    return SignerClient(
        config.signer.url,
        timeout=config.signer.timeout_seconds,
        connect_timeout=config.signer.connect_timeout_seconds,
        max_in_flight=config.signer.max_in_flight,
        attestation=attestation,
        pins=SignerPins(
            mode=config.signer.mode,
            policy_hash=config.signer.policy_hash,
            accounts=tuple(a.address for a in config.accounts),
            chain_ids=(config.chain_id,),
        ),
        on_event=on_event,
    )


def _trust_presented(streamer: AuditStreamer, signer: SignerClient) -> None:
    """Trust the log key the (re)connected ``signer`` presented: attested when the config pins
    attestation, else the one its ``hello`` named (dev)."""
    if signer.attested is not None:
        pcr0 = signer.attested.pcrs.get(0)
        streamer.trust(
            "0x" + signer.attested.public_key.hex(),
            attested=True,
            pcr0="0x" + pcr0.hex() if pcr0 is not None else None,
        )
    elif signer.info is not None:
        streamer.trust(signer.info.log_public_key, attested=False)

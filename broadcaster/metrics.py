"""Prometheus metrics of DESIGN.md section 7, and the ``/metrics`` + ``/healthz`` HTTP server.

Every name below is exposed exactly so (prefix ``broadcaster_``; prometheus_client appends
``_total`` to counters itself, so they are declared without it). The DESIGN.md names:

=======================================  =========  ==============================================
``heads_total{client}``                  counter    newHeads announcements received
``reorgs_total``                         counter    reorgs the tracker emitted
``reorg_depth``                          histogram  blocks dropped per reorg
``resends_total{reason}``                counter    re-signed / rebroadcast attempts (``reorg``...)
``reaction_seconds``                     histogram  reorg head's bytes read -> last resend written
``intent_seconds``                       histogram  intent frame read -> last RPC write, 1st attempt
``sign_seconds``                         histogram  one signer round trip
``broadcast_seconds{rpc}``               histogram  eth_sendRawTransaction write -> reply
``broadcast_errors_total{rpc,kind}``     counter    answers other than accepted (ErrorKind)
``client_up{client}``                    gauge      1 while the client's subscription is open
``client_head_lag_blocks{client}``       gauge      tip number - this client's head number
``tip_number``                           gauge      canonical tip block number
``pending_transactions{sender}``         gauge      our not-yet-final transactions per sender
``invalid_messages_total{client,reason}`` counter   frames from a client that were not usable
``intents_total{status}``                counter    intents reaching each status
``foreign_transactions_total{sender}``   counter    nonces of ours taken by a tx we never signed
``bundles_total{rpc,result}``            counter    eth_sendBundle answers per builder (section 5a)
``private_sends_total{rpc}``             counter    eth_sendPrivateTransaction requests written
``is_leader``                            gauge      1 on the instance that acts (no [ha]: always)
=======================================  =========  ==============================================

Extras for operators: ``deep_reorgs_total`` (reorg below the finality window: re-anchored, needs
a human), ``rejected_headers_total{client,reason}`` (a header the tracker refused: hash mismatch,
malformed, ``bad_number``, ``bad_timestamp``, ``conflict``; a lying or broken node),
``quarantines_total{client}`` and ``client_quarantined{client}`` (a client whose self-forks no
other client confirms: its heads are no candidates, DESIGN.md §3), ``signer_errors_total{kind}``,
``signer_up``, ``build_info{version}``, with ``[ha]``
``lease_age_seconds`` (seconds since the leader lease was last renewed, as this instance last
saw it: the leader's own renewals, or the leader's as a standby reads them) and
``failovers_total`` (leases this instance took over from another holder) and ``lease_epoch``
(the lease's epoch as this instance last saw it: every takeover raises it, across restarts,
which a process's ``failovers_total`` cannot show), the audit copy's
``audit_refusals_total{reason}`` (the enclave's audit log was refused: signing stopped; reasons
are ``broadcaster.audit.verify.REFUSAL_REASONS``), ``audit_verified_seq`` (the last verified
entry held in the journal), ``audit_blocks_checked_total`` (canonical blocks reconciled with
it) and ``audit_bad_blocks_total{reason}`` (a read endpoint's block answer refused by the
reconciler: its header or body does not match the hash asked for, or a transaction's fields or
signature do not hold; reasons are ``broadcaster.audit.body.BODY_REFUSALS``),
``inclusion_bad_blocks_total{reason}`` (a block answer the inclusion scan refused before marking
anything of ours included: the same reasons, and ``not_in_body`` for a hash list or receipt that
names a tx of ours the block's proven body does not hold; ``broadcaster.tx.reasons.
INCLUSION_REFUSALS``), and the standard
``process_*`` metrics of the service process.

The update methods run on the reaction path: labelled children for the configured clients and
RPCs, and for every known status, are bound at construction (their series also exist at 0 from
the start, which ``rate()``-based alerts need); other label values are bound once, then cached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from broadcaster.audit.body import BODY_REFUSALS
from broadcaster.audit.verify import REFUSAL_REASONS
from broadcaster.tx.reasons import INCLUSION_REFUSALS, ResendReason
from signer_client.events import SignerEvent

__all__ = [
    "BROADCAST_BUCKETS",
    "DESIGN_METRIC_NAMES",
    "INTENT_STATUSES",
    "REACTION_BUCKETS",
    "REORG_DEPTH_BUCKETS",
    "SIGN_BUCKETS",
    "Metrics",
    "MetricsServer",
    "start_metrics_server",
]

DESIGN_METRIC_NAMES = (
    "broadcaster_heads_total",
    "broadcaster_reorgs_total",
    "broadcaster_reorg_depth",
    "broadcaster_resends_total",
    "broadcaster_reaction_seconds",
    "broadcaster_intent_seconds",
    "broadcaster_sign_seconds",
    "broadcaster_broadcast_seconds",
    "broadcaster_broadcast_errors_total",
    "broadcaster_client_up",
    "broadcaster_client_head_lag_blocks",
    "broadcaster_tip_number",
    "broadcaster_pending_transactions",
    "broadcaster_invalid_messages_total",
    "broadcaster_intents_total",
    "broadcaster_bundles_total",
    "broadcaster_private_sends_total",
    "broadcaster_is_leader",
)
"""The names DESIGN.md sections 5a and 7 fix, as exposed (histograms add _bucket/_sum/_count)."""

REORG_DEPTH_BUCKETS = (1, 2, 3, 4, 5, 7, 10, 16, 32, 64)
# Literal decimals so the ``le`` labels read cleanly (``0.0002``, not ``0.00019999999999999998``).
# 50 µs .. 1 s, fine-grained below 2 ms where the targets live (p50 <= 250 µs, p99 <= 1 ms).
REACTION_BUCKETS = (
    0.00005, 0.000075, 0.0001, 0.000125, 0.00015, 0.0002, 0.00025, 0.0003, 0.0004, 0.0005,
    0.0006, 0.00075, 0.001, 0.00125, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0,
)  # fmt: skip
# 10 µs .. 100 ms: the enclave signs in ~35 µs; a unix-socket round trip adds tens of µs.
SIGN_BUCKETS = (
    0.00001, 0.00002, 0.00003, 0.00004, 0.00005, 0.000075, 0.0001, 0.00015, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
# 100 µs .. 5 s: loopback nodes answer in a few hundred µs, remote providers in tens of ms.
BROADCAST_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
)  # fmt: skip
INTENT_STATUSES = (
    # told by the API when an intent arrives
    "accepted",
    "duplicate",
    "rejected",
    "invalid",
    "unauthorized",
    "rate_limited",  # the token's request bucket or connection cap was full (-32005 / 429)
    # outcomes the tx manager reaches (broadcaster.service counts these)
    "included",
    "finalized",
    "cancelled",
    "expired",
    "failed",
)
RESEND_REASONS = tuple(reason.value for reason in ResendReason)

SIGNER_OK_EVENTS = frozenset({SignerEvent.CONNECTED, SignerEvent.SIGNED, SignerEvent.ATTESTED})
"""The signer client's lifecycle and success events: not failures, never counted."""
SIGNER_ERROR_KINDS = tuple(event.value for event in SignerEvent if event not in SIGNER_OK_EVENTS)
"""``signer_errors_total{kind}``: the signer client's failure events (pre-bound at 0)."""


class _Registry(CollectorRegistry):
    """Leaves out the ``*_created`` series prometheus_client adds to every counter and histogram:
    they double the series count and nothing here reads them (a local alternative to the
    process-wide ``prometheus_client.disable_created_metrics()``)."""

    def collect(self) -> Iterator[Metric]:
        for metric in super().collect():
            samples = metric.samples
            if any(s.name.endswith("_created") for s in samples):
                metric.samples = [s for s in samples if not s.name.endswith("_created")]
            yield metric


def _version() -> str:
    try:
        return version("reorg-broadcaster")
    except PackageNotFoundError:  # running from a source tree without an install
        return "unknown"


class Metrics:
    """Owns a private registry (never the global one: tests and several services per process).

    ``clients``/``rpcs``/``senders``: names known at start, bound now so their series exist at 0.
    """

    def __init__(
        self,
        clients: Iterable[str] = (),
        rpcs: Iterable[str] = (),
        senders: Iterable[str] = (),
        *,
        process_metrics: bool = True,
    ) -> None:
        self.registry: CollectorRegistry = _Registry()
        registry = self.registry
        if process_metrics:
            ProcessCollector(registry=registry)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"broadcaster_{name}", doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"broadcaster_{name}", doc, labels, registry=registry)

        def histogram(
            name: str, doc: str, buckets: Iterable[float], labels: tuple[str, ...] = ()
        ) -> Histogram:
            b = tuple(buckets)
            return Histogram(f"broadcaster_{name}", doc, labels, registry=registry, buckets=b)

        self.heads_total = counter("heads", "newHeads announcements received", ("client",))
        self.reorgs_total = counter("reorgs", "Reorgs of the canonical chain")
        self.reorg_depth = histogram("reorg_depth", "Blocks dropped per reorg", REORG_DEPTH_BUCKETS)
        self.deep_reorgs_total = counter(
            "deep_reorgs", "Reorgs below the finality window (re-anchored; needs a human)"
        )
        self.resends_total = counter("resends", "Re-signed or rebroadcast attempts", ("reason",))
        self.foreign_transactions_total = counter(
            "foreign_transactions",
            "Transactions we never signed that took one of our nonces",
            ("sender",),
        )
        self.reaction_seconds = histogram(
            "reaction_seconds",
            "Reorg head's bytes received -> last rebroadcast written",
            REACTION_BUCKETS,
        )
        self.intent_seconds = histogram(
            "intent_seconds",
            "Intent frame read -> last RPC write of its first attempt (journaled, signed)",
            REACTION_BUCKETS,
        )
        self.sign_seconds = histogram("sign_seconds", "Signer round trip", SIGN_BUCKETS)
        self.signer_errors_total = counter("signer_errors", "Signer failures", ("kind",))
        self.signer_up = gauge("signer_up", "1 while the signer connection is usable")
        self.broadcast_seconds = histogram(
            "broadcast_seconds",
            "eth_sendRawTransaction write -> reply",
            BROADCAST_BUCKETS,
            ("rpc",),
        )
        self.broadcast_errors_total = counter(
            "broadcast_errors",
            "eth_sendRawTransaction answers other than accepted",
            ("rpc", "kind"),
        )
        self.client_up = gauge(
            "client_up", "1 while the newHeads subscription is open", ("client",)
        )
        self.client_head_lag_blocks = gauge(
            "client_head_lag_blocks", "Tip number minus this client's head number", ("client",)
        )
        self.tip_number = gauge("tip_number", "Canonical tip block number")
        self.pending_transactions = gauge(
            "pending_transactions", "Our transactions not yet final", ("sender",)
        )
        self.invalid_messages_total = counter(
            "invalid_messages", "Unusable frames from a client", ("client", "reason")
        )
        self.rejected_headers_total = counter(
            "rejected_headers", "Headers whose hash did not verify", ("client", "reason")
        )
        self.quarantines_total = counter(
            "quarantines", "Times a client was quarantined (heads no candidates)", ("client",)
        )
        self.client_quarantined = gauge(
            "client_quarantined", "1 while the client is quarantined", ("client",)
        )
        self.intents_total = counter("intents", "Intents reaching each status", ("status",))
        self.bundles_total = counter(
            "bundles",
            "eth_sendBundle answers per builder (result: accepted, rejected, failed, dropped)",
            ("rpc", "result"),
        )
        self.private_sends_total = counter(
            "private_sends",
            "eth_sendPrivateTransaction requests per private RPC (one per answer or failure)",
            ("rpc",),
        )
        self.api_notifications_dropped_total = counter(
            "api_notifications_dropped",
            "Status/newHeads notifications dropped for a websocket that did not read them "
            "(the connection is then closed with 1013)",
        )
        self.is_leader = gauge("is_leader", "1 on the instance that accepts, signs and sends")
        self.is_leader.set(1)  # without [ha] the only instance acts; [ha] starts as a standby
        self.lease_age_seconds = gauge(
            "lease_age_seconds", "Seconds since the leader lease was last renewed ([ha])"
        )
        self.failovers_total = counter(
            "failovers", "Leader leases this instance took over from another holder ([ha])"
        )
        self.lease_epoch = gauge(
            "lease_epoch",
            "The leader lease's epoch as this instance last saw it: its own as the leader, the "
            "holder's as a standby (0: not read yet; [ha])",
        )
        self.audit_refusals_total = counter(
            "audit_refusals",
            "The enclave's audit log was refused (signing stopped)",
            ("reason",),
        )
        self.audit_verified_seq = gauge(
            "audit_verified_seq", "Last verified audit-log entry held in the journal"
        )
        self.audit_blocks_checked_total = counter(
            "audit_blocks_checked", "Canonical blocks reconciled with the verified audit log"
        )
        self.audit_bad_blocks_total = counter(
            "audit_bad_blocks",
            "Block answers the reconciler refused (header or body not the block asked for)",
            ("reason",),
        )
        self.inclusion_bad_blocks_total = counter(
            "inclusion_bad_blocks",
            "Block answers the inclusion scan refused (a body not proven against its header, or"
            " one that does not hold the tx a hash list or receipt named)",
            ("reason",),
        )
        gauge("build_info", "Version of the running broadcaster", ("version",)).labels(
            _version()
        ).set(1)

        self._heads: dict[str, Any] = {}
        self._up: dict[str, Any] = {}
        self._lag: dict[str, Any] = {}
        self._broadcast: dict[str, Any] = {}
        self._pending: dict[str, Any] = {}
        self._cache: dict[tuple[str, ...], Any] = {}
        for client in clients:
            self._bind_client(client)
        for rpc in rpcs:
            self._broadcast[rpc] = self.broadcast_seconds.labels(rpc)
        for sender in senders:
            self._pending[sender] = self.pending_transactions.labels(sender)
            self._labelled("foreign", self.foreign_transactions_total, sender)
        for status in INTENT_STATUSES:
            self._labelled("intents", self.intents_total, status)
        for reason in RESEND_REASONS:
            self._labelled("resends", self.resends_total, reason)
        for reason in REFUSAL_REASONS:
            self._labelled("audit_refused", self.audit_refusals_total, reason)
        for reason in BODY_REFUSALS:
            self._labelled("audit_bad_block", self.audit_bad_blocks_total, reason)
        for reason in INCLUSION_REFUSALS:
            self._labelled("inclusion_bad_block", self.inclusion_bad_blocks_total, reason)
        for kind in SIGNER_ERROR_KINDS:
            self._labelled("signer", self.signer_errors_total, kind)
        self._reorgs_inc = self.reorgs_total.inc
        self._depth_observe = self.reorg_depth.observe
        self._reaction_observe = self.reaction_seconds.observe
        self._intent_observe = self.intent_seconds.observe
        self._sign_observe = self.sign_seconds.observe
        self._tip_set = self.tip_number.set

    def _bind_client(self, client: str) -> None:
        self._heads[client] = self.heads_total.labels(client)
        self._up[client] = self.client_up.labels(client)
        self._lag[client] = self.client_head_lag_blocks.labels(client)

    def _labelled(self, family: str, metric: Any, *labels: str) -> Any:
        key = (family, *labels)
        child = self._cache.get(key)
        if child is None:
            child = self._cache[key] = metric.labels(*labels)
        return child

    # ------------------------------------------------------------ heads and the tracker

    def head(self, client: str) -> None:
        """One ``newHeads`` announcement from ``client``."""
        try:
            self._heads[client].inc()
        except KeyError:
            self._bind_client(client)
            self._heads[client].inc()

    def client_connected(self, client: str, up: bool) -> None:
        if client not in self._up:
            self._bind_client(client)
        self._up[client].set(1 if up else 0)

    def client_lag(self, client: str, blocks: int) -> None:
        if client not in self._lag:
            self._bind_client(client)
        self._lag[client].set(blocks)

    def tip(self, number: int) -> None:
        self._tip_set(number)

    def reorg(self, depth: int) -> None:
        self._reorgs_inc()
        self._depth_observe(depth)

    def deep_reorg(self) -> None:
        self.deep_reorgs_total.inc()

    def invalid_message(self, client: str, reason: str) -> None:
        self._labelled("invalid", self.invalid_messages_total, client, reason).inc()

    def rejected_header(self, client: str, reason: str) -> None:
        self._labelled("rejected", self.rejected_headers_total, client, reason).inc()

    def quarantine(self, client: str, active: bool) -> None:
        """The tracker quarantined ``client`` (``active``) or released it."""
        if active:
            self._labelled("quarantines", self.quarantines_total, client).inc()
        self._labelled("quarantined", self.client_quarantined, client).set(1 if active else 0)

    # ------------------------------------------------------------ transactions

    def resend(self, reason: str) -> None:
        """One re-signed or rebroadcast attempt (``reorg``, ``underpriced``, ``retry``...)."""
        self._labelled("resends", self.resends_total, reason).inc()

    def audit_refused(self, reason: str) -> None:
        self._labelled("audit_refused", self.audit_refusals_total, reason).inc()

    def audit_verified(self, seq: int) -> None:
        self.audit_verified_seq.set(seq)

    def audit_bad_block(self, reason: str) -> None:
        """A read endpoint's block answer was refused (one of ``BODY_REFUSALS``)."""
        self._labelled("audit_bad_block", self.audit_bad_blocks_total, reason).inc()

    def inclusion_bad_block(self, reason: str) -> None:
        """The inclusion scan refused a block answer (one of ``INCLUSION_REFUSALS``)."""
        self._labelled("inclusion_bad_block", self.inclusion_bad_blocks_total, reason).inc()

    def audit_block_checked(self) -> None:
        self.audit_blocks_checked_total.inc()

    def foreign_transaction(self, sender: str) -> None:
        """A nonce of ``sender`` was taken by a transaction we never signed."""
        self._labelled("foreign", self.foreign_transactions_total, sender).inc()

    def reaction(self, seconds: float) -> None:
        """Reorg head's bytes received -> last rebroadcast written (DESIGN.md section 8)."""
        self._reaction_observe(seconds)

    def intent_to_wire(self, seconds: float) -> None:
        """Intent frame read -> last RPC write of its first attempt (DESIGN.md sections 7, 8)."""
        self._intent_observe(seconds)

    def sign(self, seconds: float) -> None:
        self._sign_observe(seconds)

    def signer_error(self, kind: str) -> None:
        """One signer failure event (:data:`SIGNER_ERROR_KINDS`). A lifecycle or success event
        (``signed``, ``connected``, ``attested``) or an unknown kind is not a failure: not
        counted, so the alert on this counter fires on failures only."""
        if kind in SIGNER_ERROR_KINDS:
            self._labelled("signer", self.signer_errors_total, kind).inc()

    def signer_connected(self, up: bool) -> None:
        self.signer_up.set(1 if up else 0)

    def broadcast(self, rpc: str, seconds: float) -> None:
        child = self._broadcast.get(rpc)
        if child is None:
            child = self._broadcast[rpc] = self.broadcast_seconds.labels(rpc)
        child.observe(seconds)

    def broadcast_error(self, rpc: str, kind: str) -> None:
        self._labelled("broadcast", self.broadcast_errors_total, rpc, kind).inc()

    def pending(self, sender: str, count: int) -> None:
        child = self._pending.get(sender)
        if child is None:
            child = self._pending[sender] = self.pending_transactions.labels(sender)
        child.set(count)

    def intent(self, status: str) -> None:
        self._labelled("intents", self.intents_total, status).inc()

    def orderflow(self, rpc: str, method: str, result: str) -> None:
        """An answer from a builder or private RPC (``broadcaster.rpc.orderflow.RESULTS``)."""
        if method == "eth_sendBundle":
            self._labelled("bundles", self.bundles_total, rpc, result).inc()
        elif method == "eth_sendPrivateTransaction":
            self._labelled("private_sends", self.private_sends_total, rpc).inc()

    # ------------------------------------------------------------ reading

    def leadership(
        self, leader: bool, lease_age: float | None = None, epoch: int | None = None
    ) -> None:
        self.is_leader.set(1 if leader else 0)
        if lease_age is not None:
            self.lease_age_seconds.set(lease_age)
        if epoch:  # 0: an unknown holder (another instance inserted the row first)
            self.lease_epoch.set(epoch)

    def failover(self) -> None:
        self.failovers_total.inc()

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The current value of one exposed sample (``broadcaster_heads_total``...), or None."""
        return self.registry.get_sample_value(name, dict(labels or {}))

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The scrape body and its content type (OpenMetrics when the scraper asks for it)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


HealthCheck = Callable[[], Mapping[str, Any]]


class MetricsServer:
    """The running ``/metrics`` and ``/healthz`` endpoint; ``await close()`` stops it."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self._runner.cleanup()


async def start_metrics_server(
    metrics: Metrics, host: str, port: int, health: HealthCheck | None = None
) -> MetricsServer:
    """Serve ``GET /metrics`` and ``GET /healthz`` on the running loop (aiohttp).

    The exposition is rendered inline on the event loop, on purpose: it takes about a
    millisecond for this registry, whereas a worker thread would hold the GIL against the loop for
    up to ``sys.getswitchinterval()`` (5 ms) in the middle of a reorg reaction.

    ``/healthz`` answers 200 with ``health()`` as JSON, 503 when it holds ``"healthy": false``, 500
    when it raises. ``port=0`` binds a free port (see :attr:`MetricsServer.port`).
    """

    async def scrape(request: web.Request) -> web.Response:
        body, content_type = metrics.exposition(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(request: web.Request) -> web.Response:
        try:
            status = dict(health()) if health is not None else {"healthy": True}
        except Exception as exc:
            body = orjson.dumps({"healthy": False, "error": f"{type(exc).__name__}: {exc}"})
            return web.Response(body=body, status=500, content_type="application/json")
        code = 503 if status.get("healthy", True) is False else 200
        body = orjson.dumps(status, default=str)
        return web.Response(body=body, status=code, content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    server = site._server  # aiohttp keeps the asyncio.Server here; its sockets know the real port
    sockets = getattr(server, "sockets", None)
    if sockets:
        bound = int(sockets[0].getsockname()[1])
    return MetricsServer(runner, host, bound)

"""The head hub: N client subscriptions feeding one chain tracker, run as one task group.

    hub = HeadHub([("a", "ws://127.0.0.1:8545"), ("b", "ws://...")], on_events=tx_manager.on_chain)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(hub.run())           # never returns; cancel it to stop

Data flow (DESIGN.md §2): ``subscriber -> tracker -> (events) -> consumer``. Every frame is
handled to the end synchronously, inside the connection's ``data_received`` (see
:mod:`heads.subscriber`): fed to the tracker, the resulting events handed to
``on_events(events, client, recv_ns, header)``, then counted and recorded, before the next frame
is looked at. There is no queue between the socket and the consumer, so a reorg reaction starts
in the same event-loop callback that read the head's bytes, and ``recv_ns``
(``time.perf_counter_ns()`` when they were read) lets the consumer measure its reaction from there.

``NeedAncestor`` requests are routed to the subscription of the client named in them (backfill by
hash from the client that announced the head, never by number); the fetched block goes to
``tracker.on_block`` and is recorded as a ``block`` line.

Metrics stay out of this package: the service reads :meth:`HeadHub.status` and overrides the
no-op methods of :class:`HubHooks`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from heads.errors import SubscriptionEnded
from heads.events import Event, NeedAncestor
from heads.recording import Recorder
from heads.subscriber import ClientState, Subscription, SubscriptionOptions
from heads.tracker import ChainTracker

__all__ = ["ClientStatus", "EventsCallback", "HeadHub", "HubHooks", "SubscriptionEnded"]

log = logging.getLogger(__name__)

EventsCallback = Callable[[list[Event], str, int, Mapping[str, Any]], None]
"""``on_events(events, client, recv_ns, header)``: called for every frame that produced events;
``header`` is the head or backfilled block that produced them (e.g. for its ``baseFeePerGas``)."""


class HubHooks:
    """Observer for metrics and logs. Every method is a no-op here; override what you need.

    Called synchronously from the reading task: keep them cheap (a counter increment).
    """

    def on_client_state(self, client: str, connected: bool) -> None:
        """The client's subscription came up (subscribe acknowledged) or went down."""

    def on_head(self, client: str) -> None:
        """A head announcement from ``client`` was handled (after the consumer saw its events)."""

    def on_invalid(self, client: str, reason: str) -> None:
        """A frame was skipped: ``malformed_json``, ``not_notification``, ``missing_fields`` or
        ``oversized``."""

    def on_backfill_missing(self, client: str, block_hash: str) -> None:
        """The client answered ``null`` to ``eth_getBlockByHash`` for an ancestor we needed."""


@dataclass(frozen=True, slots=True)
class ClientStatus:
    """A snapshot of one client for metrics: ``lag`` is ``tip.number - head.number``."""

    name: str
    connected: bool
    head_number: int | None
    head_hash: str | None
    lag: int | None
    heads: int
    invalid: Mapping[str, int]
    connects: int
    disconnects: int
    backfill_requests: int
    backfill_missing: int
    watchdog_expiries: int


class HeadHub:
    """Owns the tracker and one :class:`Subscription` per client; implements their sink."""

    def __init__(
        self,
        clients: Iterable[tuple[str, str]],
        *,
        tracker: ChainTracker | None = None,
        on_events: EventsCallback | None = None,
        hooks: HubHooks | None = None,
        recorder: Recorder | None = None,
        options: SubscriptionOptions | None = None,
    ) -> None:
        self.tracker = tracker if tracker is not None else ChainTracker()
        self.hooks = hooks if hooks is not None else HubHooks()
        self.recorder = recorder
        self._on_events = on_events
        self.subscriptions: dict[str, Subscription] = {}
        for name, url in clients:
            if name in self.subscriptions:
                raise ValueError(f"duplicate client name {name!r}")
            self.subscriptions[name] = Subscription(name, url, self, options)
        if not self.subscriptions:
            raise ValueError("a head hub needs at least one client")

    async def run(self) -> NoReturn:
        """Run every subscription in one task group until cancelled."""
        async with asyncio.TaskGroup() as group:
            for subscription in self.subscriptions.values():
                group.create_task(subscription.run(), name=f"heads:{subscription.name}")
        raise SubscriptionEnded("every client subscription returned")  # pragma: no cover

    # -- status ---------------------------------------------------------------------------------

    def state(self, client: str) -> ClientState:
        return self.subscriptions[client].state

    def lag(self, client: str) -> int | None:
        tip = self.tracker.tip
        head = self.tracker.client_head(client)
        if tip is None or head is None:
            return None
        return tip.number - head.number

    def status(self) -> list[ClientStatus]:
        result = []
        for name, subscription in self.subscriptions.items():
            state = subscription.state
            head = self.tracker.client_head(name)
            result.append(
                ClientStatus(
                    name=name,
                    connected=state.connected,
                    head_number=None if head is None else head.number,
                    head_hash=None if head is None else head.hash,
                    lag=self.lag(name),
                    heads=state.heads,
                    invalid=dict(state.invalid),
                    connects=state.connects,
                    disconnects=state.disconnects,
                    backfill_requests=state.backfill_requests,
                    backfill_missing=state.backfill_missing,
                    watchdog_expiries=state.watchdog_expiries,
                )
            )
        return result

    # -- HeadSink: called synchronously by the subscriptions ------------------------------------

    def head(self, client: str, header: dict[str, Any], recv_ns: int) -> None:
        # ``now`` from the read time: the tracker's stall rule (``stall_seconds``) needs it.
        events = self.tracker.on_head(client, header, recv_ns * 1e-9)
        if events:
            self._dispatch(events, client, recv_ns, header)
        # After the consumer: a reorg reaction's writes must not wait behind a counter and a
        # recording line (nothing in between reads either, so the recorded order is the same).
        self.hooks.on_head(client)
        if self.recorder is not None:
            self.recorder.head(client, header)

    def block(self, client: str, header: dict[str, Any], recv_ns: int) -> None:
        if self.recorder is not None:
            self.recorder.block(client, header)
        events = self.tracker.on_block(client, header)
        if events:
            self._dispatch(events, client, recv_ns, header)

    def missing_block(self, client: str, block_hash: str) -> None:
        log.warning(
            "client %s does not have ancestor %s: dropping what waited on it", client, block_hash
        )
        self.hooks.on_backfill_missing(client, block_hash)
        self.tracker.on_missing(client, block_hash)

    def connection(self, client: str, connected: bool) -> None:
        if self.recorder is not None:
            self.recorder.event(client, "connected" if connected else "disconnected")
        self.hooks.on_client_state(client, connected)
        # A connect makes the client's next heads candidates; a disconnect takes its head out
        # of the candidates without moving the tip (DESIGN.md §3: no rollback on a lost link).
        if connected:
            events = self.tracker.on_connect(client)
        else:
            events = self.tracker.on_disconnect(client)
        if events:
            self._dispatch(events, client, time.perf_counter_ns(), {})

    def invalid(self, client: str, reason: str, detail: str) -> None:
        self.hooks.on_invalid(client, reason)

    def _dispatch(
        self, events: list[Event], client: str, recv_ns: int, header: Mapping[str, Any]
    ) -> None:
        # The consumer first: the reorg reaction must not wait behind backfill bookkeeping.
        if self._on_events is not None:
            self._on_events(events, client, recv_ns, header)
        for event in events:
            if type(event) is NeedAncestor:
                subscription = self.subscriptions.get(event.client)
                if subscription is not None:
                    subscription.request_block(event.hash)

"""Head clients: simulated ``newHeads`` streams into the REAL ``heads.tracker.ChainTracker``.

What ``heads.hub.HeadHub`` does for a frame, minus the sockets: the announcement goes to
``tracker.on_head``; when that yields events, they go to the consumer as
``on_events(events, client, recv_ns, header)`` (``broadcaster/service.py``'s ``_on_events``
hands them to ``TxManager.on_chain`` first), then each ``NeedAncestor`` is answered by hash from
the client that announced the head, after its RPC latency, through ``tracker.on_block`` (whose
events are dispatched the same way) or ``tracker.on_missing``.

A node announces a block when it adopts it (``nodes.Node.delay`` after the producer: that is the
propagation skew between clients). Scripts can also send raw header objects (malformed, on an
unknown branch, a lower sibling) with :meth:`HeadFeed.announce_raw`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from broadcaster.tx.testing.chain import Block
from broadcaster.tx.testing.nodes import Network
from heads.events import Event, NeedAncestor
from heads.tracker import ChainTracker, ForkChoice

__all__ = ["EventsConsumer", "HeadFeed"]

EventsConsumer = Callable[[list[Event], str, int, Mapping[str, Any]], None]


class HeadFeed:
    """The head hub of one host process: a tracker and the clients that feed it."""

    def __init__(
        self,
        network: Network,
        clients: Sequence[str],
        *,
        finality_depth: int,
        fork_choice: ForkChoice = "latest",
        clock_ns: Callable[[], int],
        consumer: EventsConsumer,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.network = network
        self.loop = loop
        self.clients = list(clients)
        self.tracker = ChainTracker(
            finality_depth=finality_depth, fork_choice=fork_choice, clients=len(self.clients)
        )
        self._clock_ns = clock_ns
        self._consumer = consumer
        self.alive = True
        self.connected: set[str] = set()
        self.frames = 0
        self.log: list[tuple[str, str, list[Event]]] = []  # (client, kind, events) per frame

    def stop(self) -> None:
        """The host process died: nothing more reaches this tracker."""
        self.alive = False

    def connect(self) -> None:
        """Every client (re)connects and announces its node's current head (start-up)."""
        for name in self.clients:
            self.connected.add(name)
            self.tracker.on_connect(name)
            node = self.network[name]
            if node.view.head.number > 0 and not node.down:
                self.announce(name, node.view.head)

    def disconnect(self, client: str) -> None:
        """The client's websocket dropped: its head is no candidate (the tip stays)."""
        self.connected.discard(client)
        if self.alive:
            self.tracker.on_disconnect(client)

    def announce(self, client: str, block: Block) -> None:
        if client in self.connected:
            self.announce_raw(client, block.header())

    def announce_raw(self, client: str, header: Mapping[str, Any]) -> None:
        """One ``newHeads`` frame from ``client``, exactly as given."""
        if not self.alive:
            return
        self.frames += 1
        recv_ns = self._clock_ns()
        events = self.tracker.on_head(client, dict(header))
        self.log.append((client, "head", events))
        if events:
            self._dispatch(events, client, recv_ns, header)

    def _dispatch(
        self, events: list[Event], client: str, recv_ns: int, header: Mapping[str, Any]
    ) -> None:
        self._consumer(events, client, recv_ns, header)  # the reaction first, as HeadHub does
        for event in events:
            if type(event) is NeedAncestor:
                node = self.network[event.client]
                self.loop.call_later(node.latency, self._backfill, event.client, event.hash)

    def _backfill(self, client: str, block_hash: str) -> None:
        if not self.alive:
            return
        node = self.network[client]
        block = self.network.chain.blocks.get(block_hash)
        if block is None or block_hash not in node.known or node.down:
            self.tracker.on_missing(client, block_hash)
            return
        header = block.header()
        events = self.tracker.on_block(client, header)
        self.log.append((client, "block", events))
        if events:
            self._dispatch(events, client, self._clock_ns(), header)

    def canonical_hashes(self) -> set[str]:
        return {b.hash for b in self.tracker.canonical_chain()}

"""Helpers for head-hub tests: an observing probe, a cuttable TCP proxy, running a hub.

Nothing here sleeps to wait for something: the probe wakes waiters when the hub reports, and
timeouts only turn a hang into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from broadcaster.dev.anvil import DEV_ADDRESS, AnvilNode
from heads.events import DeepReorg, Event, Extension, NeedAncestor, Rejected, Reorg
from heads.hub import HeadHub, HubHooks
from heads.recording import iter_recording
from heads.tracker import ChainTracker
from tests.anvil import Anvil

WAIT = 20.0  # seconds before a wait counts as a hang (generous: 2-core CI boxes)


def stop_anvil(node: Anvil) -> None:
    """``node.stop()`` and close its stderr pipe (``Anvil.stop`` leaves it open, which
    pytest's warnings-as-errors turns into a failure)."""
    node.stop()
    if node.process.stderr is not None:
        node.process.stderr.close()


def zero_backoff() -> Iterator[float]:
    """Reconnect at once (tests): the delays are the subscriber's, not what is under test."""
    while True:
        yield 0.01


class Probe(HubHooks):
    """Records everything a hub reports and lets a test await a condition on it."""

    def __init__(self) -> None:
        self.events: list[tuple[Event, str, int]] = []
        self.states: list[tuple[str, bool]] = []
        self.invalid: list[tuple[str, str]] = []
        self.missing: list[tuple[str, str]] = []
        self.heads: dict[str, int] = {}
        self._changed = asyncio.Event()

    # hub callbacks
    def on_events(self, events: list[Event], client: str, recv_ns: int, header: Any = None) -> None:
        for event in events:
            self.events.append((event, client, recv_ns))
        self._poke()

    def on_client_state(self, client: str, connected: bool) -> None:
        self.states.append((client, connected))
        self._poke()

    def on_head(self, client: str) -> None:
        self.heads[client] = self.heads.get(client, 0) + 1
        self._poke()

    def on_invalid(self, client: str, reason: str) -> None:
        self.invalid.append((client, reason))
        self._poke()

    def on_backfill_missing(self, client: str, block_hash: str) -> None:
        self.missing.append((client, block_hash))
        self._poke()

    def _poke(self) -> None:
        self._changed.set()

    async def until(self, predicate: Callable[[], bool], what: str = "condition") -> None:
        """Wait until ``predicate()`` holds, re-checking whenever the hub reports anything."""
        try:
            async with asyncio.timeout(WAIT):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    # views
    def reorgs(self) -> list[Reorg]:
        return [e for e, _, _ in self.events if type(e) is Reorg]

    def deep_reorgs(self) -> list[DeepReorg]:
        return [e for e, _, _ in self.events if type(e) is DeepReorg]

    def tip_changes(self) -> list[Event]:
        return [e for e, _, _ in self.events if type(e) in (Extension, Reorg, DeepReorg)]

    def connected_count(self, client: str) -> int:
        return sum(1 for name, up in self.states if name == client and up)

    def disconnected_count(self, client: str) -> int:
        return sum(1 for name, up in self.states if name == client and not up)


@contextlib.asynccontextmanager
async def running(hub: HeadHub) -> AsyncIterator[HeadHub]:
    """Run ``hub`` in a task group for the body of the ``async with``; cancel it afterwards."""
    async with asyncio.TaskGroup() as group:
        task = group.create_task(hub.run())
        try:
            yield hub
        finally:
            task.cancel()


def reorg_summary(event: Reorg | DeepReorg) -> dict[str, Any]:
    """What must match between a live run and its replay (not the client or timing)."""
    if type(event) is DeepReorg:
        return {"event": "deep_reorg", "reason": event.reason, "new_tip": event.new_tip.hash}
    assert type(event) is Reorg
    return {
        "event": "reorg",
        "depth": event.depth,
        "ancestor": event.ancestor.hash,
        "old": [h.hash for h in event.old],
        "new": [h.hash for h in event.new],
    }


def replay(path: Any, tracker: ChainTracker | None = None) -> tuple[list[Event], ChainTracker]:
    """Feed a §4 recording to a fresh tracker the way ``broadcaster replay`` does."""
    tracker = tracker if tracker is not None else ChainTracker()
    events: list[Event] = []
    for line in iter_recording(path):
        if line.kind == "head":
            assert line.header is not None
            events.extend(tracker.on_head(line.client, line.header))
        elif line.kind == "block":
            assert line.header is not None
            events.extend(tracker.on_block(line.client, line.header))
        elif line.event == "disconnected":
            events.extend(tracker.on_disconnect(line.client))
    return [e for e in events if type(e) not in (NeedAncestor, Rejected)], tracker


class CutProxy:
    """A TCP proxy on 127.0.0.1 between the hub and a node, which a test can cut.

    ``cut()`` closes every open connection and refuses new ones (they are accepted and closed
    at once) until ``restore()``; ``stall()`` keeps connections open but drops whatever the
    node sends (a silent socket, for the watchdog).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.refusing = False
        self.stalled = False
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> CutProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        self.refusing = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.refusing = False
        self.stalled = False

    def stall(self) -> None:
        self.stalled = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pipe(reader, up_writer, downstream=False))
                group.create_task(self._pipe(up_reader, writer, downstream=True))
        except* (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, downstream: bool
    ) -> None:
        while data := await reader.read(65536):
            if downstream and self.stalled:
                continue
            writer.write(data)
            await writer.drain()
        writer.transport.abort()  # one side closed: end both (the other pipe then sees EOF)


async def mined_by_nonce(node: AnvilNode) -> dict[int, dict[str, Any]]:
    """Our sender's mined transactions on the canonical chain, by nonce; a nonce twice fails."""
    head = int(await node.rpc("eth_blockNumber"), 16)
    mined: dict[int, dict[str, Any]] = {}
    for number in range(1, head + 1):
        block = await node.rpc("eth_getBlockByNumber", hex(number), True)
        for tx in block["transactions"]:
            if tx["from"].lower() == DEV_ADDRESS.lower():
                nonce = int(tx["nonce"], 16)
                assert nonce not in mined, f"nonce {nonce} mined twice"
                mined[nonce] = tx
    return mined

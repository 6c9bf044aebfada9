"""``broadcaster record``: follow live clients and write a DESIGN.md §4 recording.

    broadcaster record --client a=ws://127.0.0.1:8545 --client b=ws://... --out heads.jsonl.gz
    broadcaster record --config broadcaster.toml --out heads.jsonl --duration 600 --heads 5000

Heads, backfilled blocks (the tracker runs live, so gaps are filled by hash and the ancestors
land in the file as ``block`` lines) and connection events are recorded. It stops after
``--duration`` seconds, after ``--heads`` head lines, or on SIGINT/SIGTERM, and always closes the
file properly (a ``kill -9`` still leaves every flushed line readable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from heads.events import DeepReorg, Event, Quarantine, Rejected, Reorg
from heads.hub import HeadHub, HubHooks
from heads.recording import Recorder
from heads.subscriber import SubscriptionOptions
from heads.tracker import ChainTracker

__all__ = ["add_record_arguments", "clients_from_args", "record", "run_record"]

log = logging.getLogger(__name__)

_FLUSH_EVERY = 0.5  # seconds; also bounds what a kill -9 can lose


class _StopAfter(HubHooks):
    def __init__(self, limit: int | None, stop: asyncio.Event) -> None:
        self.limit = limit
        self.stop = stop
        self.heads = 0

    def on_head(self, client: str) -> None:
        self.heads += 1
        if self.limit is not None and self.heads >= self.limit:
            self.stop.set()

    def on_client_state(self, client: str, connected: bool) -> None:
        log.info("client %s %s", client, "connected" if connected else "disconnected")


def _report(events: list[Event], client: str, recv_ns: int, header: Mapping[str, Any]) -> None:
    for event in events:
        if type(event) is Reorg:
            log.warning(
                "reorg depth %d at %d via %s", event.depth, event.ancestor.number, event.client
            )
        elif type(event) is DeepReorg:
            log.warning("deep reorg (%s) to %d via %s", event.reason, event.new_tip.number, client)
        elif type(event) is Rejected:
            log.warning("rejected %s from %s: %s", event.hash, client, event.reason)
        elif type(event) is Quarantine:
            log.warning("client %s %s", event.client, "quarantined" if event.active else "released")


async def record(
    clients: list[tuple[str, str]],
    out: Path,
    duration: float | None,
    heads: int | None,
    *,
    options: SubscriptionOptions | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Record until ``duration`` seconds passed or ``heads`` head lines were written.

    Returns the process exit status: 0 after a clean stop, 2 for bad arguments.
    """
    if not clients:
        log.error("record: no clients (use --client NAME=URL or --config FILE)")
        return 2
    if heads is not None and heads < 1:
        log.error("record: --heads must be at least 1")
        return 2
    stop = asyncio.Event()
    hooks = _StopAfter(heads, stop)
    loop = asyncio.get_running_loop()
    with contextlib.ExitStack() as signals, Recorder(out, clock=clock) as recorder:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
                signals.callback(loop.remove_signal_handler, signum)
        # The tracker follows rules v2 with the number of clients recorded (re-anchor rule).
        tracker = ChainTracker(clients=len(clients))
        hub = HeadHub(
            clients,
            tracker=tracker,
            on_events=_report,
            hooks=hooks,
            recorder=recorder,
            options=options,
        )
        async with asyncio.TaskGroup() as group:
            following = group.create_task(hub.run(), name="record:hub")
            flushing = group.create_task(_flush_regularly(recorder), name="record:flush")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration):
                    await stop.wait()
            following.cancel()
            flushing.cancel()
        log.info(
            "recorded %d heads, %d blocks, %d events to %s",
            recorder.heads,
            recorder.blocks,
            recorder.events,
            out,
        )
    return 0


async def _flush_regularly(recorder: Recorder) -> None:
    # Lines are flushed when written at least _FLUSH_EVERY apart; this covers a quiet spell
    # right after a burst (the burst's tail would otherwise sit in the buffer).
    while True:
        await asyncio.sleep(_FLUSH_EVERY)
        recorder.flush()


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a newHeads source, e.g. a=ws://127.0.0.1:8545 (repeatable)",
    )
    parser.add_argument(
        "--config", type=Path, help="TOML config; its [[clients]] name/url are recorded"
    )
    parser.add_argument("--out", type=Path, required=True, help="recording file (.gz: gzip)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--heads", type=int, help="stop after this many head lines")
    parser.add_argument(
        "--chain-id",
        type=int,
        help="check each client's eth_chainId on connect (default: --config's chain_id)",
    )
    parser.add_argument(
        "--watchdog",
        type=float,
        default=30.0,
        help="seconds without a head before a connection is considered dead (0: never)",
    )


def clients_from_args(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``--config``'s ``[[clients]]`` first, then each ``--client NAME=URL``; names unique."""
    clients: list[tuple[str, str]] = []
    if args.config is not None:
        with open(args.config, "rb") as f:
            config: dict[str, Any] = tomllib.load(f)
        for index, entry in enumerate(config.get("clients", [])):
            name, url = (entry.get("name"), entry.get("url")) if type(entry) is dict else (0, 0)
            if type(name) is not str or type(url) is not str:
                raise ValueError(f"{args.config}: clients[{index}] needs string name and url")
            clients.append((name, url))
    for spec in args.client:
        name, sep, url = spec.partition("=")
        if not sep or not name or not url:
            raise ValueError(f"--client {spec!r}: expected NAME=URL")
        clients.append((name, url))
    seen: set[str] = set()
    for name, _ in clients:
        if name in seen:
            raise ValueError(f"client name {name!r} given twice")
        seen.add(name)
    return clients


def run_record(args: argparse.Namespace) -> int:
    """Entry point for ``broadcaster record`` (argparse namespace from add_record_arguments)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        clients = clients_from_args(args)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"broadcaster record: {exc}", file=sys.stderr)
        return 2
    watchdog = args.watchdog if args.watchdog and args.watchdog > 0 else None
    chain_id = getattr(args, "chain_id", None)
    if chain_id is None and args.config is not None:
        with open(args.config, "rb") as f:
            configured = tomllib.load(f).get("chain_id")
        chain_id = configured if type(configured) is int else None
    options = SubscriptionOptions(watchdog=watchdog, chain_id=chain_id)
    coroutine = record(clients, args.out, args.duration, args.heads, options=options)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)

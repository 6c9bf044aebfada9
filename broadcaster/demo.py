"""``broadcaster demo``: the live tracker against local anvil nodes, with injected reorgs.

Starts an anvil that mines a block a second, follows it over ``newHeads``, injects reorgs of
depth 1 and 3 (``anvil_reorg``) and a rollback, prints what the tracker saw as it happened and
stops everything. (The full service demo - signer, intents, re-signing - builds on this.)
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Mapping
from typing import Any

from broadcaster.devnet import start_anvil
from heads.events import DeepReorg, Event, Extension, Reorg
from heads.hub import HeadHub

__all__ = ["run_demo"]


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {text}", flush=True)


async def _demo(anvil_path: str | None) -> int:
    reorgs: list[Reorg] = []

    def on_events(
        events: list[Event], client: str, recv_ns: int, header: Mapping[str, Any]
    ) -> None:
        for event in events:
            if isinstance(event, Extension):
                for block in event.added:
                    _say(f"head  #{block.number} {block.hash[:14]}  ({client})")
            elif isinstance(event, Reorg):
                reorgs.append(event)
                took_us = (time.perf_counter_ns() - recv_ns) / 1000
                _say(
                    f"REORG depth {event.depth}: back to #{event.ancestor.number}, dropped "
                    f"{[b.hash[:10] for b in event.old]}, new {[b.hash[:10] for b in event.new]}"
                    f"  (noticed {took_us:.0f} µs after the frame arrived)"
                )
            elif isinstance(event, DeepReorg):
                _say(f"DEEP REORG ({event.reason}) to #{event.new_tip.number}")

    async with start_anvil("a", anvil=anvil_path, block_time=1) as node:
        _say(f"anvil a on {node.ws_url}, mining a block a second")
        hub = HeadHub([("a", node.ws_url)], on_events=on_events)
        async with asyncio.TaskGroup() as group:
            follower = group.create_task(hub.run())
            await asyncio.sleep(3.5)
            for depth in (1, 3):
                _say(f"injecting anvil_reorg depth {depth}")
                await node.rpc("anvil_reorg", depth, [])
                await asyncio.sleep(3)
            _say("injecting anvil_rollback 2 (the next mined block replaces two)")
            await node.rpc("anvil_rollback", 2)
            await asyncio.sleep(2.5)
            follower.cancel()
    _say(f"done: {len(reorgs)} reorgs seen, depths {[r.depth for r in reorgs]}")
    return 0 if len(reorgs) >= 3 else 1


def run_demo(args: argparse.Namespace) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_demo(args.anvil))

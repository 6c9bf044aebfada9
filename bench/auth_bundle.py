"""Reorg -> replacement bundle at the builder, with and without ``auth = "flashbots"``.

``python -m bench.auth_bundle [TRIALS]`` (not part of ``make bench``): a builders-only service
(``[routing] private = true``, one builder) over ``anvil --no-mining`` and the builder double
(``tests/builder_double.py``, which verifies the ``X-Flashbots-Signature`` and, with auth, refuses
an unsigned bundle). Per trial: a private intent is bundled and built into a block, then
``anvil_reorg 1`` drops it; the figure is the ``anvil_reorg`` call -> the replacement bundle's
arrival at the builder (both ``time.perf_counter_ns`` in this process). It includes anvil's own
reorg work and its ``newHeads`` push, so it is an upper bound on the service's share; what the
two runs differ by is the auth path (the enclave signs each body before it is written).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from broadcaster.api.client import GWEI, BroadcasterClient
from broadcaster.dev.anvil import start_anvil
from broadcaster.dev.stack import dev_stack
from broadcaster.tx.bundles import replacement_uuid
from signer_client.txcodec import keccak
from tests.builder_double import BuilderDouble

AUTH_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"  # anvil #4
RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _hash(raw: str) -> str:
    return "0x" + keccak(bytes.fromhex(raw[2:])).hex()


async def _until(predicate: Callable[[], Awaitable[bool]], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: a step did not happen within 20 s")
        await asyncio.sleep(0.002)


async def trials(auth: bool, n: int) -> list[float]:
    """``n`` reorg -> replacement-bundle latencies in µs."""
    out: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            node = await stack.enter_async_context(start_anvil("anvil", "--no-mining"))
            builder = await stack.enter_async_context(
                BuilderDouble(node.http_url, require_auth=auth)
            )
            endpoint: tuple[str, str, str] | tuple[str, str, str, str] = (
                ("builder", builder.url, "builder", "flashbots")
                if auth
                else ("builder", builder.url, "builder")
            )
            running = await stack.enter_async_context(
                dev_stack(
                    Path(tmp),
                    node=node,
                    endpoints=[endpoint],
                    routing_private=True,
                    auth_key=AUTH_KEY if auth else None,
                )
            )
            bot = await stack.enter_async_context(
                await BroadcasterClient.connect(running.api_url, token=running.token)
            )
            hub = running.service.hub
            assert hub is not None

            async def has_tip() -> bool:
                # "ready" may come before the subscription is up, and anvil --no-mining
                # announces nothing by itself: mine until the service follows a head.
                if hub.tracker.tip is None:
                    await node.rpc("evm_mine")
                    await asyncio.sleep(0.05)
                return hub.tracker.tip is not None

            await _until(has_tip)
            for i in range(n):
                sent = await bot.request(
                    "broadcaster_sendIntent",
                    {"to": RECIPIENT, "value": hex(1 + i), "gas": hex(21_000),
                     "maxFeePerGas": hex(3 * GWEI), "maxPriorityFeePerGas": hex(GWEI)},
                )  # fmt: skip
                uuid = replacement_uuid(sent["id"])

                async def bundled(u: str = uuid) -> bool:
                    return any(r.params.get("replacementUuid") == u for r in builder.sends())

                async def included(i: str = sent["id"]) -> bool:
                    return bool((await bot.get_intent(i))["status"] == "included")

                await _until(bundled)
                await _build(builder, uuid)
                await _until(included)
                seen = len(builder.sends())
                start = time.perf_counter_ns()
                await node.rpc("anvil_reorg", 1, [])

                def replacement(u: str = uuid, h: str = sent["hash"], k: int = seen) -> list[int]:
                    return [
                        r.at_ns
                        for r in builder.sends()[k:]
                        if r.params.get("replacementUuid") == u and _hash(r.params["txs"][0]) != h
                    ]

                async def replaced() -> bool:
                    return bool(replacement())

                await _until(replaced)
                out.append((replacement()[0] - start) / 1e3)
                await _build(builder, uuid)
                await _until(included)
            if builder.refused:
                raise AssertionError(f"the builder refused requests: {builder.refused}")
    return out


async def _build(builder: BuilderDouble, uuid: str) -> None:
    # Only this trial's bundle: a re-target of an earlier one still held would be "nonce too low".
    for key in [k for k, b in builder.bundles.items() if b.uuid != uuid]:
        del builder.bundles[key]
    await builder.build()


async def main(n: int) -> None:
    for auth in (False, True, False, True):
        xs = sorted(await trials(auth, n))
        print(
            f"auth={'flashbots' if auth else 'none':9s} n={len(xs)} "
            f"p50={statistics.median(xs):,.0f} µs min={xs[0]:,.0f} max={xs[-1]:,.0f}",
            flush=True,
        )


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))

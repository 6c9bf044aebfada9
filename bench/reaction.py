"""Reorg reaction, end to end on loopback (DESIGN.md §8): the trial driver and the implementations.

Each implementation runs in its own process against its own :class:`~bench.harness.Harness`
(same code, fresh chain). One trial with ``k`` transactions:

1. the implementation sends ``k`` new transactions (the broadcaster: ``k`` intents through its
   API with :class:`BroadcasterClient`; a peer: ``send k`` on its stdin); the driver waits until
   all 3 RPCs have them;
2. block N holding their hashes is announced; the driver waits until the implementation says
   they are included (the broadcaster: ``getIntent`` status ``included``);
3. a sibling N' with no transactions is announced (a reorg that drops them). The figure is
   from the harness writing that frame to the LAST of the 3 RPCs receiving the LAST of the
   ``k`` re-signed transactions (any hash the RPCs never saw before; re-sent old bytes do not
   count);
4. block N'+1 holding the re-signed hashes settles the nonces; the driver waits until the
   implementation sees them included, then until its background work after a reorg is done
   (the broadcaster resyncs nonces 0.2 s after a reorg), so it never overlaps a measurement.

Trials run round-robin across the implementations (A, B, C, D, A, B, ...), so slow drifts in
the load of this shared 2-core machine spread evenly over all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import Harness
from bench.service import RunningService, reaction_lines, running_broadcaster
from broadcaster.api.client import GWEI, BroadcasterClient

__all__ = [
    "BroadcasterImpl",
    "Impl",
    "PeerImpl",
    "PrivateBroadcasterImpl",
    "ReactionResult",
    "run_reaction",
]

REPO = Path(__file__).resolve().parents[1]
TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@dataclass
class ReactionResult:
    impl: str
    k: int
    samples_us: list[float] = field(default_factory=list)
    in_process_us: list[float] = field(default_factory=list)
    error: str | None = None


class Impl:
    """One implementation under test (its process, talking to its own harness)."""

    name: str
    label: str
    after_reorg_s = 0.0  # quiet time after a reorg frame before the next measurement

    def __init__(self, harness: Harness) -> None:
        self.harness = harness

    async def start(self, workdir: Path) -> None:
        raise NotImplementedError

    async def send(self, k: int) -> None:
        raise NotImplementedError

    async def wait_anchored(self, number: int) -> None:
        raise NotImplementedError

    async def wait_included(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def in_process(self, k: int) -> list[float]:
        return []


class PeerImpl(Impl):
    """A peer process speaking the line protocol of :mod:`bench.peers`."""

    def __init__(self, harness: Harness, name: str, label: str, module: str, *extra: str) -> None:
        super().__init__(harness)
        self.name = name
        self.label = label
        self.module = module
        self.extra = extra
        self.process: asyncio.subprocess.Process | None = None
        self.stderr_path: Path | None = None

    async def start(self, workdir: Path) -> None:
        self.stderr_path = workdir / f"{self.name}.stderr"
        rpcs = [a for url in self.harness.rpc_urls for a in ("--rpc", url)]
        with open(self.stderr_path, "wb") as err:  # noqa: ASYNC230 - once, before timing
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self.module, "--ws", self.harness.ws_url, *rpcs,
                *self.extra, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=err, cwd=REPO,
            )  # fmt: skip
        await self._expect("ready", 60)

    async def _expect(self, word: str, within: float = 10.0) -> None:
        assert self.process is not None and self.process.stdout is not None
        async with asyncio.timeout(within):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    err = self.stderr_path.read_text()[-2000:] if self.stderr_path else ""
                    raise RuntimeError(f"{self.name} exited before {word!r}:\n{err}")
                if line.decode().strip() == word:
                    return

    async def send(self, k: int) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(f"send {k}\n".encode())
        await self.process.stdin.drain()

    async def wait_anchored(self, number: int) -> None:
        await self._expect("anchored")

    async def wait_included(self) -> None:
        await self._expect("included")

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(Exception):
            assert process.stdin is not None
            process.stdin.write(b"quit\n")
            await process.stdin.drain()
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()


class BroadcasterImpl(Impl):
    """``broadcaster run`` + the enclave app; intents through the API."""

    name = "broadcaster"
    label = "broadcaster (this project)"
    after_reorg_s = 0.26  # its nonce resync runs 0.2 s after a reorg: keep it off the next trial

    def __init__(self, harness: Harness) -> None:
        super().__init__(harness)
        self._stack = contextlib.AsyncExitStack()
        self.service: RunningService | None = None
        self.client: BroadcasterClient | None = None
        self.ids: list[str] = []

    async def start(self, workdir: Path) -> None:
        self.service = await self._stack.enter_async_context(
            running_broadcaster(self.harness, workdir / self.name)  # own journal
        )
        self.client = await self.service.client()
        self._stack.push_async_callback(self.client.close)

    async def send(self, k: int) -> None:
        client = self.client
        assert client is not None
        sent = await asyncio.gather(
            *(
                client.send_intent(
                    to=TO, value=1, gas=21_000, max_fee_per_gas=30 * GWEI,
                    max_priority_fee_per_gas=2 * GWEI,
                )
                for _ in range(k)
            )
        )  # fmt: skip
        self.ids = [s["id"] for s in sent]

    async def wait_anchored(self, number: int) -> None:
        assert self.client is not None
        async with asyncio.timeout(30):
            while int(await self.client.request("eth_blockNumber"), 16) != number:  # noqa: ASYNC110
                await asyncio.sleep(0.005)  # polling the API is the only way to ask

    async def wait_included(self) -> None:
        client = self.client
        assert client is not None
        waiting = list(self.ids)
        async with asyncio.timeout(10):
            while waiting:
                states = await asyncio.gather(*(client.get_intent(i) for i in waiting))
                waiting = [i for i, s in zip(waiting, states, strict=True)
                           if s["status"] != "included"]  # fmt: skip
                if waiting:
                    await asyncio.sleep(0.002)

    async def stop(self) -> None:
        await self._stack.aclose()

    def in_process(self, k: int) -> list[float]:
        if self.service is None:
            return []
        return [us for dropped, us in reaction_lines(self.service.log_path) if dropped == k]


class PrivateBroadcasterImpl(BroadcasterImpl):
    """The same service with ``[routing] private = true`` and the 3 harness RPCs as builders:
    the figure is then the reorg frame -> the replacement *bundle* (``eth_sendBundle`` for the
    new tip + 1) at the last of 3 builders (DESIGN.md 5a: the same reaction, the same budget)."""

    name = "private"
    label = "broadcaster, private intents -> 3 builders (eth_sendBundle)"


async def _trial(impl: Impl, k: int) -> tuple[float, float]:
    """One reorg; returns (end-to-end µs, the reorg frame's write time in s)."""
    harness = impl.harness
    chain = harness.chain
    step = "the first transactions at all 3 RPCs"
    try:
        chain.pending_nonce = chain.mined_count() + k
        waiter = harness.expect(k)
        await impl.send(k)
        await harness.wait(waiter, 20)
        block = chain.child(chain.tip, waiter.hashes())
        harness.announce(block)
        step = "inclusion in block N"
        await impl.wait_included()
        await asyncio.sleep(0.005)  # everyone idle before the frame
        sibling = chain.child(chain.blocks[block.parent_hash])
        waiter = harness.expect(k)
        step = "the re-signed transactions at all 3 RPCs"
        gc.disable()
        try:
            t0 = harness.announce(sibling)
            started = time.monotonic()
            await harness.wait(waiter, 10)
        finally:
            gc.enable()
        sample_us = (waiter.last_ns() - t0) / 1000
        harness.announce(chain.child(sibling, waiter.hashes()))
        step = "inclusion of the re-signed transactions in block N'+1"
        await impl.wait_included()
    except TimeoutError:
        raise RuntimeError(f"timed out waiting for {step}") from None
    return sample_us, started


async def run_reaction(
    impls: Sequence[Impl],
    plan: Sequence[tuple[int, int, Sequence[str]]],
    workdir: Path,
    *,
    warmup: int = 5,
    progress: Any = None,
) -> list[ReactionResult]:
    """``plan``: ``(k, trials, implementation names)``. Impls are started and stopped here."""
    results: dict[tuple[str, int], ReactionResult] = {}
    alive: list[Impl] = []
    errors: dict[str, str] = {}
    try:
        for impl in impls:
            try:
                await impl.start(workdir)
                await impl.harness.wait_subscribed()
                anchor = impl.harness.chain.child(impl.harness.chain.tip)
                impl.harness.announce(anchor)
                await impl.wait_anchored(anchor.number)
                alive.append(impl)
            except Exception as exc:  # reported in the table, the others still run
                errors[impl.name] = f"start: {type(exc).__name__}: {exc}"
        for k, trials, names in plan:
            chosen = [i for i in alive if i.name in names]
            for impl in chosen:
                results[(impl.name, k)] = ReactionResult(impl.name, k)
            for round_no in range(warmup + trials):
                for impl in chosen:
                    if impl.name in errors:
                        continue
                    try:
                        sample, started = await _trial(impl, k)
                    except Exception as exc:
                        errors[impl.name] = f"k={k} trial {round_no}: {type(exc).__name__}: {exc}"
                        continue
                    if round_no >= warmup:
                        results[(impl.name, k)].samples_us.append(sample)
                    quiet = impl.after_reorg_s - (time.monotonic() - started)
                    if quiet > 0:
                        await asyncio.sleep(quiet)
                if progress is not None:
                    progress(k, round_no + 1, warmup + trials)
            for impl in chosen:
                in_process = impl.in_process(k)
                results[(impl.name, k)].in_process_us = in_process[warmup:]
    finally:
        for impl in alive:
            with contextlib.suppress(Exception):
                await impl.stop()
    for impl in impls:
        for k, _, names in plan:
            if impl.name in names:
                result = results.setdefault((impl.name, k), ReactionResult(impl.name, k))
                if impl.name in errors:
                    result.error = errors[impl.name]
    return list(results.values())

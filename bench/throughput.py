"""Intent throughput (DESIGN.md §8: accepted -> journaled -> signed -> fanned out, >= 2,500/s).

Many concurrent API connections (raw websockets, requests pre-encoded, a window of requests in
flight on each) submit ``broadcaster_sendIntent`` to a running service for N seconds after a
warm-up. An answer comes back once the intent is journaled (the service awaits the journal's
flush), signed by the enclave app and handed to the fan-out; the figure counts the answers in
the window per second, and the harness then checks that all 3 RPCs received those hashes
(``delivered``). CPU seconds of every process over the window show where the time goes.

Peer: :mod:`bench.peers.web3load` (web3.py + eth-account, signs and sends to the 3 RPCs itself)
against its own fresh harness.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

from bench.harness import Harness
from bench.service import TOKEN, reaction_lines, running_broadcaster

__all__ = ["ThroughputRun", "broadcaster_throughput", "peer_throughput"]

_TICK = os.sysconf("SC_CLK_TCK")
_REPO = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class ThroughputRun:
    name: str
    completed: int
    seconds: float
    delivered: int
    errors: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    # In-process reorg reactions (µs, 1 dropped tx) made while the intents streamed: the
    # service's own log lines, as the reaction section reads them.
    reaction_us: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


async def _await_delivery(harness: Harness, hashes: set[str], within: float = 5.0) -> int:
    deadline = time.monotonic() + within
    while True:
        delivered = min(len(hashes & got) for got in harness.received)
        if delivered == len(hashes) or time.monotonic() > deadline:
            return delivered
        await asyncio.sleep(0.05)


async def broadcaster_throughput(
    workdir: Path,
    seconds: float,
    *,
    connections: int = 8,
    window: int = 32,
    warmup: float = 1.0,
    reactions: bool = True,
) -> ThroughputRun:
    async with (
        Harness() as harness,
        running_broadcaster(
            harness, workdir / "broadcaster-throughput", unthrottled_api=True
        ) as service,
    ):
        harness.keep_arrivals = False
        intent = (
            b'"method":"broadcaster_sendIntent","params":[{"to":'
            b'"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","value":"0x1","gas":"0x5208",'
            b'"maxFeePerGas":"0x6fc23ac00","maxPriorityFeePerGas":"0x77359400"}]}'
        )
        loop = asyncio.get_running_loop()
        start = loop.time() + warmup
        stop = start + seconds
        answered: set[str] = set()
        by_nonce: dict[int, str] = {}  # every answered intent's first hash, by its nonce
        errors = 0
        cpu_before: dict[str, float] = {}

        async def client(index: int) -> None:
            nonlocal errors
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with connect(service.api_url, additional_headers=headers, compression=None,
                               max_size=None) as ws:  # fmt: skip
                ids = iter(range(index * 10**8, (index + 1) * 10**8))

                def request() -> bytes:
                    return b'{"jsonrpc":"2.0","id":%d,' % next(ids) + intent

                for _ in range(window):
                    await ws.send(request(), text=True)
                in_flight = window
                while in_flight:
                    reply = orjson.loads(await ws.recv(decode=False))
                    in_flight -= 1
                    now = loop.time()
                    result = reply.get("result")
                    if type(result) is dict and type(result.get("hash")) is str:
                        by_nonce[int(result["nonce"], 16)] = result["hash"]
                        if start <= now < stop:
                            answered.add(result["hash"])
                    elif start <= now < stop:
                        errors += 1  # an error, or accepted but not signed (no hash)
                    if now < stop:
                        await ws.send(request(), text=True)
                        in_flight += 1

        pids = {"service": service.process.pid, "enclave": service.enclave_pid,
                "harness+load": os.getpid()}  # fmt: skip

        async def sample_cpu() -> None:
            await asyncio.sleep(max(0.0, start - loop.time()))
            cpu_before.update({name: cpu_seconds(pid) for name, pid in pids.items()})

        def delivered_everywhere(tx_hash: str | None) -> bool:
            return tx_hash is not None and all(tx_hash in got for got in harness.received)

        async def reorgs() -> None:
            """While the intents stream, every ~0.5 s: the intents every RPC has received so far
            mined (all but the newest in one block, the newest alone in the next), that last
            block replaced by an empty sibling once the service has seen our tx in it (a 1-deep
            reorg dropping 1 tx: the reaction), then the same tx included again on the new
            branch, so the chain's nonce count always matches what it holds (nothing looks
            foreign). Mining the stream keeps the dropped nonce next to the newest signed one,
            as on a real chain: the enclave's nonce memory refuses a re-sign more than its
            window (1,024 nonces) below the newest, which an unmined 2 s stream passes."""
            await asyncio.sleep(max(0.0, start - loop.time()))
            chain = harness.chain
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with connect(service.api_url, additional_headers=headers, compression=None,
                               max_size=None) as probe:  # fmt: skip
                ids = iter(range(10**12, 2 * 10**12))

                async def included(tx_hash: str, within: float) -> bool:
                    deadline = loop.time() + within
                    while loop.time() < deadline:
                        ask = {"jsonrpc": "2.0", "id": next(ids),
                               "method": "broadcaster_getIntent", "params": [tx_hash]}  # fmt: skip
                        await probe.send(orjson.dumps(ask), text=True)
                        reply = orjson.loads(await probe.recv(decode=False))
                        result = reply.get("result")
                        if type(result) is dict and result.get("status") == "included":
                            return True
                        await asyncio.sleep(0.01)
                    return False

                while loop.time() < stop - 0.6:
                    mined = chain.mined_count()
                    top = mined
                    while delivered_everywhere(by_nonce.get(top)):
                        top += 1
                    if top - mined < 2:
                        await asyncio.sleep(0.05)
                        continue
                    bulk = chain.child(chain.tip, [by_nonce[n] for n in range(mined, top - 1)])
                    harness.announce(bulk)
                    tx_hash = by_nonce[top - 1]
                    harness.announce(chain.child(bulk, [tx_hash]))
                    if not await included(tx_hash, 1.5):  # not seen yet: try again on top of it
                        continue
                    sibling = chain.child(bulk)
                    harness.announce(sibling)
                    await asyncio.sleep(0.25)  # the reaction, then the nonce resync 0.2 s after
                    harness.announce(chain.child(sibling, [tx_hash]))
                    await asyncio.sleep(0.1)

        sampler = loop.create_task(sample_cpu())
        reorging = loop.create_task(reorgs()) if reactions else None
        await asyncio.gather(*(client(i) for i in range(connections)))
        await sampler
        cpu = {n: cpu_seconds(p) - cpu_before.get(n, 0.0) for n, p in pids.items()}
        if reorging is not None:
            await reorging
        delivered = await _await_delivery(harness, answered)
        run = ThroughputRun("broadcaster", len(answered), seconds, delivered, errors, cpu)
        run.reaction_us = [us for dropped, us in reaction_lines(service.log_path) if dropped == 1]
        return run


async def peer_throughput(workdir: Path, seconds: float, *, workers: int = 16) -> ThroughputRun:
    async with Harness() as harness:
        harness.keep_arrivals = False
        rpcs = [a for url in harness.rpc_urls for a in ("--rpc", url)]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.peers.web3load", *rpcs, "--seconds", str(seconds),
            "--workers", str(workers), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=_REPO,
        )  # fmt: skip
        out, err = await process.communicate()
        if process.returncode != 0:
            return ThroughputRun("web3", 0, seconds, 0, error=err.decode()[-2000:])
        result = orjson.loads(out.splitlines()[-1])
        hashes = set(result["hashes"])
        delivered = await _await_delivery(harness, hashes)
        return ThroughputRun("web3", result["completed"], seconds, delivered)

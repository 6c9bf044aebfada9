"""Intent to wire (DESIGN.md §8): a bot's intent -> its signed tx at the last of 3 RPCs.

The broadcaster: the bench (the bot) writes one ``broadcaster_sendIntent`` frame on a kept-alive
websocket to the service's API; the service journals it (fsync), has the enclave app sign it over
its unix socket, and writes it to the harness's 3 RPCs, which stamp each arrival. The figure is
the frame write (``perf_counter_ns`` just before ``send``) to the LAST RPC's arrival stamp of
that hash; the next trial starts once the answer is back and every RPC has the tx, after a pause.

The peers (:mod:`bench.peers.intent_bot`, their own processes, each against its own fresh
harness): the hand-written bot (eth-account in-process, aiohttp to the 3 RPCs), the web3.py bot,
and the harness floor (the hand-written bot posting a pre-signed tx). Each stamps its ``t0``
(CLOCK_MONOTONIC, as the harness does) before signing.

In process: ``broadcaster_intent_seconds`` scraped from the service's ``/metrics`` before and after
the trials; p50/p99 are interpolated inside the histogram's buckets as Prometheus'
``histogram_quantile`` does (bucket edges at 50, 75, 100, 125, 150, 200, 250, 300, 400, 500 µs...).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from websockets.asyncio.client import connect

from bench.harness import Harness
from bench.service import TOKEN, running_broadcaster

__all__ = ["IntentResult", "run_intent"]

_REPO = Path(__file__).resolve().parents[1]
_BUCKET = re.compile(r'^broadcaster_intent_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)
_INTENT = (
    b'"method":"broadcaster_sendIntent","params":[{"to":'
    b'"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","value":"0x1","gas":"0x5208",'
    b'"maxFeePerGas":"0x6fc23ac00","maxPriorityFeePerGas":"0x77359400"}]}'
)


@dataclass
class IntentResult:
    impl: str
    samples_us: list[float] = field(default_factory=list)
    in_process: dict[str, float | None] = field(default_factory=dict)  # p50/p99/count, µs
    error: str | None = None


def _last_arrival(harness: Harness, tx_hash: str) -> int | None:
    stamps: dict[int, int] = {}
    for arrival in harness.arrivals:
        if arrival.tx_hash == tx_hash and arrival.rpc not in stamps:
            stamps[arrival.rpc] = arrival.t_ns
    return max(stamps.values()) if len(stamps) == harness.n_rpcs else None


async def _wait_arrival(harness: Harness, tx_hash: str, within: float = 5.0) -> int | None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(tx_hash in got for got in harness.received):
            return _last_arrival(harness, tx_hash)
        await asyncio.sleep(0.001)
    return None


def buckets(text: str) -> list[tuple[float, float]]:
    """``(le, cumulative count)`` of ``broadcaster_intent_seconds``, ascending."""
    return sorted((float(le), float(count)) for le, count in _BUCKET.findall(text))


Buckets = list[tuple[float, float]]


def quantile(q: float, before: Buckets, after: Buckets) -> float | None:
    """``histogram_quantile(q)`` over the observations between two scrapes, in µs."""
    counts = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    if not counts or counts[-1][1] <= 0:
        return None
    rank = q * counts[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in counts:
        if count >= rank:
            if le == float("inf"):
                return lower_le * 1e6
            width = count - lower_count
            share = (rank - lower_count) / width if width else 0.0
            return (lower_le + (le - lower_le) * share) * 1e6
        lower_le, lower_count = le, count
    return None


async def _metrics(session: aiohttp.ClientSession, url: str) -> list[tuple[float, float]]:
    async with session.get(url) as response:
        return buckets(await response.text())


async def broadcaster_intent(workdir: Path, trials: int, warmup: int, pause: float) -> IntentResult:
    result = IntentResult("broadcaster")
    async with (
        Harness() as harness,
        running_broadcaster(harness, workdir / "broadcaster-intent") as service,
        aiohttp.ClientSession() as session,
    ):
        config = tomllib.loads((workdir / "broadcaster-intent" / "broadcaster.toml").read_text())
        metrics_url = f"http://{config['metrics']['listen']}/metrics"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with connect(
            service.api_url, additional_headers=headers, compression=None, max_size=None
        ) as ws:
            before: list[tuple[float, float]] = []
            for i in range(warmup + trials):
                if i == warmup:
                    before = await _metrics(session, metrics_url)
                frame = b'{"jsonrpc":"2.0","id":%d,' % i + _INTENT
                t0 = time.perf_counter_ns()
                await ws.send(frame, text=True)
                reply = orjson.loads(await ws.recv(decode=False))
                tx_hash = (reply.get("result") or {}).get("hash")
                if type(tx_hash) is not str:
                    result.error = f"the service answered {reply}"
                    break
                last = await _wait_arrival(harness, tx_hash)
                if last is None:
                    result.error = f"{tx_hash} did not reach every RPC"
                    break
                if i >= warmup:
                    result.samples_us.append((last - t0) / 1000)
                await asyncio.sleep(pause)
            after = await _metrics(session, metrics_url)
        if before and after:
            result.in_process = {
                "p50": quantile(0.5, before, after),
                "p99": quantile(0.99, before, after),
                "count": after[-1][1] - before[-1][1],
            }
    return result


async def peer_intent(mode: str, trials: int, warmup: int, pause: float) -> IntentResult:
    result = IntentResult(mode)
    async with Harness() as harness:
        rpcs = [a for url in harness.rpc_urls for a in ("--rpc", url)]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.peers.intent_bot", "--mode", mode, *rpcs,
            "--trials", str(warmup + trials), "--pause-ms", str(pause * 1000),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=_REPO,
        )  # fmt: skip
        out, err = await process.communicate()
        if process.returncode != 0:
            result.error = err.decode(errors="replace")[-2000:]
            return result
        lines = out.decode().split()
        pairs = list(zip(lines[0::2], lines[1::2], strict=True))[warmup:]
        for t0, tx_hash in pairs:
            last = _last_arrival(harness, tx_hash)
            if last is None:
                result.error = f"{mode}: {tx_hash} did not reach every RPC"
                break
            result.samples_us.append((last - int(t0)) / 1000)
    return result


async def run_intent(
    workdir: Path, trials: int, *, warmup: int = 10, pause: float = 0.02
) -> list[IntentResult]:
    """The broadcaster and the three peers, one after the other, in that order."""
    results = [await broadcaster_intent(workdir, trials, warmup, pause)]
    results += [await peer_intent(mode, trials, warmup, pause) for mode in ("raw", "web3", "floor")]
    return results


if __name__ == "__main__":  # python -m bench.intent [TRIALS]: the figures alone
    import tempfile

    import uvloop

    from bench.report import pct

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp:
        for r in uvloop.run(run_intent(Path(tmp), count)):
            print(
                f"{r.impl:12s} p50 {pct(r.samples_us, 50)} p99 {pct(r.samples_us, 99)} µs "
                f"in-process {r.in_process} error {r.error}"
            )

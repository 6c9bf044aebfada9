"""Fan-out write path against 3 local anvils: submit() -> last RPC write, and round trips.

    .venv/bin/python -m bench.fanout [--n 2000] [--ws] [--k 10,100] [--rounds 20]

Figures (µs): ``submit->last write`` is what the reorg reaction pays for the fan-out
(``broadcaster_reaction_seconds`` ends at the last write); ``submit() call, whole`` is how long
the call takes until it returns to its caller (the writes plus the fan-out's bookkeeping after
them); ``round trip`` is submit -> all 3 replies. The ``null transports`` figures are the same
two over transports whose writes go nowhere: the fan-out's own cost, without syscalls or
anvil. The aiohttp baseline posts the same pre-built body through one kept-alive
``ClientSession`` per endpoint (its write time is not observable, so only its round trip is).

Then k transactions at once (a reorg dropping k): ``submit_many`` (one JSON-RPC batch per
endpoint), k ``submit()`` calls (the first ones written at once, the rest batched by the lane
workers), and k ``submit()`` calls "unbatched" (``max_batch=1``: one request per transaction,
the fan-out before batching). Each round starts with idle endpoints and ends when all k x 3
replies are in; ``requests`` is the number of HTTP/ws requests per endpoint per round.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from contextlib import ExitStack

import aiohttp
from eth_account import Account

from broadcaster.rpc.error_table import ErrorKind
from broadcaster.rpc.fanout import BroadcastResult, Endpoint, FanOut, Written
from broadcaster.rpc.transport.base import OnReply, Reply, encode_send_raw
from tests.anvil import DEV_ADDRESS, DEV_KEY, running_anvil


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(label: str, samples_ns: list[int]) -> None:
    us = [s / 1000 for s in samples_ns]
    print(
        f"{label:40s} p50 {statistics.median(us):8.1f}  p90 {pct(us, 0.9):8.1f}"
        f"  p99 {pct(us, 0.99):8.1f}  (n={len(us)})"
    )


def signed(n: int) -> list[tuple[bytes, bytes]]:
    account = Account.from_key(DEV_KEY)
    out = []
    for nonce in range(n):
        tx = {
            "type": 2,
            "chainId": 31337,
            "nonce": nonce,
            "to": DEV_ADDRESS,
            "value": 1,
            "gas": 21000,
            "maxFeePerGas": 3 * 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
        s = account.sign_transaction(tx)
        out.append((bytes(s.raw_transaction), bytes(s.hash)))
    return out


async def bench_fanout(urls: list[str], txs: list[tuple[bytes, bytes]]) -> None:
    writes: list[int] = []
    replies: list[int] = []
    done = asyncio.Event()

    def on_written(w: Written) -> None:
        writes.append(w.written_ns)

    def on_result(r: BroadcastResult) -> None:
        replies.append(time.perf_counter_ns())
        if len(replies) == len(urls):
            done.set()

    endpoints = [Endpoint(f"rpc{i}", url) for i, url in enumerate(urls)]
    to_write: list[int] = []
    in_submit: list[int] = []
    round_trip: list[int] = []
    async with FanOut(endpoints, on_result=on_result, on_written=on_written) as fanout:
        for raw, tx_hash in txs:
            writes.clear()
            replies.clear()
            done.clear()
            t0 = time.perf_counter_ns()
            submitted = fanout.submit(raw, tx_hash)
            t1 = time.perf_counter_ns()
            async with asyncio.timeout(10):
                await done.wait()
            if submitted.written + len(writes) == len(urls):  # later writes: on_written
                to_write.append(max([submitted.last_ns, *writes]) - t0)
            round_trip.append(max(replies) - t0)
            in_submit.append(t1 - t0)
        fast = sum(s.fast_writes for s in fanout.stats().values())
    report("fanout submit->last write", to_write)
    report("fanout submit() call, whole", in_submit)
    report("fanout submit->all replies", round_trip)
    print(f"  (writes done inside submit(): {fast} of {len(txs) * len(urls)})")


async def bench_k(
    urls: list[str], txs: list[tuple[bytes, bytes]], k: int, rounds: int, mode: str
) -> None:
    writes: list[int] = []
    answered: list[int] = []
    refused: list[BroadcastResult] = []
    done = asyncio.Event()

    def on_written(w: Written) -> None:
        writes.append(w.written_ns)

    def on_result(r: BroadcastResult) -> None:
        answered.append(time.perf_counter_ns())
        if r.kind is not ErrorKind.ACCEPTED:
            refused.append(r)
        if len(answered) == k * len(urls):
            done.set()

    endpoints = [Endpoint(f"rpc{i}", url) for i, url in enumerate(urls)]
    max_batch = 1 if mode.endswith("unbatched") else 100
    to_write: list[int] = []
    in_call: list[int] = []
    round_trip: list[int] = []
    async with FanOut(
        endpoints, on_result=on_result, on_written=on_written, max_batch=max_batch
    ) as fanout:
        for r in range(rounds):
            chunk = txs[r * k : (r + 1) * k]
            writes.clear()
            answered.clear()
            done.clear()
            t0 = time.perf_counter_ns()
            if mode == "submit_many":
                dones = [fanout.submit_many([(raw, tx_hash, None) for raw, tx_hash in chunk])]
            else:
                dones = [fanout.submit(raw, tx_hash) for raw, tx_hash in chunk]
            in_call.append(time.perf_counter_ns() - t0)
            async with asyncio.timeout(30):
                await done.wait()
            to_write.append(max([d.last_ns for d in dones] + writes) - t0)
            round_trip.append(max(answered) - t0)
        stats = list(fanout.stats().values())
    jobs = sum(s.fast_writes + s.queued_writes for s in stats)
    requests = jobs - sum(s.batched_jobs for s in stats) + sum(s.batches for s in stats)
    per_round = requests / len(stats) / rounds
    report(f"k={k:<3d} {mode}: ->last write", to_write)
    report(f"k={k:<3d} {mode}: the call(s), whole", in_call)
    report(f"k={k:<3d} {mode}: ->replies", round_trip)
    print(f"  (requests per endpoint per round: {per_round:.1f}; not accepted: {len(refused)})")


class NullTransport:
    """A :class:`Transport` whose writes go nowhere: the fan-out's own cost, no syscalls."""

    def __init__(self, name: str, on_reply: OnReply) -> None:
        self.name = name
        self.on_reply = on_reply
        self.unanswered: list[int] = []

    def ready(self) -> bool:
        return True

    def send(self, rid: int, body: bytes, ids: Sequence[int] = ()) -> None:
        self.unanswered.append(rid)

    def forget(self, rid: int) -> None:
        pass

    async def wait_ready(self) -> None:
        pass

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def answer_all(self, body: bytes) -> None:
        unanswered, self.unanswered = self.unanswered, []
        for rid in unanswered:
            self.on_reply(rid, Reply(status=200, body=body % rid))


async def bench_null(txs: list[tuple[bytes, bytes]]) -> None:
    """submit() over 3 null transports: what the fan-out itself costs per call, in-process."""
    nulls: list[NullTransport] = []

    def factory(endpoint: Endpoint, on_reply: OnReply) -> NullTransport:
        nulls.append(NullTransport(endpoint.name, on_reply))
        return nulls[-1]

    endpoints = [Endpoint(f"null{i}", f"http://null{i}") for i in range(3)]
    to_write: list[int] = []
    in_submit: list[int] = []
    async with FanOut(
        endpoints,
        on_result=lambda r: None,
        on_written=lambda w: None,
        transport_factory=factory,
    ) as fanout:
        for raw, tx_hash in txs:
            body = b'{"jsonrpc":"2.0","id":%%d,"result":"0x%s"}' % tx_hash.hex().encode()
            t0 = time.perf_counter_ns()
            done = fanout.submit(raw, tx_hash)
            t1 = time.perf_counter_ns()
            to_write.append(done.last_ns - t0)
            in_submit.append(t1 - t0)
            for null in nulls:
                null.answer_all(body)
    report("null transports: submit->last write", to_write)
    report("null transports: submit() call, whole", in_submit)


async def bench_aiohttp(urls: list[str], txs: list[tuple[bytes, bytes]]) -> None:
    sessions = [aiohttp.ClientSession() for _ in urls]
    samples: list[int] = []
    headers = {"content-type": "application/json"}
    try:
        for i, (raw, _) in enumerate(txs):
            body = encode_send_raw(i, raw.hex().encode())
            t0 = time.perf_counter_ns()

            async def post(session: aiohttp.ClientSession, url: str, data: bytes) -> None:
                async with session.post(url, data=data, headers=headers) as response:
                    await response.read()

            await asyncio.gather(*(post(s, u, body) for s, u in zip(sessions, urls, strict=True)))
            samples.append(time.perf_counter_ns() - t0)
    finally:
        for session in sessions:
            await session.close()
    report("aiohttp gather->all replies", samples)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--ws", action="store_true", help="websocket endpoints instead of http")
    parser.add_argument("--k", default="10,100", help="batch sizes for the k-at-once figures")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per k-at-once figure")
    args = parser.parse_args()
    ks = [int(k) for k in args.k.split(",") if k]
    txs = signed(max([args.n, *(k * args.rounds for k in ks)]))
    await bench_null(txs[: args.n])
    with ExitStack() as stack:
        nodes = [stack.enter_context(running_anvil("--no-mining")) for _ in range(3)]
        urls = [n.ws_url if args.ws else n.http_url for n in nodes]
        await bench_fanout(urls, txs[: args.n])
        for node in nodes:  # fresh pools for the baseline
            node.rpc("anvil_dropAllTransactions")
        if not args.ws:
            await bench_aiohttp(urls, txs[: args.n])
        for k in ks:
            for mode in ("submit_many", "k submit()", "k submit() unbatched"):
                for node in nodes:
                    node.rpc("anvil_dropAllTransactions")
                await bench_k(urls, txs, k, args.rounds, mode)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())

"""The bench harness measures what it says (no timing assertions on the real implementations).

* a fake peer that sleeps 5 ms before sending shows at least that delay in every trial, and the
  harness floor (the same reactor without the sleep) measures below it;
* the RPC endpoints stamp and answer split, pipelined and batched requests;
* the report's ratios point the right way and ``--quick`` writes results of the expected shape.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.harness import Harness
from bench.reaction import PeerImpl, run_reaction
from bench.report import deltas, pct, row, signing_rows

REPO = Path(__file__).resolve().parents[2]


async def test_a_delayed_fake_shows_its_delay_and_the_floor_measures_below_it(
    tmp_path: Path,
) -> None:
    async with Harness() as floor_harness, Harness() as fake_harness:
        floor = PeerImpl(floor_harness, "floor", "floor", "bench.peers.floor")
        fake = PeerImpl(fake_harness, "fake", "fake", "bench.peers.floor", "--delay-ms", "5")
        results = await run_reaction(
            [floor, fake], [(1, 8, ("floor", "fake")), (3, 2, ("fake",))], tmp_path, warmup=1
        )
    by = {(r.impl, r.k): r for r in results}
    assert all(r.error is None for r in results), [r.error for r in results]
    assert len(by[("floor", 1)].samples_us) == 8
    assert min(by[("fake", 1)].samples_us) >= 5000
    assert min(by[("fake", 3)].samples_us) >= 5000  # the last of 3 txs, still after the sleep
    floor_p50, fake_p50 = pct(by[("floor", 1)].samples_us, 50), pct(by[("fake", 1)].samples_us, 50)
    assert floor_p50 is not None and fake_p50 is not None
    assert floor_p50 < fake_p50


async def test_the_rpc_endpoints_stamp_split_pipelined_and_batched_requests() -> None:
    raw = bytes.fromhex("02f86b827a6980843b9aca00")  # any bytes: the harness only hashes them
    one = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction",
                        "params": ["0x" + raw.hex()]})  # fmt: skip
    batch = orjson.dumps([
        {"jsonrpc": "2.0", "id": 2, "method": "eth_sendRawTransaction", "params": ["0x01"]},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_getTransactionCount",
         "params": ["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "latest"]},
    ])  # fmt: skip

    def http(body: bytes) -> bytes:
        return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    async with Harness() as harness:
        waiter = harness.expect(2)
        port = int(harness.rpc_urls[1].rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = http(one) + http(batch)
        writer.write(data[:10])
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(data[10:])
        await writer.drain()
        replies = []
        for _ in range(2):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            replies.append(orjson.loads(await reader.readexactly(length)))
        writer.close()
        assert replies[0]["result"] == "0x" + __import__("sha3").keccak_256(raw).hexdigest()
        assert [r["id"] for r in replies[1]] == [2, 3]
        assert replies[1][1]["result"] == "0x0"
        assert harness.raw_counts == [0, 2, 0]
        assert [a.rpc for a in harness.arrivals] == [1, 1]
        assert all(a.t_ns > 0 for a in harness.arrivals)
        assert not waiter.done.is_set()  # only one of the 3 RPCs has them


async def test_builder_rpcs_take_bundles_as_arrivals_and_a_reader_serves_the_reads() -> None:
    """``Harness(builders=True)``: each ``eth_sendBundle`` tx arrives like a raw transaction (the
    private reaction figure uses the same waiter), and ``reader_url`` answers chain reads."""
    raw = bytes.fromhex("02f86b827a6980843b9aca00")
    bundle = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_sendBundle", "params": [
        {"txs": ["0x" + raw.hex()], "blockNumber": "0x2", "replacementUuid": "u"}]})  # fmt: skip
    sender = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    count = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "eth_getTransactionCount",
            "params": [sender, "latest"],
        }
    )

    async def post(url: str, body: bytes) -> dict[str, object]:
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        reply: dict[str, object] = orjson.loads(await reader.readexactly(length))
        writer.close()
        return reply

    async with Harness(builders=True) as harness:
        assert harness.reader_url
        reply = await post(harness.rpc_urls[2], bundle)
        assert "bundleHash" in reply["result"]  # type: ignore[operator]
        assert harness.raw_counts == [0, 0, 1]
        assert harness.arrivals[0].tx_hash == "0x" + __import__("sha3").keccak_256(raw).hexdigest()
        assert (await post(harness.reader_url, count))["result"] == "0x0"
        assert harness.raw_counts == [0, 0, 1]  # the reader is not one of the 3 RPCs


def test_ratios_read_as_times_better_than_the_peer() -> None:
    latency = row("x.a", "lat", unit="µs", ours="o", ours_p50=100, peer="p", peer_p50=300)
    rate = row("x.b", "rate", unit="heads/s", ours="o", ours_p50=300, peer="p", peer_p50=100,
               higher_is_better=True)  # fmt: skip
    assert latency["ratio"] == 3.0 and rate["ratio"] == 3.0
    failed = row("x.c", "f", unit="µs", ours="o", ours_p50=1, met=True, error="boom")
    assert failed["met"] is False


def test_signing_rows_take_their_verdict_from_the_target_text() -> None:
    rows = signing_rows([
        {"figure": "a", "p50_us": 30.0, "p99_us": 40.0, "peer": "p", "peer_p50_us": 23.0,
         "ratio": 0.77, "target": "p50 <= 35 us"},
        {"figure": "b", "p50_us": 60.0, "p99_us": 70.0, "peer": "p", "peer_p50_us": 450.0,
         "ratio": 7.5, "target": ">= 8x faster"},
        {"figure": "c", "p50_us": 1.0, "p99_us": 2.0, "peer": "p", "peer_p50_us": 1.0,
         "ratio": 1.0, "target": "(informational)"},
    ])  # fmt: skip
    assert [r["met"] for r in rows] == [True, False, None]


def test_deltas_compare_rows_by_key() -> None:
    now = [row("k", "f", unit="µs", ours="o", ours_p50=110, ours_p99=200)]
    before = [row("k", "f", unit="µs", ours="o", ours_p50=100, ours_p99=400)]
    (change,) = deltas(now, before)
    assert change["ours_p50_pct"] == 10.0 and change["ours_p99_pct"] == -50.0


@pytest.mark.e2e
def test_quick_bench_writes_the_table_json_png_and_deltas(tmp_path: Path) -> None:
    previous = {"meta": {"mode": "quick"}, "rows": [
        row("reaction.e2e.1.floor", "floor", unit="µs", ours="floor", ours_p50=1.0)
    ]}  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(previous))
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path), "--fake-delay-ms", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert "ratio" in done.stdout and "vs previous run" in done.stdout, done.stdout + done.stderr
    result = json.loads((tmp_path / "results.json").read_text())
    assert json.loads((tmp_path / "results.prev.json").read_text()) == previous
    assert (tmp_path / "reaction.png").stat().st_size > 10_000
    assert set(result) == {"meta", "rows", "data"}
    assert {"mode", "git", "loadavg_1min", "durations_s"} <= set(result["meta"])
    keys = {r["key"] for r in result["rows"]}
    for expected in ("reaction.e2e.1.vs_web3", "reaction.e2e.1.vs_raw", "reaction.e2e.1.floor",
                     "reaction.inproc.1", "reaction.e2e.10.vs_raw", "reaction.e2e.100.vs_raw",
                     "throughput.intents", "replay.bare.100000", "replay.full.100000",
                     "replay.full.rss", "signing.0"):  # fmt: skip
        assert expected in keys, sorted(keys)
    for r in result["rows"]:
        assert set(r) >= {"figure", "ours_p50", "ours_p99", "peer_p50", "peer_p99", "ratio",
                          "target", "met", "unit", "error"}  # fmt: skip
    fake = next(r for r in result["rows"] if r["key"] == "reaction.e2e.1.fake-5ms")
    assert fake["ours_p50"] >= 5000
    samples = {(d["impl"], d["k"]): d["samples_us"] for d in result["data"]["reaction"]}
    assert len(samples[("broadcaster", 1)]) == 30

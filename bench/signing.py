"""Signing figures of DESIGN.md section 8, side by side with their peers.

* enclave sign, server-side, as the server runs it: a decoded request -> policy -> sign -> audit
  entry built, hashed and written (``AuditLog.commit``, with the sealed anchor) -> reply frame
  encoded, i.e. logging *before* the reply (DESIGN.md section 6a). A second row leaves the log out.
  Peer: libsecp256k1 ``sign_recoverable`` alone.
* client reply verification alone. Peer: eth-account ``recover_transaction``.
* client round trip over a unix socket to the real enclave app process (``python -m enclave``,
  audit log on), reply verification included: back to back, and one request every 2 ms (how a
  reorg reaction finds the signer: idle). Peer: eth-account signing in-process, no enclave at all.
  A last row is the floor: two uvloop processes echoing a 300-byte frame, i.e. what the two
  process wake-ups of any round trip cost on this machine.
* client CPU per verified sign under load: bursts of 100 requests in flight on one connection
  (what the service's main thread spends per signature at intent throughput: building, framing,
  the coalesced writes, reply parsing and the full verification, secp256k1 recovery included).
* build + sign a 1559 tx (dict -> raw bytes) vs eth-account ``Account.sign_transaction``, bytes
  asserted identical.

``ratio`` is always ``peer_p50_us / p50_us``: how many times faster than the peer we are.
Run alone: ``python -m bench.signing [--quick]``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import coincurve
from eth_account import Account

from enclave.audit import AuditLog
from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig
from signer_client import SignerClient
from signer_client.framing import encode_frame
from signer_client.signing import LocalKey
from signer_client.txcodec import body_items, keccak, signing_payload, tx_from_dict
from signer_client.verify import ReplyVerifier

KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
SENDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
REPO = Path(__file__).resolve().parents[1]


def tx(nonce: int) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": 31337,
        "nonce": nonce,
        "to": TO,
        "value": 10**16,
        "data": b"",
        "gas": 21000,
        "maxFeePerGas": 30 * 10**9,
        "maxPriorityFeePerGas": 2 * 10**9,
        "accessList": [],
    }


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    s = sorted(samples_ns)
    return s[len(s) // 2] / 1000, s[min(len(s) - 1, int(len(s) * 0.99))] / 1000


def _time(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    for i in range(min(200, n)):  # warm up
        fn(i)
    clock = time.perf_counter_ns
    samples = []
    for i in range(n):
        t0 = clock()
        fn(i)
        samples.append(clock() - t0)
    return _percentiles(samples)


def _row(
    figure: str, ours: tuple[float, float], peer: str, theirs: float, target: str
) -> dict[str, Any]:
    return {
        "figure": figure,
        "p50_us": round(ours[0], 1),
        "p99_us": round(ours[1], 1),
        "peer": peer,
        "peer_p50_us": round(theirs, 1),
        "ratio": round(theirs / ours[0], 2),
        "target": target,
    }


def bench_server_side(n: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        audit = AuditLog(
            os.path.join(tmp, "audit.jsonl"), LocalKey(os.urandom(32)), seal_key=os.urandom(32)
        )
        config = PolicyConfig(chain_ids=(31337,), rate_per_second=1e9, burst=10**9)
        core = EnclaveCore([LocalKey(KEY)], Policy(config))  # the first row: no log
        messages = [  # what SignerClient sends (protocol 2), as the server has it after orjson
            {
                "id": i,
                "method": "sign_transaction",
                "params": {
                    "sender": SENDER.lower(),
                    "payload": "0x" + signing_payload(tx_from_dict(tx(i))).hex(),
                },
            }
            for i in range(n + 200)
        ]
        now = time.time()

        def sign(i: int) -> None:
            encode_frame(core.handle(messages[i], now))

        ours = _time(sign, n)
        core = EnclaveCore([LocalKey(KEY)], Policy(config), audit=audit)
        raw_key = coincurve.PrivateKey(bytes.fromhex(KEY[2:]))
        digest = keccak(b"x")
        peer = _time(lambda i: raw_key.sign_recoverable(digest, hasher=None), n)

        core.policy = Policy(config)  # fresh nonce memory: the same requests sign again

        def sign_log_first(i: int) -> None:
            reply = core.handle(messages[i], now)
            audit.commit()  # before the reply is encoded and written, as the server does
            encode_frame(reply)

        with_audit = _time(sign_log_first, n)
        audit.close()
    return [
        _row("enclave sign, server-side, audit entry written before the reply (request -> "
             "policy -> sign -> entry on disk -> reply encoded)", with_audit,
             "libsecp256k1 sign_recoverable alone", peer[0], "p50 <= 35 us"),
        _row("enclave sign, server-side, no audit log", ours,
             "libsecp256k1 sign_recoverable alone", peer[0], "(informational)"),
    ]  # fmt: skip


def bench_build_sign(n: int) -> dict[str, Any]:
    key = LocalKey(KEY)
    for i in range(50):
        ours_raw = key.sign(tx_from_dict(tx(i))).raw
        assert ours_raw == bytes(Account.sign_transaction(tx(i), KEY).raw_transaction), (
            "bytes differ"
        )
    ours = _time(lambda i: key.sign(tx_from_dict(tx(i))), n)
    peer = _time(lambda i: Account.sign_transaction(tx(i), KEY), max(200, n // 10))
    return _row("build + sign a 1559 tx (dict -> raw), bytes identical", ours,
                "eth-account Account.sign_transaction", peer[0], ">= 8x faster")  # fmt: skip


def bench_verify(n: int) -> dict[str, Any]:
    key = LocalKey(KEY)
    verifier = ReplyVerifier()
    fields = tx_from_dict(tx(1))
    raw, tx_hash, msg_hash = key.sign_fields(fields)
    raw_hex, hash_hex = "0x" + raw.hex(), "0x" + tx_hash.hex()
    body = body_items(fields)  # the client built it for the request
    ours = _time(
        lambda i: verifier.verify(fields, msg_hash, key.address_bytes, raw_hex, hash_hex, body), n
    )
    signed = Account.sign_transaction(tx(1), KEY)
    raw_tx = signed.raw_transaction
    peer = _time(lambda i: Account.recover_transaction(raw_tx), max(200, n // 10))
    return _row("client reply verification (our encoding + canonical sig, hash, low-s, recover)",
                ours,
                "eth-account recover_transaction", peer[0],
                "(part of the reaction budget)")  # fmt: skip


def _start_enclave(tmp: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    key_file = Path(tmp, "keys.txt")
    key_file.write_text(KEY + "\n")
    config = Path(tmp, "enclave.toml")
    config.write_text("[policy]\nchain_ids = [31337]\nrate_per_second = 1e9\nburst = 1000000000\n")
    url = f"unix://{tmp}/enclave.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "enclave", "--listen", url, "--key-file", str(key_file),
         "--config", str(config), "--audit-log", str(Path(tmp, "audit.jsonl")), *extra],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    if not proc.stdout.readline().startswith("listening"):
        proc.terminate()
        proc.wait()
        raise RuntimeError("enclave app did not start")
    return proc, url


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def bench_round_trip(n: int) -> list[dict[str, Any]]:
    """The real enclave app (audit log on), one client; back to back, then one at a time."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = _start_enclave(tmp)
        try:
            back_to_back, isolated = _run_loop(_client_loop(url, n))
            burst = _run_loop(_burst_loop(url, max(20, n // 25), start=2 * n + 400))
        finally:
            _stop(proc)
    with tempfile.TemporaryDirectory() as tmp:
        from enclave.attestor import create_dev_pki, measure_pcr0
        from signer_client import AttestationPolicy

        root, _ = create_dev_pki(Path(tmp, "pki"))
        proc, url = _start_enclave(tmp, "--pki-dir", str(Path(tmp, "pki")))
        try:
            pinned = AttestationPolicy(root.read_bytes(), measure_pcr0())
            attested, _ = _run_loop(_client_loop(url, n, pinned))
        finally:
            _stop(proc)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = _start_enclave(tmp, "--busy-poll")
        try:
            _, polled = _run_loop(_client_loop(url, n))
        finally:
            _stop(proc)
        floor = _echo_floor(tmp, n)
    peer = _time(lambda i: Account.sign_transaction(tx(i), KEY), max(200, n // 5))
    return [
        _row("client round trip over a unix socket to the enclave app (verified), back to back",
             back_to_back, "eth-account sign_transaction in-process", peer[0],
             "inside reaction p50 <= 250 us"),
        _row("same, attested: replies over the channel MACed with the ECDH key (production path)",
             attested, "eth-account sign_transaction in-process", peer[0], ">= 3x faster"),
        _row("same, one request per 2 ms (a reorg reaction finds the signer idle)", isolated,
             "eth-account sign_transaction in-process", peer[0], "(informational)"),
        _row("same, one per 2 ms, enclave app run with --busy-poll (dedicated vCPUs: takes a core)",
             polled, "eth-account sign_transaction in-process", peer[0], "(informational)"),
        _row("floor: uvloop echo of a 300-byte frame between two processes, unix socket", floor,
             "our verified round trip, back to back", back_to_back[0],
             "(what the two wake-ups cost here)"),
        _row("client CPU per verified sign, bursts of 100 in flight (per-burst CPU / 100)", burst,
             "eth-account sign_transaction in-process", peer[0], "(informational)"),
    ]  # fmt: skip


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


async def _client_loop(
    url: str, n: int, attestation: Any = None
) -> tuple[tuple[float, float], tuple[float, float]]:
    async with await SignerClient.connect(url, attestation=attestation) as client:
        requests = [tx(i) for i in range(2 * n + 200)]
        for i in range(200):
            await client.sign_transaction(requests[i], SENDER)
        clock = time.perf_counter_ns
        samples = []
        for i in range(200, n + 200):
            t0 = clock()
            await client.sign_transaction(requests[i], SENDER)
            samples.append(clock() - t0)
        isolated = []
        for i in range(n + 200, 2 * n + 200):
            await asyncio.sleep(0.002)
            t0 = clock()
            await client.sign_transaction(requests[i], SENDER)
            isolated.append(clock() - t0)
    return _percentiles(samples), _percentiles(isolated)


async def _burst_loop(
    url: str, bursts: int, size: int = 100, start: int = 0
) -> tuple[float, float]:
    """Client CPU (``process_time``) per sign, one sample per burst of ``size`` concurrent signs."""
    async with await SignerClient.connect(url) as client:
        nonces = iter(range(start, start + 10**6))  # in order: the enclave's nonce window

        async def burst() -> None:
            await asyncio.gather(
                *(client.sign_transaction(tx(next(nonces)), SENDER) for _ in range(size))
            )

        for _ in range(3):  # warm up
            await burst()
        samples = []
        for _ in range(bursts):
            t0 = time.process_time_ns()
            await burst()
            samples.append((time.process_time_ns() - t0) // size)
    return _percentiles(samples)


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _echo_server(path: str) -> None:
    await asyncio.get_running_loop().create_unix_server(_Echo, path)
    print("listening", flush=True)
    await asyncio.Event().wait()


class _Ping(asyncio.Protocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None

    def data_received(self, data: bytes) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


async def _ping(path: str, n: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    transport, ping = await loop.create_unix_connection(_Ping, path)
    frame = bytes(300)
    samples = []
    clock = time.perf_counter_ns
    for i in range(n + 200):
        ping.waiter = loop.create_future()
        t0 = clock()
        transport.write(frame)
        await ping.waiter
        if i >= 200:
            samples.append(clock() - t0)
    transport.close()
    return _percentiles(samples)


def _echo_floor(tmp: str, n: int) -> tuple[float, float]:
    path = f"{tmp}/echo.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.signing", "--echo-server", path],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith("listening"):
            raise RuntimeError("echo server did not start")
        return _run_loop(_ping(path, n))  # type: ignore[no-any-return]
    finally:
        _stop(proc)


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 2_000 if quick else 20_000
    return [
        *bench_server_side(n),
        bench_build_sign(n),
        bench_verify(n),
        *bench_round_trip(500 if quick else 5_000),
    ]


def _print(rows: list[dict[str, Any]]) -> None:
    print(f"{'figure':<80} {'p50 us':>8} {'p99 us':>8} {'peer p50':>9} {'ratio':>6}  target / peer")
    for r in rows:
        print(f"{r['figure']:<80} {r['p50_us']:>8} {r['p99_us']:>8} {r['peer_p50_us']:>9} "
              f"{r['ratio']:>5}x  {r['target']} / {r['peer']}")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["--echo-server"]:
        _run_loop(_echo_server(sys.argv[2]))
    else:
        _print(run(quick="--quick" in sys.argv))

"""Replay throughput and peak memory (DESIGN.md §8: >= 200,000 heads/s bare, >= 100,000 verified,
flat memory to 1M heads).

Recordings in the DESIGN.md §4 format are generated deterministically (seeded):

* ``bare``: one client, ``{number, hash, parentHash, baseFeePerGas}`` headers (accepted
  unverified), a depth-1..3 fork every 40..60 blocks;
* ``full``: Prague-shaped headers (every field of the fork, shaped like anvil's) whose hash is the
  real ``keccak256(rlp(header))`` (:func:`heads.header.compute_header_hash`), each block
  announced once by each of 3 clients, so verification runs on every line. Same fork pattern.

``heads`` is the number of ``head`` lines (for ``full``, blocks x 3). Each file is replayed by
``broadcaster replay FILE --json`` as a subprocess: wall time around it, peak RSS from
``wait4``'s rusage of that very child. The replay's own summary must agree with the generator
(heads, reorgs, nothing rejected) or the row is marked as an error. The peer is a floor: a
process that only reads and ``orjson.loads`` every line (no tracker), to show what the tracking
itself costs.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from heads.header import compute_header_hash, header_plan

__all__ = ["ReplayRun", "generate", "run_replay"]

_TEMPLATE: dict[str, Any] = {
    "hash": "",
    "parentHash": "",
    "sha3Uncles": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
    "miner": "0x0000000000000000000000000000000000000000",
    "stateRoot": "",
    "transactionsRoot": "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
    "receiptsRoot": "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
    "logsBloom": "0x" + "00" * 256,
    "difficulty": "0x0",
    "number": "",
    "gasLimit": "0x1c9c380",
    "gasUsed": "0x0",
    "timestamp": "",
    "extraData": "0x",
    "mixHash": "",
    "nonce": "0x0000000000000000",
    "baseFeePerGas": "0x3b9aca00",
    "withdrawalsRoot": "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
    "blobGasUsed": "0x0",
    "excessBlobGas": "0x0",
    "parentBeaconBlockRoot": "0x" + "00" * 32,
    "requestsHash": "0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "totalDifficulty": "0x0",
    "size": "0x267",
    "uncles": [],
    "transactions": [],
    "withdrawals": [],
}

_FLOOR = (
    "import sys, orjson\n"
    "n = 0\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    for line in f:\n"
    "        orjson.loads(line); n += 1\n"
    "print(n)\n"
)


@dataclass
class Generated:
    path: Path
    heads: int
    forks: int
    seconds: float


def generate(path: Path, heads: int, *, full: bool, seed: int = 8) -> Generated:
    """Write a recording of exactly ``heads`` head lines; returns what replay must report."""
    rng = random.Random(seed)
    clients = ("a", "b", "c") if full else ("a",)
    plan = header_plan(_TEMPLATE)
    assert plan is not None, "the template must be a verifiable Prague header"
    started = time.perf_counter()
    chain: list[tuple[int, str]] = [(0, "0x" + rng.randbytes(32).hex())]  # (number, hash)
    written = forks = 0
    t = 0.0
    next_fork = rng.randint(40, 60)
    lines: list[bytes] = []

    def block(number: int, parent: str) -> dict[str, Any]:
        if not full:
            header = {"number": hex(number), "hash": "", "parentHash": parent,
                      "baseFeePerGas": "0x3b9aca00"}  # fmt: skip
            header["hash"] = "0x" + rng.randbytes(32).hex()
            return header
        header = dict(_TEMPLATE)
        header["number"] = hex(number)
        header["parentHash"] = parent
        header["timestamp"] = hex(1_700_000_000 + 12 * number)
        header["stateRoot"] = "0x" + rng.randbytes(32).hex()
        header["mixHash"] = "0x" + rng.randbytes(32).hex()
        header["hash"] = compute_header_hash(header, plan)
        return header

    def announce(header: dict[str, Any]) -> bool:
        nonlocal written, t
        for client in clients:
            if written == heads:
                return False
            t += 0.0004
            lines.append(orjson.dumps({"t": round(t, 4), "client": client, "head": header}))
            written += 1
        return True

    with open(path, "wb") as out:
        while written < heads:
            number, tip_hash = chain[-1]
            if next_fork == 0 and len(chain) > 4:
                depth = rng.randint(1, 3)
                base_number, parent = chain[-1 - depth]
                del chain[-depth:]
                forks += 1
                for i in range(depth + 1):
                    header = block(base_number + 1 + i, parent)
                    if not announce(header):
                        break
                    parent = header["hash"]
                    chain.append((base_number + 1 + i, parent))
                next_fork = rng.randint(40, 60)
            else:
                header = block(number + 1, tip_hash)
                announce(header)
                chain.append((number + 1, header["hash"]))
                next_fork -= 1
            if len(chain) > 256:
                del chain[:128]
            if len(lines) >= 4096:
                out.write(b"\n".join(lines) + b"\n")
                lines.clear()
        if lines:
            out.write(b"\n".join(lines) + b"\n")
    return Generated(path, heads, forks, time.perf_counter() - started)


@dataclass
class ReplayRun:
    variant: str
    heads: int
    wall_s: float
    rss_mb: float
    floor_wall_s: float
    floor_rss_mb: float
    summary: dict[str, Any]
    expected_forks: int
    generate_s: float
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.heads / self.wall_s


# Peak RSS must be the child's own: a process forked from this (large) bench process inherits
# its high-water mark through exec, so a small helper forks the measured command instead.
_SPAWN = (
    "import os, sys, time\n"
    "t = time.perf_counter()\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "wall = time.perf_counter() - t\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    f.write(f'{wall} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}')\n"
)


def _timed(argv: list[str], stdout: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) of that child alone, exit status."""
    report = stdout.with_suffix(".rusage")
    with open(stdout, "wb") as out:
        subprocess.run([sys.executable, "-c", _SPAWN, str(report), *argv], stdout=out, check=True)
    wall, maxrss_kb, status = report.read_text().split()
    return float(wall), int(maxrss_kb) / 1024, int(status)


def _replay_argv(path: Path) -> list[str]:
    return [sys.executable, "-m", "broadcaster", "replay", str(path), "--json"]


def startup_seconds(workdir: Path, repeats: int = 3) -> float:
    """Interpreter + import cost of ``broadcaster replay`` (a 1-head file), median of runs."""
    tiny = generate(workdir / "tiny.jsonl", 1, full=False)
    walls = [_timed(_replay_argv(tiny.path), workdir / "tiny.out")[0] for _ in range(repeats)]
    return statistics.median(walls)


def run_replay(
    workdir: Path, sizes: list[int], progress: Callable[[str], None] | None = None
) -> list[ReplayRun]:
    runs = []
    for variant in ("bare", "full"):
        for heads in sizes:
            path = workdir / f"{variant}-{heads}.jsonl"
            gen = generate(path, heads, full=variant == "full")
            out = workdir / f"{variant}-{heads}.out"
            wall, rss, status = _timed(_replay_argv(path), out)
            floor_wall, floor_rss, _ = _timed(
                [sys.executable, "-c", _FLOOR, str(path)], workdir / "floor.out"
            )
            lines = out.read_bytes().splitlines()
            summary = orjson.loads(lines[-1]) if lines else {}
            error = None
            if status != 0 or summary.get("event") != "summary":
                error = f"replay exited {status}"
            elif (summary["heads"], summary["reorgs"], summary["rejected"]) != (
                heads, gen.forks, 0
            ):  # fmt: skip
                error = (
                    f"replay says heads={summary['heads']} reorgs={summary['reorgs']} "
                    f"rejected={summary['rejected']}; generated {heads} heads, {gen.forks} forks"
                )
            runs.append(
                ReplayRun(variant, heads, wall, rss, floor_wall, floor_rss, summary,
                          gen.forks, gen.seconds, error)
            )  # fmt: skip
            path.unlink()
            if progress is not None:
                progress(f"replay {variant} {heads:,}: {heads / wall:,.0f} heads/s, {rss:.0f} MB")
    return runs

"""Replay of recorded streams: the real mainnet forks, determinism, bad lines."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from heads.replay import replay
from tests.conftest import MAINNET_FRONTIER

FRONTIER = MAINNET_FRONTIER
MAINNET_TIP = "0xa6860fefa339c963e1bb622526cc8dd4344eedd2a9b969e74de5cccc445fbed4"


def write_uncles_first_stream(path: Path) -> int:
    """At each height announce the real uncles first, then the canonical block (one client)."""
    with gzip.open(FRONTIER / "mainnet-0-8191-headers.jsonl.gz", "rb") as f:
        canonical = [orjson.loads(line) for line in f]
    uncles_at: dict[int, list[dict[str, Any]]] = {}
    with gzip.open(FRONTIER / "mainnet-0-8191-uncles.jsonl.gz", "rb") as f:
        for line in f:
            uncle = orjson.loads(line)
            uncles_at.setdefault(int(uncle["number"], 16), []).append(uncle)
    lines = 0
    with gzip.open(path, "wb") as out:
        for block in canonical:
            for header in [*uncles_at.get(int(block["number"], 16), []), block]:
                lines += 1
                out.write(orjson.dumps({"t": lines / 1000, "client": "a", "head": header}) + b"\n")
    return lines


@pytest.fixture(scope="module")
def uncles_stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "mainnet-uncles-first.jsonl.gz"
    write_uncles_first_stream(path)
    return path


def test_real_mainnet_uncles_replay_to_exactly_1410_depth_one_reorgs(uncles_stream: Path) -> None:
    events = list(replay(uncles_stream))
    summary = events[-1]
    assert summary["event"] == "summary"
    assert summary["heads"] == 8192 + 1410
    assert summary["reorgs"] == 1410
    assert summary["max_depth"] == 1
    assert summary["rejected"] == 0
    assert summary["tip"] == {"number": 8191, "hash": MAINNET_TIP}
    kinds = Counter(e["event"] for e in events[:-1])
    assert kinds == {"reorg": 1410}
    assert all(e["depth"] == 1 and len(e["old"]) == 1 and len(e["new"]) == 1 for e in events[:-1])


def test_replay_is_deterministic(uncles_stream: Path) -> None:
    assert list(replay(uncles_stream)) == list(replay(uncles_stream))


def test_a_tampered_line_is_rejected_and_the_genuine_block_is_accepted_later(
    tmp_path: Path,
) -> None:
    with gzip.open(FRONTIER / "mainnet-0-8191-headers.jsonl.gz", "rb") as f:
        canonical = [orjson.loads(line) for _, line in zip(range(20), f, strict=False)]
    path = tmp_path / "tampered.jsonl"
    with path.open("wb") as out:
        for block in canonical:
            if block["number"] == "0xa":
                lie = dict(block, stateRoot="0x" + "ee" * 32)
                out.write(orjson.dumps({"t": 0, "client": "liar", "head": lie}) + b"\n")
            out.write(orjson.dumps({"t": 0, "client": "a", "head": block}) + b"\n")
        out.write(b'{"t": 1, "client": "a", "head": {"number": "0x1"\n')  # truncated last line
    events = list(replay(path))
    summary = events[-1]
    assert summary["rejected"] == 1
    assert summary["heads"] == 21
    assert summary["invalid_lines"] == 1
    assert summary["tip"]["number"] == 19
    assert summary["reorgs"] == 0
    assert [e["event"] for e in events[:-1]] == ["rejected"]
    assert events[0]["reason"] == "hash_mismatch"


def test_replay_of_a_lying_client_counts_rejected_lines_and_the_quarantine(tmp_path: Path) -> None:
    from tests.heads.chain import sealed_chain, sealed_header

    chain = sealed_chain(12)
    lines: list[dict[str, Any]] = [
        {"t": 0.0, "client": "honest", "event": "connected"},
        {"t": 0.0, "client": "liar", "event": "connected"},
    ]
    for header in chain:
        lines.append({"t": 0.1, "client": "honest", "head": header})
        lines.append({"t": 0.1, "client": "liar", "head": header})
    tip, parent = chain[-1], chain[-2]
    lines.append({"t": 1.0, "client": "liar", "head": sealed_header(11 + 10**6, tip["hash"])})
    for i in range(50):
        sibling = sealed_header(11, parent["hash"], salt=f"flood {i}")
        lines.append({"t": 1.0, "client": "liar", "head": sibling})
    path = tmp_path / "liar.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    events = list(replay(path))
    summary = events[-1]
    assert summary["heads"] == 2 * 12 + 1 + 50
    assert summary["rejected"] == 1
    assert summary["quarantined"] == 1
    assert summary["tip"] == {"number": 11, "hash": tip["hash"]}
    assert [e["event"] for e in events if e["event"] in ("quarantine", "release")] == ["quarantine"]
    assert summary["reorgs"] <= 4
    assert events == list(replay(path))  # deterministic

"""The per-head fast path (heads.fast_path) gives exactly what the general ``on_head`` gives.

Replays of the committed recordings and of generated ones (forks, several clients out of step,
duplicates, disconnects, backfill ``block`` lines, malformed and lying lines) through the fast
path and through ``on_head`` alone must print the same ``--json`` bytes and leave the tracker in
the same state; and on single heads with random and malformed fields, ``on_head_quiet`` accepts
exactly what ``on_head`` accepts as a plain extension, with the same parsed values.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from heads.events import Extension
from heads.header import compute_header_hash, header_plan
from heads.replay import replay_into
from heads.tracker import ChainTracker
from tests.heads.test_replay import write_uncles_first_stream

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORDINGS = sorted(FIXTURES.glob("recordings/*.jsonl.gz")) + sorted(
    FIXTURES.glob("chaos/*.jsonl.gz")
)
PRAGUE = json.loads((Path(__file__).parent / "fixtures" / "anvil-prague-headers.json").read_text())


def state(tracker: ChainTracker) -> dict[str, Any]:
    """Everything the tracker holds, dict order included (iteration order is behaviour)."""
    out: dict[str, Any] = {}
    for name, value in vars(tracker).items():
        if name == "trust":
            value = {k: v for k, v in vars(value).items() if k not in ("heads", "seen")}
        elif name == "_startup" and value is not None:
            value = vars(value)
        if isinstance(value, dict):
            value = list(value.items())
        out[name] = value
    return out


def both_ways(path: Path, **kwargs: Any) -> None:
    fast_tracker = ChainTracker(**kwargs)
    slow_tracker = ChainTracker(**kwargs)
    fast = [orjson.dumps(e) for e in replay_into(fast_tracker, path, fast=True)]
    slow = [orjson.dumps(e) for e in replay_into(slow_tracker, path, fast=False)]
    assert fast == slow
    assert state(fast_tracker) == state(slow_tracker)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
def test_committed_recordings_replay_identically_fast_and_slow(path: Path) -> None:
    both_ways(path)
    both_ways(path, fork_choice="first-seen", finality_depth=8)


def test_the_mainnet_uncles_stream_replays_identically_fast_and_slow(tmp_path: Path) -> None:
    path = tmp_path / "uncles.jsonl.gz"
    write_uncles_first_stream(path)
    both_ways(path)


def _prague(number: int, parent: str, rng: random.Random, timestamp: int) -> dict[str, Any]:
    header = dict(PRAGUE[0])
    header["number"] = hex(number)
    header["parentHash"] = parent
    header["timestamp"] = hex(timestamp)
    header["stateRoot"] = "0x" + rng.randbytes(32).hex()
    plan = header_plan(header)
    assert plan is not None
    header["hash"] = compute_header_hash(header, plan)
    return header


def generate(path: Path, seed: int, *, lines: int = 1500) -> None:
    """A messy multi-client recording: forks, skew, duplicates, gaps filled by ``block`` lines,
    disconnects, garbage, lying headers; Prague-verifiable headers on some seeds."""
    rng = random.Random(seed)
    clients = ["a", "b", "c"][: rng.randint(1, 3)]
    full = seed % 3 == 0
    timed = seed % 2 == 0
    chain: list[dict[str, Any]] = []
    out: list[bytes] = []
    t = 0.0

    def make(number: int, parent: str) -> dict[str, Any]:
        stamp = 1_700_000_000 + 12 * number
        if full:
            return _prague(number, parent, rng, stamp)
        header: dict[str, Any] = {
            "number": hex(number),
            "hash": "0x" + rng.randbytes(32).hex(),
            "parentHash": parent,
        }
        if timed:
            header["timestamp"] = hex(stamp)
        if rng.random() < 0.5:
            header["baseFeePerGas"] = hex(rng.randint(1, 10**10))
        return header

    def emit(client: str, kind: str, value: Any) -> None:
        nonlocal t
        t += 0.001
        out.append(orjson.dumps({"t": round(t, 4), "client": client, kind: value}))

    parent = "0x" + rng.randbytes(32).hex()
    number = rng.randint(0, 1000)
    lagging: list[tuple[str, dict[str, Any]]] = []
    skipped: tuple[str, dict[str, Any]] | None = None
    while len(out) < lines:
        roll = rng.random()
        if roll < 0.06 and len(chain) > 4:  # a fork of depth 1..3 (sometimes deeper)
            depth = rng.choice([1, 1, 2, 3, 5])
            depth = min(depth, len(chain) - 1)
            del chain[-depth:]
            parent, number = chain[-1]["hash"], int(chain[-1]["number"], 16)
        elif roll < 0.08:
            emit(rng.choice(clients), "event", rng.choice(["disconnected", "connected"]))
            continue
        elif roll < 0.10:
            out.append(rng.choice([b"{not json", b"", b"[1,2]", b'{"client": 3, "head": {}}']))
            continue
        elif roll < 0.13 and chain:  # a lie: bad number, bad hash, bad timestamp, bad parent
            lie = dict(chain[-1])
            what = rng.randrange(6)
            if what == 0:
                lie["number"] = hex(int(lie["number"], 16) + rng.choice([0, 2, 5]))
                lie["hash"] = "0x" + rng.randbytes(32).hex()
            elif what == 1:
                lie["hash"] = lie["hash"].upper().replace("0X", "0x")
            elif what == 2:
                lie["timestamp"] = hex(1_600_000_000)
                lie["hash"] = "0x" + rng.randbytes(32).hex()
                lie["parentHash"] = chain[-1]["hash"]
                lie["number"] = hex(int(chain[-1]["number"], 16) + 1)
            elif what == 3:
                lie["hash"] = lie["hash"][:-1] + "g"
            elif what == 4:
                lie["parentHash"] = "0x" + rng.randbytes(32).hex()
            else:
                lie["stateRoot"] = "0x" + rng.randbytes(32).hex()  # hash mismatch when full
            emit(rng.choice(clients), "head", lie)
            continue
        header = make(number + 1, parent)
        number, parent = number + 1, header["hash"]
        chain.append(header)
        if len(chain) > 200:
            del chain[:100]
        gap = rng.random() < 0.04 and skipped is None
        order = clients[:]
        rng.shuffle(order)
        for i, client in enumerate(order):
            if gap and i == 0:
                continue  # the block is skipped by its first announcer: its next head is held
            if i > 0 and rng.random() < 0.3:
                lagging.append((client, header))  # a late copy, delivered a few blocks later
                continue
            emit(client, "head", header)
            if rng.random() < 0.03:
                emit(client, "head", header)  # a duplicate
        if skipped is not None:
            emit(skipped[0], "block", skipped[1])  # backfill of the parent of the held head
            skipped = None
        if gap:
            skipped = (order[0], header)
        if lagging and rng.random() < 0.5:
            client, late = lagging.pop(0)
            emit(client, "head", late)
    path.write_bytes(b"\n".join(out) + b"\n")


@pytest.mark.parametrize("seed", range(24))
def test_generated_messy_recordings_replay_identically_fast_and_slow(
    tmp_path: Path, seed: int
) -> None:
    path = tmp_path / f"messy-{seed}.jsonl"
    generate(path, seed)
    both_ways(path)
    both_ways(path, fork_choice="first-seen", finality_depth=4, clients=3, verify=seed % 2 == 0)


def test_the_generator_reaches_both_paths_and_the_rejections(tmp_path: Path) -> None:
    """The comparisons above are not vacuous: the fast path takes most heads, the general path
    the rest, and the recordings carry reorgs and rejections."""
    for seed in (0, 1, 2):
        path = tmp_path / f"messy-{seed}.jsonl"
        generate(path, seed)
        tracker = ChainTracker()
        quiet = tracker.on_head_quiet
        taken = [0]

        def counting(client: str, header: Any, quiet: Any = quiet, taken: Any = taken) -> bool:
            handled: bool = quiet(client, header)
            taken[0] += handled
            return handled

        tracker.on_head_quiet = counting  # type: ignore[method-assign]
        summary = list(replay_into(tracker, path))[-1]
        assert summary["rejected"] > 0
        assert summary["reorgs"] > 0
        assert summary["invalid_lines"] > 0
        assert summary["blocks"] > 0
        assert 0.25 * summary["heads"] < taken[0] < summary["heads"]


# -- single heads: what the fast path accepts, with what values --------------------------------

_TIP_PARENT = "0x" + "11" * 32
_TIP = "0x" + "22" * 32

_HEX_TEXT = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEF_ x+-g\u0663", max_size=8).map(lambda t: "0x" + t),
    st.sampled_from(
        ["0x2", "0x02", "0x3", "0x1", "0x0", "0x2 ", "0x_2", "0x0x2", "2", "0X2", "0x", "0x٢"]
    ),
    st.integers(min_value=-3, max_value=3),
    st.none(),
    st.booleans(),
)
_VALID_HASH = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
_HASH_TEXT = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEF x", min_size=62, max_size=68).map(lambda t: "0x" + t),
    st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex()),
    st.sampled_from([_TIP, _TIP.upper(), _TIP_PARENT, "0x" + "33" * 32 + "\n", "0x" + "44" * 32]),
    st.integers(),
    st.none(),
)


def _tracker(clients: int) -> ChainTracker:
    """1: "a" holds the tip; 2: and "b" is connected without a head (its copy of the tip is
    the copy path); 3: "b" brought the tip on "a"'s block and left ("a", the only client
    connected, is below the tip)."""
    tracker = ChainTracker(finality_depth=4)
    tip = {"number": "0x1", "hash": _TIP, "parentHash": _TIP_PARENT, "timestamp": "0x10"}
    if clients == 3:
        parent = {"number": "0x0", "hash": _TIP_PARENT, "parentHash": "0x" + "00" * 32}
        tracker.on_head("a", {**parent, "timestamp": "0xf"})
        tracker.on_head("b", tip)
        tracker.on_disconnect("b")
        return tracker
    tracker.on_head("a", tip)
    if clients == 2:
        tracker.on_connect("b")
    return tracker


@example(3, "a", "0x" + "55" * 32, _TIP, "0x1", "0x11", {}, set())  # tip's number, client below
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    clients=st.integers(min_value=1, max_value=3),
    client=st.sampled_from(["a", "b"]),
    block_hash=st.one_of(_VALID_HASH, _HASH_TEXT),
    parent=st.one_of(st.just(_TIP), _HASH_TEXT),
    number=st.one_of(st.sampled_from(["0x2", "0x1", "0x0", "0x3", "0x02"]), _HEX_TEXT),
    timestamp=st.one_of(st.just("0x11"), st.just("0x10"), _HEX_TEXT),
    extra=st.dictionaries(st.sampled_from(["baseFeePerGas", "miner", "t"]), _HEX_TEXT, max_size=2),
    drop=st.sets(st.sampled_from(["hash", "parentHash", "number", "timestamp"]), max_size=1),
)
def test_a_single_head_is_taken_by_the_fast_path_only_as_on_head_would_take_it(
    clients: int,
    client: str,
    block_hash: Any,
    parent: Any,
    number: Any,
    timestamp: Any,
    extra: dict[str, Any],
    drop: set[str],
) -> None:
    header: dict[str, Any] = {
        "hash": block_hash,
        "parentHash": parent,
        "number": number,
        "timestamp": timestamp,
        **extra,
    }
    for key in drop:
        del header[key]
    fast, slow = _tracker(clients), _tracker(clients)
    events = slow.on_head(client, dict(header))
    if fast.on_head_quiet(client, dict(header)):
        assert all(type(e) is Extension for e in events)  # nothing replay would print
    else:
        assert state(fast) == state(_tracker(clients))  # refused: it changed nothing
        assert fast.on_head(client, dict(header)) == events
    assert state(fast) == state(slow)

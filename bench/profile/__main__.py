"""Where one reorg reaction's time goes, stage by stage (docs/performance.md's profile).

    python -m bench.profile [--trials 200] [--intent]

``--intent``: the intent path instead (frame read -> journal flush and signer round trip ->
the last RPC write of the first attempt; ``broadcaster_intent_seconds``), one intent at a time
through the API, as :mod:`bench.intent` sends them.

Runs ``broadcaster run`` against the bench harness exactly as ``make bench`` does (1 dropped
transaction, the enclave app over a unix socket, 3 RPCs), with :mod:`bench.profile.sitecustomize`
loaded into the service to stamp each stage, then prints the median and p90 of every step
between consecutive stamps (µs) and the in-process figure of the same trials.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import uvloop

from bench.harness import Harness
from bench.reaction import BroadcasterImpl, run_reaction

HERE = Path(__file__).resolve().parent


def stage_table(lines: list[str]) -> list[tuple[str, float, float]]:
    """``(step, median µs, p90 µs)`` between consecutive stamps, in first-seen order."""
    steps: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        parts = line.split()[2:]
        previous, seen = 0, defaultdict(int)
        for part in parts:
            label, _, at = part.rpartition(":")
            seen[label] += 1
            key = label if seen[label] == 1 else f"{label}#{seen[label]}"
            steps[key].append(int(at) - previous)
            previous = int(at)
    return [
        (key, statistics.median(xs), sorted(xs)[int(len(xs) * 0.9)]) for key, xs in steps.items()
    ]


async def profile(trials: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="reaction-profile-"))
    trace = workdir / "trace.txt"
    os.environ["REACTION_TRACE"] = str(trace)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    async with Harness() as harness:
        impl = BroadcasterImpl(harness)
        (result,) = await run_reaction([impl], [(1, trials, ("broadcaster",))], workdir)
    if result.error:
        raise SystemExit(result.error)
    lines = [line for line in trace.read_text().splitlines() if line.startswith("TRACE")]
    totals = sorted(int(line.split()[1].split("=")[1]) for line in lines)
    p90 = totals[int(len(totals) * 0.9)]
    print(f"{len(lines)} traced reactions; total to the last write: median "
          f"{statistics.median(totals):.0f} µs, p90 {p90} µs")  # fmt: skip
    print(f"{'step (µs since the previous stamp)':40} {'median':>8} {'p90':>8}")
    for step, median, p90 in stage_table(lines):
        print(f"{step:40} {median:8.0f} {p90:8.0f}")
    untraced = sorted(result.in_process_us)
    print(f"in-process figure of these trials (traced): p50 {untraced[len(untraced) // 2]:.0f} µs")


async def profile_intent(trials: int) -> None:
    from bench.intent import broadcaster_intent

    workdir = Path(tempfile.mkdtemp(prefix="intent-profile-"))
    trace = workdir / "trace.txt"
    os.environ["INTENT_TRACE"] = str(trace)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    result = await broadcaster_intent(workdir, trials, 10, 0.02)
    if result.error:
        raise SystemExit(result.error)
    lines = [line for line in trace.read_text().splitlines() if line.startswith("TRACE")][10:]
    totals = sorted(int(line.split()[1].split("=")[1]) for line in lines)
    p90 = totals[int(len(totals) * 0.9)]
    print(f"{len(lines)} traced intents; frame read -> last RPC write: median "
          f"{statistics.median(totals):.0f} µs, p90 {p90} µs")  # fmt: skip
    print(f"{'step (µs since the previous stamp)':40} {'median':>8} {'p90':>8}")
    for step, median, p90 in stage_table(lines):
        print(f"{step:40} {median:8.0f} {p90:8.0f}")
    e2e = sorted(result.samples_us)
    print(f"end to end (bot writes -> last RPC has it), traced: p50 {e2e[len(e2e) // 2]:.0f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--intent", action="store_true", help="profile the intent path")
    args = parser.parse_args()
    uvloop.run(profile_intent(args.trials) if args.intent else profile(args.trials))


if __name__ == "__main__":
    main()

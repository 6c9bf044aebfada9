"""``make bench``: every DESIGN.md §8 figure side by side with its peer, in one run.

    python -m bench [--quick] [--out DIR] [--only reaction,intent,throughput,replay,signing]

Prints one table (figure, ours p50/p99, peer p50/p99, ratio, target, met?), writes the same as
``DIR/results.json`` (the previous one is kept as ``results.prev.json`` and the deltas against
it are printed) and ``DIR/reaction.png`` (the reaction-latency distributions of every
implementation). Nothing is hard-coded: every number comes from the implementations doing the
work in this run. The full run takes 3-5 minutes on a 2-core machine; ``--quick`` about one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from bench.harness import Harness
from bench.intent import IntentResult, run_intent
from bench.plot import plot_reaction
from bench.reaction import (
    BroadcasterImpl,
    Impl,
    PeerImpl,
    PrivateBroadcasterImpl,
    ReactionResult,
    run_reaction,
)
from bench.replay import ReplayRun, run_replay, startup_seconds
from bench.report import deltas, format_deltas, format_table, pct, row, signing_rows
from bench.throughput import ThroughputRun, broadcaster_throughput, peer_throughput

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("reaction", "intent", "throughput", "replay", "signing")

LABELS = {
    "broadcaster": "broadcaster (enclave signer, unix socket)",
    "raw": "hand-written peer (raw websockets + orjson, eth-account, aiohttp)",
    "web3": "web3.py + eth-account bot",
    "raw_intent": "hand-written bot (eth-account in-process, aiohttp to the 3 RPCs itself)",
    "floor": "harness floor (pre-signed, sent on frame arrival)",
    "private": "broadcaster, private intents: replacement bundle at the last of 3 builders",
}


@dataclass(frozen=True)
class Plan:
    quick: bool
    reaction: tuple[tuple[int, int, tuple[str, ...]], ...]
    warmup: int
    intent_trials: int
    throughput_s: float
    replay_sizes: tuple[int, ...]

    @classmethod
    def make(cls, quick: bool, trials: int | None) -> Plan:
        everyone = ("broadcaster", "private", "raw", "web3", "floor")
        batch = ("broadcaster", "private", "raw", "floor")
        one, ten, hundred = (30, 8, 4) if quick else (200, 40, 15)
        if trials is not None:
            one, ten, hundred = trials, max(2, trials // 5), max(2, trials // 10)
        return cls(
            quick,
            ((1, one, everyone), (10, ten, batch), (100, hundred, batch)),
            3 if quick else 5,
            40 if quick else (trials if trials is not None else 200),
            2.0 if quick else 5.0,
            (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000),
        )


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class LoadSampler(threading.Thread):
    """The 1-minute load average every 2 s while the bench runs (other work on the box shows)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop_event.wait(2.0)

    def stop(self) -> dict[str, float]:
        self._stop_event.set()
        s = self.samples or [os.getloadavg()[0]]
        return {
            "start": s[0],
            "end": os.getloadavg()[0],
            "min": min(s),
            "max": max(s),
            "mean": round(sum(s) / len(s), 2),
        }


# -- reaction ---------------------------------------------------------------------------------


async def _reaction(plan: Plan, workdir: Path, fake_delay_ms: float | None) -> list[ReactionResult]:
    names = {n for _, _, ns in plan.reaction for n in ns}
    harnesses = [Harness() for _ in range(len(names) + 1)]
    for h in harnesses:
        await h.__aenter__()
    try:
        impls: list[Impl] = []
        pool = iter(harnesses)
        if "broadcaster" in names:
            impls.append(BroadcasterImpl(next(pool)))
        if "private" in names:  # its own harness, whose RPCs play builders (section 5a)
            builders = Harness(builders=True)
            await builders.__aenter__()
            harnesses.append(builders)
            impls.append(PrivateBroadcasterImpl(builders))
        for name, module in (("raw", "bench.peers.raw"), ("web3", "bench.peers.web3bot"),
                             ("floor", "bench.peers.floor")):  # fmt: skip
            if name in names:
                impls.append(PeerImpl(next(pool), name, LABELS[name], module))
        reaction_plan = list(plan.reaction)
        if fake_delay_ms is not None:
            fake = f"fake-{fake_delay_ms:g}ms"
            impls.append(PeerImpl(next(pool), fake, fake, "bench.peers.floor",
                                  "--delay-ms", str(fake_delay_ms)))  # fmt: skip
            k, trials, ns = reaction_plan[0]
            reaction_plan[0] = (k, trials, (*ns, fake))

        def progress(k: int, done: int, total: int) -> None:
            if done == total or done % 50 == 0:
                log(f"reaction k={k}: {done}/{total} rounds")

        return await run_reaction(impls, reaction_plan, workdir, warmup=plan.warmup,
                                  progress=progress)  # fmt: skip
    finally:
        for h in harnesses:
            await h.__aexit__(None, None, None)


def reaction_rows(results: list[ReactionResult]) -> list[dict[str, Any]]:
    by = {(r.impl, r.k): r for r in results}
    rows = []
    for k in sorted({r.k for r in results}):
        ours = by.get(("broadcaster", k))
        floor = by.get(("floor", k))
        o50 = pct(ours.samples_us, 50) if ours else None
        o99 = pct(ours.samples_us, 99) if ours else None
        floor_note = ""
        if floor and floor.samples_us and o50 is not None:
            f50 = pct(floor.samples_us, 50)
            assert f50 is not None
            floor_note = f"floor p50 {f50:,.0f} µs: broadcaster adds {o50 - f50:,.0f} µs over it"
        for peer in ("web3", "raw"):
            theirs = by.get((peer, k))
            if theirs is None:
                continue
            p50, p99 = pct(theirs.samples_us, 50), pct(theirs.samples_us, 99)
            met = None
            if None not in (o50, o99, p50, p99):
                met = o50 < p50 and o99 < p99  # type: ignore[operator]
            rows.append(
                row(
                    f"reaction.e2e.{k}.vs_{peer}",
                    f"reorg reaction e2e, {k} tx: frame write -> last of 3 RPCs has it",
                    unit="µs", ours="broadcaster", ours_p50=o50, ours_p99=o99,
                    peer=LABELS[peer], peer_p50=p50, peer_p99=p99,
                    target="faster than the peer (p50 and p99)", met=met,
                    n=len(ours.samples_us) if ours else 0, note=floor_note,
                    error=(ours.error if ours else "not run") or theirs.error,
                )
            )  # fmt: skip
        rows.extend(
            row(
                f"reaction.e2e.{k}.{r.impl}",
                f"{LABELS.get(r.impl, r.impl)}, {k} tx",
                unit="µs", ours=r.impl, ours_p50=pct(r.samples_us, 50),
                ours_p99=pct(r.samples_us, 99), target="(what the machine costs)",
                n=len(r.samples_us), error=r.error,
            )
            for r in results
            if r.k == k and r.impl not in ("broadcaster", "web3", "raw")
        )  # fmt: skip
        private = by.get(("private", k))
        if private is not None:
            rows.append(
                row(
                    f"reaction.inproc.{k}.private",
                    f"reorg reaction in-process, {k} tx, private intents (replacement bundles "
                    "to 3 builders)",
                    unit="µs", ours="private", ours_p50=pct(private.in_process_us, 50),
                    ours_p99=pct(private.in_process_us, 99), target="(next to the public one)",
                    n=len(private.in_process_us), error=private.error,
                )
            )  # fmt: skip
        if ours is not None:
            i50, i99 = pct(ours.in_process_us, 50), pct(ours.in_process_us, 99)
            target, met = "(informational)", None
            if k == 1:
                target = "p50 <= 150 µs, p99 <= 500 µs"  # DESIGN.md §8 (revised, issue 14)
                if i50 is not None and i99 is not None:
                    met = i50 <= 150 and i99 <= 500
            rows.append(
                row(
                    f"reaction.inproc.{k}",
                    f"reorg reaction in-process, {k} tx (service log, frame read -> last write)",
                    unit="µs", ours="broadcaster", ours_p50=i50, ours_p99=i99, target=target,
                    met=met, n=len(ours.in_process_us), error=ours.error,
                    note=("exact per-reaction values parsed from the service's "
                          "'reorg reaction: N tx ... in X µs' log lines") if k == 1 else "",
                )
            )  # fmt: skip
    return rows


# -- intent to wire -----------------------------------------------------------------------------


def intent_rows(results: list[IntentResult]) -> list[dict[str, Any]]:
    by = {r.impl: r for r in results}
    ours = by.get("broadcaster")
    o50 = pct(ours.samples_us, 50) if ours else None
    o99 = pct(ours.samples_us, 99) if ours else None
    floor = by.get("floor")
    f50 = pct(floor.samples_us, 50) if floor else None
    note = f"floor p50 {f50:,.0f} µs" if f50 is not None else ""
    rows = []
    for peer in ("raw", "web3"):
        theirs = by.get(peer)
        if theirs is None:
            continue
        p50, p99 = pct(theirs.samples_us, 50), pct(theirs.samples_us, 99)
        target, met = "(informational)", None
        if peer == "raw":
            target = ">= 2x faster than the hand-written bot (p50)"
            met = o50 is not None and p50 is not None and p50 >= 2 * o50
        rows.append(
            row(
                f"intent.e2e.vs_{peer}",
                "intent to wire: bot writes the intent -> its signed tx at the last of 3 RPCs "
                "(journaled, enclave-signed)",
                unit="µs", ours="broadcaster", ours_p50=o50, ours_p99=o99,
                peer=LABELS["raw_intent" if peer == "raw" else peer], peer_p50=p50,
                peer_p99=p99, target=target, met=met,
                n=len(ours.samples_us) if ours else 0, note=note,
                error=(ours.error if ours else "not run") or theirs.error,
            )
        )  # fmt: skip
    if floor is not None:
        rows.append(
            row(
                "intent.e2e.floor",
                "harness floor: the hand-written bot posting a pre-signed tx to the 3 RPCs",
                unit="µs", ours="floor", ours_p50=f50, ours_p99=pct(floor.samples_us, 99),
                target="(what the machine costs)", n=len(floor.samples_us), error=floor.error,
            )
        )  # fmt: skip
    if ours is not None:
        i50, i99 = ours.in_process.get("p50"), ours.in_process.get("p99")
        rows.append(
            row(
                "intent.inproc",
                "intent to wire in-process (broadcaster_intent_seconds: frame read -> last RPC "
                "write of the first attempt)",
                unit="µs", ours="broadcaster", ours_p50=i50, ours_p99=i99, target="p50 <= 300 µs",
                met=i50 is not None and i50 <= 300, n=int(ours.in_process.get("count") or 0),
                note="interpolated inside the histogram's buckets (scraped before/after)",
                error=ours.error,
            )
        )  # fmt: skip
    return rows


# -- throughput ---------------------------------------------------------------------------------


async def _throughput(plan: Plan, workdir: Path) -> tuple[ThroughputRun, ThroughputRun]:
    ours = await broadcaster_throughput(workdir, plan.throughput_s)
    peer = await peer_throughput(workdir, plan.throughput_s)
    return ours, peer


def throughput_rows(ours: ThroughputRun, peer: ThroughputRun) -> list[dict[str, Any]]:
    cpu = ", ".join(
        f"{name} {seconds / max(1, ours.completed) * 1e6:,.0f} µs"
        for name, seconds in ours.cpu_s.items()
    )
    note = (
        f"{ours.completed:,} answered in {ours.seconds:g} s, {ours.delivered:,} reached all 3 "
        f"RPCs, {ours.errors} errors; CPU per intent: {cpu}; peer {peer.completed:,} sent, "
        f"{peer.delivered:,} reached all 3"
    )
    complete = ours.completed > 0 and ours.delivered == ours.completed
    r50, r99 = pct(ours.reaction_us, 50), pct(ours.reaction_us, 99)
    return [
        row(
            "throughput.reaction_under_load",
            "reorg reaction in-process, 1 tx, while the intents above stream (service log)",
            unit="µs", ours="broadcaster", ours_p50=r50, ours_p99=r99,
            target="p99 unchanged under load (compare reaction.inproc.1)",
            n=len(ours.reaction_us), error=ours.error,
            note=f"during {ours.rate:,.0f} intents/s (DESIGN.md §8 asks it at 2,500/s)",
        ),
        row(
            "throughput.intents",
            "intents accepted -> journaled -> signed -> fanned out to 3 RPCs, sustained",
            unit="intents/s", ours="broadcaster", ours_p50=ours.rate, peer="web3.py bot signing "
            "with eth-account, sending to 3 RPCs itself", peer_p50=peer.rate,
            higher_is_better=True, target=">= 2,500/s, every answer at all 3 RPCs",
            met=ours.rate >= 2500 and complete, n=ours.completed, note=note,
            error=ours.error or peer.error,
        )
    ]  # fmt: skip


# -- replay -------------------------------------------------------------------------------------


def replay_rows(runs: list[ReplayRun], startup: float) -> list[dict[str, Any]]:
    rows = []
    for variant in ("bare", "full"):
        mine = [r for r in runs if r.variant == variant]
        if not mine:
            continue
        largest = max(r.heads for r in mine)
        what = ("1 client, bare headers (unverified)" if variant == "bare"
                else "3 clients, Prague headers, keccak-verified")  # fmt: skip
        floor = 200_000 if variant == "bare" else 100_000  # DESIGN.md §8
        for r in mine:
            is_target = r.heads == largest
            net = f"{r.heads / (r.wall_s - startup):,.0f}/s" if r.wall_s > startup else "n/a"
            rows.append(
                row(
                    f"replay.{variant}.{r.heads}",
                    f"replay {r.heads:,} heads, {what}",
                    unit="heads/s", ours="broadcaster replay --json", ours_p50=r.rate,
                    peer="floor: read + orjson.loads each line", peer_p50=r.heads / r.floor_wall_s,
                    higher_is_better=True,
                    target=f">= {floor:,} heads/s (wall)" if is_target else "(scaling)",
                    met=(r.rate >= floor) if is_target else None, n=r.heads,
                    note=(f"wall {r.wall_s:.2f} s incl. ~{startup:.2f} s start-up "
                          f"(net {net}), peak RSS {r.rss_mb:.1f} MB, "
                          f"{r.summary.get('reorgs', '?')} reorgs"),
                    error=r.error,
                )
            )  # fmt: skip
        if len(mine) >= 2:
            a, b = sorted(mine, key=lambda r: r.heads)[-2:]
            marginal = (b.heads - a.heads) / max(1e-9, b.wall_s - a.wall_s)
            rows.append(
                row(
                    f"replay.{variant}.marginal",
                    f"replay marginal rate {a.heads:,} -> {b.heads:,} heads, {variant}",
                    unit="heads/s", ours="broadcaster replay --json", ours_p50=marginal,
                    target="(linear cost: close to the largest run's rate)",
                )
            )  # fmt: skip
            rss = [r.rss_mb for r in sorted(mine, key=lambda r: r.heads)]
            rows.append(
                row(
                    f"replay.{variant}.rss",
                    f"replay peak RSS at {largest:,} heads, {variant}",
                    unit="MB", ours="broadcaster replay --json", ours_p50=rss[-1],
                    target="flat: <= 1.2x the smallest run", met=rss[-1] <= 1.2 * rss[0],
                    note="peak RSS by size: " + ", ".join(
                        f"{r.heads:,}: {r.rss_mb:.1f} MB"
                        for r in sorted(mine, key=lambda r: r.heads)
                    ),
                )
            )  # fmt: skip
    return rows


# -- main ---------------------------------------------------------------------------------------


def _git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                             capture_output=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, text=True, capture_output=True).stdout.strip()  # fmt: skip
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about one minute, fewer trials")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--trials", type=int, help="reaction trials with 1 tx (overrides)")
    parser.add_argument("--fake-delay-ms", type=float,
                        help="also run a fake peer that sleeps this long before sending "
                             "(the harness self-test)")  # fmt: skip
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    plan = Plan.make(args.quick, args.trials)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    sampler = LoadSampler()
    sampler.start()
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    data: dict[str, Any] = {}
    durations: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        for section in SECTIONS:
            if section not in only:
                continue
            t0 = time.monotonic()
            log(f"{section}...")
            try:
                if section == "reaction":
                    results = uvloop.run(_reaction(plan, workdir, args.fake_delay_ms))
                    rows += reaction_rows(results)
                    data["reaction"] = [
                        {"impl": r.impl, "k": r.k, "samples_us": r.samples_us,
                         "in_process_us": r.in_process_us, "error": r.error}
                        for r in results
                    ]  # fmt: skip
                    series: dict[int, dict[str, list[float]]] = {}
                    for r in results:
                        series.setdefault(r.k, {})[LABELS.get(r.impl, r.impl)] = r.samples_us
                        if r.impl == "broadcaster":
                            series[r.k]["broadcaster in-process (log)"] = r.in_process_us
                    plot_reaction(
                        out / "reaction.png",
                        series,
                        "reorg reaction, end to end on loopback (harness frame write -> last of "
                        f"3 RPCs); {'quick' if plan.quick else 'full'} run "
                        f"{datetime.now(UTC):%Y-%m-%d}",
                    )
                elif section == "intent":
                    intents = uvloop.run(run_intent(workdir, plan.intent_trials))
                    rows += intent_rows(intents)
                    data["intent"] = [vars(r) for r in intents]
                elif section == "throughput":
                    ours, peer = uvloop.run(_throughput(plan, workdir))
                    rows += throughput_rows(ours, peer)
                    data["throughput"] = [vars(ours), {**vars(peer)}]
                elif section == "replay":
                    startup = startup_seconds(workdir)
                    runs = run_replay(workdir, list(plan.replay_sizes), log)
                    rows += replay_rows(runs, startup)
                    data["replay"] = {"startup_s": startup, "runs": [vars(r) for r in runs]}
                elif section == "signing":
                    from bench import signing

                    rows += signing_rows(signing.run(plan.quick))
            except Exception as exc:  # one broken section must not lose the others
                traceback.print_exc()
                rows.append(row(f"{section}.failed", f"{section}: the section failed",
                                unit="-", ours="-", ours_p50=None,
                                error=f"{type(exc).__name__}: {exc}"))  # fmt: skip
            durations[section] = round(time.monotonic() - t0, 1)
            log(f"{section} done in {durations[section]:.0f} s")
    load = sampler.stop()
    meta = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if plan.quick else "full",
        "sections": only,
        "git": _git_rev(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_1min": load,
        "durations_s": durations,
        "total_s": round(time.monotonic() - started, 1),
        "plan": {"reaction": plan.reaction, "warmup": plan.warmup,
                 "throughput_s": plan.throughput_s, "replay_sizes": plan.replay_sizes},
    }  # fmt: skip
    result = {"meta": meta, "rows": rows, "data": data}
    print()
    print(f"make bench ({meta['mode']}, {meta['git']}, {meta['cpus']} CPUs, load avg "
          f"{load['min']:.2f}..{load['max']:.2f} (mean {load['mean']:.2f}), "
          f"{meta['total_s']:.0f} s)")  # fmt: skip
    print("ratio = how many times better than the peer (peer/ours for µs, ours/peer for rates)")
    print(format_table(rows))
    results_path = out / "results.json"
    previous_path = out / "results.prev.json"
    if results_path.exists():
        shutil.move(results_path, previous_path)
    if previous_path.exists():
        try:
            previous = json.loads(previous_path.read_text())
            changes = deltas(rows, previous.get("rows", []))
            if changes:
                pm = previous.get("meta", {})
                print(f"\nvs previous run ({pm.get('started')}, {pm.get('mode')}, "
                      f"{pm.get('git')}):")  # fmt: skip
                print(format_deltas(changes))
        except (OSError, ValueError) as exc:
            print(f"(previous results unreadable: {exc})")
    results_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(
        f"\nwrote {results_path}" + (f" and {out / 'reaction.png'}" if "reaction" in only else "")
    )
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

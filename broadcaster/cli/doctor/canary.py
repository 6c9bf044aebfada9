"""The jitter canary (``broadcaster doctor --canary SECONDS``), the seed's "latencyscope" (§5.2).

It runs on the event loop the service runs on (uvloop) and alternates two probes for the given
time, then stops by itself:

- **wakeup**: ``await asyncio.sleep(0.001)`` and measure how late the loop resumes the coroutine
  (scheduler wake-up latency, timer slack, anything that held the CPU). uvloop's timers have 1 ms
  resolution and may fire *early* (its clock is cached per iteration, in ms); early counts as 0.
- **busy**: for 1 ms, yield to the loop on every turn (``await asyncio.sleep(0)``) and record the
  gap between consecutive turns. The median is what one loop turn costs; the tail is time the
  kernel (or the hypervisor) took the CPU away: preemption, interrupts, steal.

Alongside, involuntary context switches of the loop's thread (``getrusage(RUSAGE_THREAD)``
``ru_nivcsw``, and ``nonvoluntary_ctxt_switches`` of ``/proc/self/status``). If the canary sees a
2 ms stall, the service's event loop, on the same host, suffers the same ones.

Verdict (DESIGN.md §8 sets reaction p99 <= 1 ms; the host alone must not use up that budget):

- ``fail``: wakeup p99 >= 1 ms, or >= 1 % of the busy time lost in stalls of >= 1 ms;
- ``warn``: wakeup p99.9 >= 1 ms, any busy stall >= 1 ms, or >= 100 involuntary switches/s;
- ``ok`` otherwise.

Percentiles come from a log-linear histogram (16 buckets per power of two: within 6 %); max and
the over-100 µs / over-1 ms counts are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from broadcaster.cli.doctor.model import Status, format_cpulist

__all__ = [
    "CanaryResult",
    "Distribution",
    "Histogram",
    "judge",
    "measure",
    "run_canary",
]

US = 1_000
MS = 1_000_000
MAX_SECONDS = 3600.0
_SUB = 16  # buckets per power of two
_RUSAGE_WHO = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


class Histogram:
    """Durations in ns, log-linear buckets; exact max, count and threshold counts."""

    __slots__ = ("count", "counts", "max", "over_1ms", "over_100us", "time_over_1ms")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.max = 0
        self.over_100us = 0
        self.over_1ms = 0
        self.time_over_1ms = 0

    def record(self, ns: int) -> None:
        if ns < _SUB:
            index = max(ns, 0)
        else:
            shift = ns.bit_length() - 5
            index = shift * _SUB + (ns >> shift)
        counts = self.counts
        counts[index] = counts.get(index, 0) + 1
        self.count += 1
        if ns > self.max:
            self.max = ns
        if ns >= 100 * US:
            self.over_100us += 1
            if ns >= MS:
                self.over_1ms += 1
                self.time_over_1ms += ns

    @staticmethod
    def _upper(index: int) -> int:
        """The largest value bucket ``index`` holds."""
        if index < 2 * _SUB:
            return index
        shift, mantissa = divmod(index, _SUB)
        shift -= 1
        mantissa += _SUB
        return ((mantissa + 1) << shift) - 1

    def percentile(self, q: float) -> int:
        """The ``q`` quantile (0..1) in ns: the upper edge of its bucket, capped at the max."""
        if self.count == 0:
            return 0
        rank = min(self.count, max(1, math.ceil(q * self.count - 1e-9)))  # nearest rank
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(self._upper(index), self.max)
        return self.max  # pragma: no cover - counts always add up to count

    def summary(self) -> Distribution:
        return Distribution(
            samples=self.count,
            p50_us=self.percentile(0.5) / US,
            p99_us=self.percentile(0.99) / US,
            p999_us=self.percentile(0.999) / US,
            max_us=self.max / US,
            over_100us=self.over_100us,
            over_1ms=self.over_1ms,
            time_over_1ms_us=self.time_over_1ms / US,
        )


@dataclass(frozen=True, slots=True)
class Distribution:
    """One probe's figures, in µs."""

    samples: int
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float
    over_100us: int
    over_1ms: int
    time_over_1ms_us: float

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "p50_us": round(self.p50_us, 3),
            "p99_us": round(self.p99_us, 3),
            "p999_us": round(self.p999_us, 3),
            "max_us": round(self.max_us, 3),
            "over_100us": self.over_100us,
            "over_1ms": self.over_1ms,
            "time_over_1ms_us": round(self.time_over_1ms_us, 3),
        }


@dataclass(frozen=True, slots=True)
class CanaryResult:
    seconds: float
    elapsed_s: float
    loop: str
    cpus: str
    sleep_us: float
    wakeup: Distribution
    busy: Distribution
    busy_s: float
    involuntary: int
    voluntary: int
    proc_nonvoluntary: int | None
    status: Status
    verdict: str

    @property
    def involuntary_per_s(self) -> float:
        return self.involuntary / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "elapsed_s": round(self.elapsed_s, 6),
            "loop": self.loop,
            "cpus": self.cpus,
            "sleep_us": self.sleep_us,
            "wakeup": self.wakeup.to_json(),
            "busy": self.busy.to_json(),
            "busy_s": round(self.busy_s, 6),
            "ctx_switches": {
                "involuntary": self.involuntary,
                "voluntary": self.voluntary,
                "involuntary_per_s": round(self.involuntary_per_s, 3),
                "proc_nonvoluntary": self.proc_nonvoluntary,
            },
            "status": str(self.status),
            "verdict": self.verdict,
        }


def judge(
    wakeup: Distribution, busy: Distribution, busy_s: float, involuntary_per_s: float
) -> tuple[Status, str]:
    """The verdict rules of the module docstring, as (status, one sentence)."""
    lost = busy.time_over_1ms_us / 1e6 / busy_s if busy_s > 0 else 0.0
    if wakeup.p99_us >= 1000 or lost >= 0.01:
        return Status.FAIL, (
            "The host alone uses the service's 1 ms p99 budget (wakeup p99 "
            f"{wakeup.p99_us:.0f} µs, {lost:.1%} of busy time in >= 1 ms stalls): find the "
            "noisy neighbour (other processes, interrupts, hypervisor steal) and isolate the "
            "service's CPU."
        )
    reasons = []
    if wakeup.p999_us >= 1000:
        reasons.append(f"wakeup p99.9 {wakeup.p999_us:.0f} µs")
    if busy.over_1ms:
        reasons.append(f"{busy.over_1ms} busy-loop stall(s) >= 1 ms (max {busy.max_us:.0f} µs)")
    if involuntary_per_s >= 100:
        reasons.append(f"{involuntary_per_s:.0f} involuntary context switches/s")
    if reasons:
        return Status.WARN, (
            "The event loop gets preempted: "
            + ", ".join(reasons)
            + "; the service's tail latency will show the same. See the CPU checks above."
        )
    return Status.OK, "Quiet: no stall of 1 ms or more; the loop keeps its CPU."


def _ctx_switches() -> tuple[int, int]:
    usage = resource.getrusage(_RUSAGE_WHO)
    return usage.ru_nivcsw, usage.ru_nvcsw


def _proc_nonvoluntary() -> int | None:
    try:
        with open("/proc/thread-self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _affinity_text() -> str:
    getter = getattr(os, "sched_getaffinity", None)
    return format_cpulist(getter(0)) if getter is not None else "unknown"


async def measure(
    seconds: float,
    *,
    sleep_s: float = 0.001,
    busy_s: float = 0.001,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> CanaryResult:
    """Run both probes on the running loop for ``seconds``, then return the figures."""
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"canary seconds must be in (0, {MAX_SECONDS:g}], got {seconds}")
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    wakeup, busy = Histogram(), Histogram()
    sleep_ns, busy_ns = int(sleep_s * 1e9), int(busy_s * 1e9)
    busy_total = 0
    proc0 = _proc_nonvoluntary()
    invol0, vol0 = _ctx_switches()
    start = clock()
    deadline = start + int(seconds * 1e9)
    record = busy.record
    while clock() < deadline:
        before = clock()
        await asyncio.sleep(sleep_s)
        wakeup.record(clock() - before - sleep_ns)
        prev = clock()
        end = min(prev + busy_ns, deadline)
        first = prev
        while prev < end:
            await asyncio.sleep(0)  # one event-loop turn
            now = clock()
            record(now - prev)
            prev = now
        busy_total += prev - first
    elapsed = (clock() - start) / 1e9
    invol1, vol1 = _ctx_switches()
    proc1 = _proc_nonvoluntary()
    wake_d, busy_d = wakeup.summary(), busy.summary()
    invol = invol1 - invol0
    status, verdict = judge(wake_d, busy_d, busy_total / 1e9, invol / elapsed if elapsed else 0)
    return CanaryResult(
        seconds=seconds,
        elapsed_s=elapsed,
        loop=loop_name,
        cpus=_affinity_text(),
        sleep_us=sleep_s * 1e6,
        wakeup=wake_d,
        busy=busy_d,
        busy_s=busy_total / 1e9,
        involuntary=invol,
        voluntary=vol1 - vol0,
        proc_nonvoluntary=None if proc0 is None or proc1 is None else proc1 - proc0,
        status=status,
        verdict=verdict,
    )


def run_canary(seconds: float, cpus: Sequence[int] | None = None) -> CanaryResult:
    """Run :func:`measure` on a fresh uvloop loop (the stock loop if uvloop is missing). With
    ``cpus`` (the config's pinning), this thread runs pinned to them, as the service would, and
    its affinity is restored afterwards."""
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    saved = os.sched_getaffinity(0) if cpus and hasattr(os, "sched_setaffinity") else None
    if saved is not None and cpus:
        os.sched_setaffinity(0, cpus)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(measure(seconds))
    finally:
        if saved is not None:
            os.sched_setaffinity(0, saved)

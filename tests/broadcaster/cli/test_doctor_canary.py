"""The jitter canary: its histogram, its verdict rules, and a short real run (no timing asserts)."""

from __future__ import annotations

import asyncio
import math
import os
import random
from collections.abc import Iterator

import pytest

from broadcaster.cli.doctor.canary import (
    MS,
    US,
    CanaryResult,
    Distribution,
    Histogram,
    judge,
    measure,
    run_canary,
)
from broadcaster.cli.doctor.model import Status


def dist(**fields: float) -> Distribution:
    base = dict(
        samples=1000,
        p50_us=80.0,
        p99_us=150.0,
        p999_us=300.0,
        max_us=400.0,
        over_100us=10,
        over_1ms=0,
        time_over_1ms_us=0.0,
    )
    base.update(fields)
    return Distribution(**base)  # type: ignore[arg-type]


def test_small_durations_are_recorded_exactly() -> None:
    hist = Histogram()
    for ns in range(32):
        hist.record(ns)
    assert [hist.percentile(q) for q in (0.5, 1.0)] == [15, 31]


def test_percentiles_stay_within_a_sixteenth_of_the_true_value() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 2)) for _ in range(20_000)]
    hist = Histogram()
    for value in values:
        hist.record(value)
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99, 0.999):
        true = ordered[math.ceil(q * len(values) - 1e-9) - 1]  # nearest rank
        assert true <= hist.percentile(q) <= true * 17 / 16 + 1
    assert hist.percentile(1.0) == hist.max == max(values)


def test_the_threshold_counts_and_stalled_time_are_exact() -> None:
    hist = Histogram()
    for ns in (50 * US, 100 * US, 999 * US, MS, 3 * MS):
        hist.record(ns)
    summary = hist.summary()
    assert (summary.over_100us, summary.over_1ms) == (4, 2)
    assert summary.time_over_1ms_us == 4000.0
    assert summary.max_us == 3000.0


def test_negative_lateness_counts_as_on_time() -> None:
    hist = Histogram()
    hist.record(-900_000)  # uvloop's ms timers may fire early
    assert hist.summary().p50_us == 0 and hist.max == 0


def test_an_empty_histogram_summarises_to_zeroes() -> None:
    summary = Histogram().summary()
    assert (summary.samples, summary.p99_us, summary.max_us) == (0, 0, 0)


def test_a_quiet_host_gets_an_ok_verdict() -> None:
    status, verdict = judge(dist(), dist(p50_us=1.5, max_us=90), 1.0, 5.0)
    assert status is Status.OK and verdict.startswith("Quiet")


def test_wakeups_late_by_a_millisecond_at_p99_fail() -> None:
    status, verdict = judge(dist(p99_us=1500), dist(), 1.0, 5.0)
    assert status is Status.FAIL and "1500 µs" in verdict


def test_losing_one_percent_of_busy_time_to_long_stalls_fails() -> None:
    busy = dist(over_1ms=5, time_over_1ms_us=10_000, max_us=4000)
    assert judge(dist(), busy, 1.0, 5.0)[0] is Status.FAIL
    assert judge(dist(), busy, 2.0, 5.0)[0] is Status.WARN  # 0.5 %


@pytest.mark.parametrize(
    ("wakeup", "busy", "per_s", "phrase"),
    [
        (dist(p999_us=2000), dist(), 5.0, "wakeup p99.9 2000 µs"),
        (dist(), dist(over_1ms=1, time_over_1ms_us=1200, max_us=1200), 5.0, "1 busy-loop stall"),
        (dist(), dist(), 250.0, "250 involuntary context switches/s"),
    ],
)
def test_rare_stalls_or_frequent_preemption_warn(
    wakeup: Distribution, busy: Distribution, per_s: float, phrase: str
) -> None:
    status, verdict = judge(wakeup, busy, 1.0, per_s)
    assert status is Status.WARN and phrase in verdict


def fake_clock(step_ns: int) -> Iterator[int]:
    now = 0
    while True:
        now += step_ns
        yield now


async def test_the_canary_stops_by_itself_on_a_fake_clock() -> None:
    ticks = fake_clock(50 * US)
    result = await measure(0.01, clock=lambda: next(ticks))
    assert result.wakeup.samples >= 1 and result.busy.samples >= 1
    assert result.busy.p50_us == 50.0  # every turn is exactly one clock step apart


async def test_the_canary_refuses_unbounded_runs() -> None:
    with pytest.raises(ValueError, match="canary seconds"):
        await measure(0)
    with pytest.raises(ValueError, match="canary seconds"):
        await measure(1e9)


def test_a_short_canary_on_uvloop_returns_a_well_formed_distribution() -> None:
    result = run_canary(0.2)
    assert isinstance(result, CanaryResult)
    assert result.loop == "uvloop"
    assert result.elapsed_s > 0 and result.busy_s > 0
    for d in (result.wakeup, result.busy):
        assert d.samples > 0
        assert 0 <= d.p50_us <= d.p99_us <= d.p999_us <= d.max_us
        assert d.over_1ms <= d.over_100us <= d.samples
    assert result.involuntary >= 0 and result.voluntary >= 0
    assert result.status in (Status.OK, Status.WARN, Status.FAIL) and result.verdict
    data = result.to_json()
    assert data["ctx_switches"]["involuntary"] == result.involuntary
    assert data["status"] == str(result.status)


def test_the_canary_leaves_no_event_loop_behind() -> None:
    run_canary(0.05)
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_a_pinned_canary_runs_on_those_cpus_and_restores_the_affinity() -> None:
    before = os.sched_getaffinity(0)
    cpu = min(before)
    result = run_canary(0.05, cpus=[cpu])
    assert result.cpus == str(cpu)
    assert os.sched_getaffinity(0) == before

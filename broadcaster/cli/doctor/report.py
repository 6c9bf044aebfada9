"""Run every check, judge the whole, and print it for a person or as JSON.

JSON schema (stable; fields are only ever added)::

    {"checks":  [{"id", "title", "status", "value", "why"}, ...],   # in CHECKS order
     "canary":  {...CanaryResult.to_json()...} | null,
     "summary": {"status", "exit_code", "ok", "warn", "fail", "unknown", "canary",
                 "root", "kernel", "cpus_online"}}

``status`` values are ``ok``, ``warn``, ``fail``, ``unknown``. The summary's ``status`` is the
worst of the checks and the canary (``unknown`` never raises it); ``exit_code`` is 1 when anything
failed, else 0.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from broadcaster.cli.doctor.canary import CanaryResult
from broadcaster.cli.doctor.checks_cpu import (
    check_cpu_governor,
    check_cpu_isolation,
    check_cpu_pinning,
    check_cstates,
    check_scheduler_slice,
)
from broadcaster.cli.doctor.checks_memory import check_swap, check_thp_defrag, check_thp_enabled
from broadcaster.cli.doctor.checks_numa import (
    check_numa_balancing,
    check_numa_nic,
    check_numa_process,
)
from broadcaster.cli.doctor.checks_runtime import (
    check_asyncio_debug,
    check_clocksource,
    check_irqbalance,
    check_timer_slack,
    check_uvloop,
)
from broadcaster.cli.doctor.model import Finding, Host, Status, format_cpulist

__all__ = ["CHECKS", "exit_code", "render_json", "render_text", "run_checks", "summarize"]

Check = Callable[[Host, Sequence[int] | None], Finding]

# (id, function) in report order; pinning-aware checks take the config's pinning (None: no config).
CHECKS: tuple[tuple[str, Check], ...] = (
    ("thp.enabled", lambda h, _p: check_thp_enabled(h)),
    ("thp.defrag", lambda h, _p: check_thp_defrag(h)),
    ("mem.swap", lambda h, _p: check_swap(h)),
    ("numa.process", lambda h, _p: check_numa_process(h)),
    ("numa.nic", lambda h, _p: check_numa_nic(h)),
    ("numa.balancing", lambda h, _p: check_numa_balancing(h)),
    ("cpu.isolation", check_cpu_isolation),
    ("cpu.pinning", check_cpu_pinning),
    ("cpu.governor", lambda h, _p: check_cpu_governor(h)),
    ("cpu.cstates", lambda h, _p: check_cstates(h)),
    ("cpu.slice", lambda h, _p: check_scheduler_slice(h)),
    ("irq.balance", lambda h, _p: check_irqbalance(h)),
    ("clock.source", lambda h, _p: check_clocksource(h)),
    ("proc.timer_slack", lambda h, _p: check_timer_slack(h)),
    ("runtime.uvloop", lambda h, _p: check_uvloop(h)),
    ("runtime.debug", lambda h, _p: check_asyncio_debug(h)),
)

_RANK = {Status.OK: 0, Status.UNKNOWN: 0, Status.WARN: 1, Status.FAIL: 2}


def run_checks(host: Host, pinning: Sequence[int] | None = None) -> list[Finding]:
    """Every check, in :data:`CHECKS` order. A check that raises (a bug, or a file in a shape
    no kernel writes) becomes ``unknown`` with the error: the audit always completes."""
    findings = []
    for check_id, check in CHECKS:
        try:
            findings.append(check(host, pinning))
        except Exception as exc:
            findings.append(
                Finding(check_id, check_id, Status.UNKNOWN, "error", f"{type(exc).__name__}: {exc}")
            )
    return findings


def exit_code(findings: Sequence[Finding], canary: CanaryResult | None = None) -> int:
    """1 when any check (or the canary) failed, else 0."""
    statuses = [f.status for f in findings] + ([canary.status] if canary else [])
    return 1 if Status.FAIL in statuses else 0


def summarize(
    host: Host, findings: Sequence[Finding], canary: CanaryResult | None = None
) -> dict[str, Any]:
    statuses = [f.status for f in findings] + ([canary.status] if canary else [])
    worst = max(statuses, key=_RANK.__getitem__, default=Status.OK)
    online = host.online_cpus()
    return {
        "status": str(Status.OK if worst is Status.UNKNOWN else worst),
        "exit_code": exit_code(findings, canary),
        **{str(s): sum(f.status is s for f in findings) for s in Status},
        "canary": str(canary.status) if canary else None,
        "root": str(host.root),
        "kernel": host.read("proc/sys/kernel/osrelease"),
        "cpus_online": format_cpulist(online) if online is not None else None,
    }


def render_json(
    host: Host, findings: Sequence[Finding], canary: CanaryResult | None = None
) -> dict[str, Any]:
    return {
        "checks": [f.to_json() for f in findings],
        "canary": canary.to_json() if canary else None,
        "summary": summarize(host, findings, canary),
    }


_LABEL = {Status.OK: "ok", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.UNKNOWN: "unknown"}


def _why(text: str) -> list[str]:
    return textwrap.wrap(
        text, width=100, initial_indent=" " * 10 + "why: ", subsequent_indent=" " * 15
    )


def _canary_lines(c: CanaryResult) -> list[str]:
    w, b = c.wakeup, c.busy
    return [
        f"canary: {c.elapsed_s:.1f} s on {c.loop}, CPUs {c.cpus}",
        f"  wakeup after {c.sleep_us:g} µs sleep, lateness µs: p50 {w.p50_us:.0f}  "
        f"p99 {w.p99_us:.0f}  p99.9 {w.p999_us:.0f}  max {w.max_us:.0f}  "
        f"(>100 µs: {w.over_100us}, >1 ms: {w.over_1ms} of {w.samples})",
        f"  busy loop turn gaps µs:  p50 {b.p50_us:.1f}  p99 {b.p99_us:.1f}  "
        f"p99.9 {b.p999_us:.1f}  max {b.max_us:.0f}  "
        f"(>100 µs: {b.over_100us}, >1 ms: {b.over_1ms} of {b.samples})",
        f"  involuntary context switches: {c.involuntary} ({c.involuntary_per_s:.1f}/s), "
        f"voluntary {c.voluntary}",
        *textwrap.wrap(
            c.verdict,
            width=100,
            initial_indent=f"  {_LABEL[c.status]:<8}",
            subsequent_indent=" " * 10,
        ),
    ]


def render_text(host: Host, findings: Sequence[Finding], canary: CanaryResult | None = None) -> str:
    """One line per check (status, id, value), the why under each warning and failure, the
    canary's figures, and a summary line."""
    summary = summarize(host, findings, canary)
    lines = [
        f"broadcaster doctor: root {summary['root']}, kernel {summary['kernel'] or 'unknown'}, "
        f"CPUs online {summary['cpus_online'] or 'unknown'}"
    ]
    for f in findings:
        lines.append(f"{_LABEL[f.status]:<8}  {f.id:<17} {f.value}")
        if f.status in (Status.WARN, Status.FAIL) and f.why:
            lines.extend(_why(f.why))
    if canary is not None:
        lines.extend(_canary_lines(canary))
    lines.append(
        f"summary: {summary['ok']} ok, {summary['warn']} warn, {summary['fail']} fail, "
        f"{summary['unknown']} unknown"
        + (f"; canary {summary['canary']}" if canary else "")
        + f" -> {summary['status']} (exit {summary['exit_code']})"
    )
    return "\n".join(lines) + "\n"

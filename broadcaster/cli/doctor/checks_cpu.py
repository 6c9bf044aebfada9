"""CPU checks: isolation and pinning, frequency governor, idle states.

The event loop is one thread. Whatever else the kernel runs on its core (other processes, kernel
threads, interrupts, the scheduler tick) delays the reaction to a reorg; a core that clocks down
or sleeps deeply while the loop waits for a frame takes microseconds to milliseconds to wake.
"""

from __future__ import annotations

from collections.abc import Sequence

from broadcaster.cli.doctor.model import Finding, Host, Status, format_cpulist, parse_cpulist

__all__ = [
    "DEEP_IDLE_US",
    "check_cpu_governor",
    "check_cpu_isolation",
    "check_cpu_pinning",
    "check_cstates",
    "check_scheduler_slice",
    "cmdline_params",
    "isolated_cpus",
]

DEEP_IDLE_US = 10  # idle states with a longer exit latency warn (C1E is ~10 µs, C6 ~100 µs)
_ISOLCPUS_FLAGS = {"nohz", "domain", "managed_irq"}


def cmdline_params(host: Host) -> dict[str, str] | None:
    """Kernel parameters from ``/proc/cmdline`` (``name=value``; bare names map to ``""``).
    Everything after ``--`` belongs to init and is left out."""
    text = host.read("proc/cmdline")
    if text is None:
        return None
    params: dict[str, str] = {}
    for token in text.split():
        if token == "--":
            break
        name, _, value = token.partition("=")
        params[name] = value
    return params


def _cmdline_cpus(value: str) -> frozenset[int]:
    """``isolcpus=nohz,domain,2-3`` / ``nohz_full=2-3`` -> the CPUs (flags dropped)."""
    parts = [p for p in value.split(",") if p and p not in _ISOLCPUS_FLAGS]
    try:
        return parse_cpulist(",".join(parts))
    except ValueError:
        return frozenset()


def isolated_cpus(host: Host) -> frozenset[int] | None:
    """CPUs kept from the general scheduler: ``/sys/devices/system/cpu/isolated`` plus any
    ``isolcpus=`` on the kernel command line; ``None`` when neither can be read."""
    sys_text = host.read("sys/devices/system/cpu/isolated")
    params = cmdline_params(host)
    if sys_text is None and params is None:
        return None
    cpus: set[int] = set()
    if sys_text is not None:
        try:
            cpus |= parse_cpulist(sys_text)
        except ValueError:
            pass
    if params and "isolcpus" in params:
        cpus |= _cmdline_cpus(params["isolcpus"])
    return frozenset(cpus)


def _nohz_full(host: Host) -> frozenset[int]:
    text = host.read("sys/devices/system/cpu/nohz_full")
    try:
        cpus = set(parse_cpulist(text)) if text is not None else set()
    except ValueError:
        cpus = set()
    params = cmdline_params(host) or {}
    if "nohz_full" in params:
        cpus |= _cmdline_cpus(params["nohz_full"])
    return frozenset(cpus)


def check_cpu_isolation(host: Host, pinning: Sequence[int] | None = None) -> Finding:
    """Warns when no CPU is isolated, or when the service would run on non-isolated CPUs although
    isolated ones exist. The CPUs judged are the configured pinning when given, else this
    process's affinity (which ``broadcaster run`` inherits from the same shell/unit)."""
    title = "isolated CPUs"
    isolated = isolated_cpus(host)
    if isolated is None:
        return Finding(
            "cpu.isolation", title, Status.UNKNOWN, "unknown", "no /sys isolated list or cmdline"
        )
    online = host.online_cpus()
    nohz = _nohz_full(host)
    runs_on = frozenset(pinning) if pinning else host.allowed_cpus()
    whose = "pinned to" if pinning else "process may run on"
    value = f"isolated {format_cpulist(isolated)}, nohz_full {format_cpulist(nohz)}"
    if runs_on is not None:
        value += f"; {whose} {format_cpulist(runs_on)}"
    if not isolated:
        small = online is not None and len(online) <= 2
        advice = (
            f"this host has only {len(online or ())} CPU(s), too few to isolate one: use a "
            "larger instance in production."
            if small
            else "boot with isolcpus=/nohz_full= for 1-2 cores and pin the service there "
            "([cpu] pinning)."
        )
        return Finding(
            "cpu.isolation",
            title,
            Status.WARN,
            value,
            "No isolated CPUs: other processes, kernel threads and interrupts share the event "
            f"loop's core and preempt it (stalls of tens of µs to ms); {advice}",
        )
    if runs_on is not None and not runs_on <= isolated:
        return Finding(
            "cpu.isolation",
            title,
            Status.WARN,
            value,
            f"CPUs {format_cpulist(isolated)} are isolated but the service would also run on "
            f"{format_cpulist(runs_on - isolated)}, where everything else runs; pin it to the "
            "isolated ones ([cpu] pinning or taskset).",
        )
    return Finding("cpu.isolation", title, Status.OK, value)


def check_cpu_pinning(host: Host, pinning: Sequence[int] | None) -> Finding:
    """The config's ``[cpu] pinning`` (applied with ``os.sched_setaffinity`` at start).

    ``fail``: a listed CPU is not online, or none of them is allowed to this process (cgroup
    cpuset): the service would not start or would silently run elsewhere. ``warn``: some CPUs not
    allowed, CPU 0 listed (it takes most housekeeping), CPUs not isolated although isolated ones
    exist, CPUs on several NUMA nodes, or no pinning while isolated CPUs sit unused.
    """
    title = "configured pinning"
    if pinning is None:
        return Finding("cpu.pinning", title, Status.UNKNOWN, "not checked (no --config)")
    isolated = isolated_cpus(host) or frozenset()
    if not pinning:
        if isolated:
            return Finding(
                "cpu.pinning",
                title,
                Status.WARN,
                "none",
                f"CPUs {format_cpulist(isolated)} are isolated but the config does not pin the "
                f"service to them; set [cpu] pinning = [{', '.join(map(str, sorted(isolated)))}].",
            )
        return Finding("cpu.pinning", title, Status.OK, "none (the OS places the service)")
    pinned = frozenset(pinning)
    value = format_cpulist(pinned)
    online = host.online_cpus()
    if online is not None and not pinned <= online:
        return Finding(
            "cpu.pinning",
            title,
            Status.FAIL,
            value,
            f"[cpu] pinning names CPU(s) {format_cpulist(pinned - online)} that are not online "
            f"here (online: {format_cpulist(online)}); fix the config.",
        )
    allowed = host.allowed_cpus()
    if allowed is not None and not pinned & allowed:
        return Finding(
            "cpu.pinning",
            title,
            Status.FAIL,
            value,
            f"None of CPUs {value} is allowed to this process (allowed: "
            f"{format_cpulist(allowed)}, a cgroup cpuset): sched_setaffinity fails and the "
            "service does not start; fix the config or the cpuset.",
        )
    problems: list[str] = []
    if allowed is not None and not pinned <= allowed:
        problems.append(
            f"CPU(s) {format_cpulist(pinned - allowed)} are outside this process's cpuset "
            "and are silently dropped"
        )
    if 0 in pinned:
        problems.append("CPU 0 takes most timers, interrupts and housekeeping; avoid it")
    if isolated and not pinned <= isolated:
        problems.append(
            f"CPU(s) {format_cpulist(pinned - isolated)} are not isolated "
            f"(isolated: {format_cpulist(isolated)})"
        )
    nodes = host.numa_nodes() or {}
    touched = sorted(n for n, cpus in nodes.items() if cpus & pinned)
    if len(touched) > 1:
        problems.append(
            f"the CPUs span NUMA nodes {', '.join(map(str, touched))}; keep them on one node"
        )
    if problems:
        return Finding("cpu.pinning", title, Status.WARN, value, "; ".join(problems) + ".")
    return Finding("cpu.pinning", title, Status.OK, value)


def check_cpu_governor(host: Host) -> Finding:
    """Anything but ``performance`` warns: cores clock down while the loop waits for a frame
    and take time to ramp up when the reorg arrives."""
    title = "CPU frequency governor"
    governors: dict[str, set[int]] = {}
    for path in host.glob("sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor"):
        text = host.read(str(path.relative_to(host.root)))
        if text:
            governors.setdefault(text, set()).add(int(path.parent.parent.name[3:]))
    if not governors:
        return Finding(
            "cpu.governor",
            title,
            Status.UNKNOWN,
            "no cpufreq",
            "No cpufreq interface: usual on VMs, where the hypervisor sets the frequency.",
        )
    value = ", ".join(f"{g} on {format_cpulist(c)}" for g, c in sorted(governors.items()))
    if set(governors) == {"performance"}:
        return Finding("cpu.governor", title, Status.OK, value)
    return Finding(
        "cpu.governor",
        title,
        Status.WARN,
        value,
        "Cores clock down while the event loop waits for a frame and need µs to ms to ramp up "
        "when the reorg arrives; set the performance governor (cpupower frequency-set -g "
        "performance, or the tuned latency-performance profile).",
    )


def check_cstates(host: Host) -> Finding:
    """Warns when an enabled idle state's exit latency exceeds :data:`DEEP_IDLE_US`: an idle core
    takes that long to start running the loop again when a frame arrives."""
    title = "CPU idle states"
    allowed = host.allowed_cpus()
    cpu = min(allowed) if allowed else 0
    base = f"sys/devices/system/cpu/cpu{cpu}/cpuidle"
    driver = host.read("sys/devices/system/cpu/cpuidle/current_driver")
    max_cstate = host.read("sys/module/intel_idle/parameters/max_cstate")
    states: list[tuple[int, str]] = []
    for path in host.glob(f"{base}/state[0-9]*"):
        rel = path.relative_to(host.root)
        name = host.read(str(rel / "name")) or path.name
        exit_us = host.read(str(rel / "latency"))
        disabled = host.read(str(rel / "disable")) == "1"
        if exit_us is not None and exit_us.isdigit() and not disabled:
            states.append((int(exit_us), name))
    if not states:
        return Finding(
            "cpu.cstates",
            title,
            Status.UNKNOWN,
            f"driver {driver or 'none'}",
            "No cpuidle states listed (container, or the hypervisor handles idle).",
        )
    latency, name = max(states)
    value = f"driver {driver or 'unknown'}, deepest enabled {name} ({latency} µs exit)"
    if max_cstate is not None:
        value += f", intel_idle.max_cstate={max_cstate}"
    if latency <= DEEP_IDLE_US:
        return Finding("cpu.cstates", title, Status.OK, value)
    return Finding(
        "cpu.cstates",
        title,
        Status.WARN,
        value,
        f"Idle cores may enter {name}, which takes {latency} µs to leave when a frame arrives; "
        "boot with intel_idle.max_cstate=1 processor.max_cstate=1, or hold /dev/cpu_dma_latency "
        "at 0 (the tuned latency-performance profile does this).",
    )


SLICE_KERNEL = (6, 12)  # custom EEVDF slices for SCHED_OTHER (sched_setattr sched_runtime)


def _kernel_version(release: str) -> tuple[int, int] | None:
    parts = release.strip().split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or "x")
    except (IndexError, ValueError):
        return None


def check_scheduler_slice(host: Host) -> Finding:
    """Whether the kernel honours ``[cpu] slice_us`` (broadcaster.scheduling; Linux >= 6.12).

    Without it, a process on this host woken by the reaction's RPC writes (a local node) may
    preempt the reaction between its writes: 100-250 µs per write on the development VM
    (docs/performance.md).
    """
    title = "scheduler slice ([cpu] slice_us)"
    release = host.read("proc/sys/kernel/osrelease")
    if release is None:
        return Finding(
            "cpu.slice", title, Status.UNKNOWN, "unknown", "no /proc/sys/kernel/osrelease"
        )
    version = _kernel_version(release)
    value = f"Linux {release.strip()}"
    if version is None:
        return Finding("cpu.slice", title, Status.UNKNOWN, value, "kernel release not understood")
    if version >= SLICE_KERNEL:
        return Finding("cpu.slice", title, Status.OK, f"{value}: custom slices honoured")
    return Finding(
        "cpu.slice",
        title,
        Status.WARN,
        f"{value}: custom slices ignored",
        "[cpu] slice_us needs Linux 6.12; here a process woken by the reaction's RPC writes can "
        "preempt it between writes. Run the service with chrt -f 10 or a negative nice value "
        "(CAP_SYS_NICE), or on isolated CPUs.",
    )

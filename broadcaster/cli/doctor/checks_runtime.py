"""Runtime checks: the clock, the event loop, Python's debug modes, timer slack, irqbalance."""

from __future__ import annotations

from broadcaster.cli.doctor.checks_cpu import isolated_cpus
from broadcaster.cli.doctor.model import Finding, Host, Status, format_cpulist

__all__ = [
    "check_asyncio_debug",
    "check_clocksource",
    "check_irqbalance",
    "check_timer_slack",
    "check_uvloop",
]

_CLOCKSOURCE = "sys/devices/system/clocksource/clocksource0"
# Read in user space through the vDSO straight from the CPU's counter: the cheap ones.
_NATIVE_CLOCKS = {"tsc", "arch_sys_counter", "timebase", "riscv_clocksource"}
# Paravirtual: vDSO-capable on current kernels, but every read goes through a shared page.
_PARAVIRT_CLOCKS = {"kvm-clock", "xen", "hyperv_clocksource_tsc_page"}
DEFAULT_TIMER_SLACK_NS = 50_000


def check_clocksource(host: Host) -> Finding:
    """``tsc`` (or another CPU counter) is ok; a paravirtual clock warns; ``hpet``/``acpi_pm``/
    ``jiffies`` fail: each clock read becomes a syscall plus a slow device register read."""
    title = "clock source"
    current = host.read(f"{_CLOCKSOURCE}/current_clocksource")
    available = (host.read(f"{_CLOCKSOURCE}/available_clocksource") or "").split()
    if current is None:
        return Finding(
            "clock.source", title, Status.UNKNOWN, "unknown", "sysfs clocksource missing"
        )
    value = f"{current} (available: {' '.join(available) or 'unknown'})"
    if current in _NATIVE_CLOCKS:
        return Finding("clock.source", title, Status.OK, value)
    switch = (
        f"Switch: echo tsc > /{_CLOCKSOURCE}/current_clocksource (or boot with clocksource=tsc)"
        if "tsc" in available
        else "Use an instance type that offers tsc"
    )
    if current in _PARAVIRT_CLOCKS:
        extra = (
            " Older kernels cannot read xen in the vDSO: every clock read is a syscall."
            if current == "xen"
            else ""
        )
        return Finding(
            "clock.source",
            title,
            Status.WARN,
            value,
            f"{current} is a paravirtual clock: each read goes through a hypervisor-shared page, "
            f"slower than the TSC, and the service reads the clock per frame.{extra} {switch}; "
            "AWS recommends tsc.",
        )
    return Finding(
        "clock.source",
        title,
        Status.FAIL,
        value,
        f"{current} cannot be read from user space: every clock read is a syscall plus a slow "
        f"device register read (µs each), and the service reads the clock per frame. {switch}.",
    )


def check_uvloop(host: Host) -> Finding:
    """``broadcaster run`` runs on uvloop and refuses to start without it: missing is ``fail``."""
    title = "uvloop"
    try:
        version = host.uvloop()
    except Exception as exc:  # ImportError, or a broken build failing to make a loop
        return Finding(
            "runtime.uvloop",
            title,
            Status.FAIL,
            f"not usable ({type(exc).__name__}: {exc})",
            "broadcaster run needs uvloop (pip install uvloop); the stock asyncio loop is "
            "several times slower per event.",
        )
    return Finding(
        "runtime.uvloop", title, Status.OK, f"uvloop {version} (broadcaster run uses it)"
    )


_DEBUG_ENV = {
    "PYTHONASYNCIODEBUG": "asyncio debug mode",
    "PYTHONDEVMODE": "Python development mode",
    "PYTHONTRACEMALLOC": "tracemalloc",
    "PYTHONMALLOC": "debug allocator",
}


def check_asyncio_debug(host: Host) -> Finding:
    """Debug switches in the environment (which ``broadcaster run`` would inherit) warn."""
    title = "Python debug modes"
    found = [
        f"{name}={host.environ[name]}"
        for name in _DEBUG_ENV
        if host.environ.get(name)
        and not (name == "PYTHONMALLOC" and "debug" not in host.environ[name])
    ]
    if not found:
        return Finding("runtime.debug", title, Status.OK, "off")
    return Finding(
        "runtime.debug",
        title,
        Status.WARN,
        ", ".join(found),
        "Debug modes check every callback and allocation and log slow ones: the event loop runs "
        f"several times slower; unset {', '.join(f.split('=')[0] for f in found)}.",
    )


def check_timer_slack(host: Host) -> Finding:
    """Timer slack above the 50 µs default warns: timed wakeups (sleeps, timeouts) may be that
    late. Wakeups by I/O (a frame arriving) are not delayed by it."""
    title = "timer slack"
    text = host.read("proc/self/timerslack_ns")
    if text is None or not text.isdigit():
        return Finding("proc.timer_slack", title, Status.UNKNOWN, "unknown", "not readable")
    slack = int(text)
    value = f"{slack / 1000:g} µs"
    if slack <= DEFAULT_TIMER_SLACK_NS:
        return Finding("proc.timer_slack", title, Status.OK, value)
    return Finding(
        "proc.timer_slack",
        title,
        Status.WARN,
        value,
        "The kernel may delay this process's timed wakeups (retries, batching deadlines) by up "
        "to the slack; set systemd TimerSlackNSec=50us or lower for the service.",
    )


def _running(host: Host, comm: str) -> bool | None:
    pids = host.glob("proc/[0-9]*/comm")
    if not pids:
        return None
    return any(host.read(str(p.relative_to(host.root))) == comm for p in pids)


def check_irqbalance(host: Host) -> Finding:
    """irqbalance running on a host with isolated CPUs warns: it may move interrupts onto them."""
    title = "irqbalance"
    running = _running(host, "irqbalance")
    if running is None:
        return Finding("irq.balance", title, Status.UNKNOWN, "unknown", "/proc not readable")
    isolated = isolated_cpus(host) or frozenset()
    if not running:
        return Finding("irq.balance", title, Status.OK, "not running")
    if not isolated:
        return Finding("irq.balance", title, Status.OK, "running (spreads interrupts)")
    return Finding(
        "irq.balance",
        title,
        Status.WARN,
        f"running; isolated CPUs {format_cpulist(isolated)}",
        "irqbalance may move NIC and disk interrupts onto the isolated cores (older versions "
        "ignore isolcpus); set IRQBALANCE_BANNED_CPULIST to them, or stop it and pin IRQs "
        "by hand (/proc/irq/*/smp_affinity_list).",
    )

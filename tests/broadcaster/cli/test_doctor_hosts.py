"""Fixture /proc and /sys trees for the doctor's tests, and the parsing they rely on.

``GOOD`` is a tuned two-socket box (THP off, no swap, service on isolated CPUs 2-3 of node 0,
next to its NIC, performance governor, shallow C-states, tsc). ``BAD`` is the same hardware
untuned (THP always with synchronous defrag, swap, spans nodes with the NIC remote, no isolation,
powersave, C6, hpet, high timer slack). Other tests import these and build them in ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from broadcaster.cli.doctor.model import Host, format_cpulist, parse_cpulist


def _status(cpus: str, mems: str) -> str:
    return (
        "Name:\tpython3\nState:\tR (running)\n"
        f"Cpus_allowed:\tc\nCpus_allowed_list:\t{cpus}\n"
        f"Mems_allowed:\t1\nMems_allowed_list:\t{mems}\n"
        "voluntary_ctxt_switches:\t10\nnonvoluntary_ctxt_switches:\t2\n"
    )


def _cpus(count: int, governor: str) -> dict[str, str]:
    return {
        f"sys/devices/system/cpu/cpu{n}/cpufreq/scaling_governor": governor for n in range(count)
    }


def _idle(cpu: int, states: list[tuple[str, int, int]]) -> dict[str, str]:
    files: dict[str, str] = {}
    for i, (name, latency, disabled) in enumerate(states):
        base = f"sys/devices/system/cpu/cpu{cpu}/cpuidle/state{i}"
        files |= {
            f"{base}/name": name,
            f"{base}/latency": str(latency),
            f"{base}/disable": str(disabled),
        }
    return files


_COMMON = {
    "proc/sys/kernel/osrelease": "6.8.0-test",
    "sys/devices/system/cpu/online": "0-15",
    "sys/devices/system/node/node0/cpulist": "0-7",
    "sys/devices/system/node/node1/cpulist": "8-15",
    "sys/class/net/eth0/operstate": "up",
    "sys/devices/system/clocksource/clocksource0/available_clocksource": "tsc hpet acpi_pm",
    "proc/1/comm": "systemd",
    "proc/42/comm": "sshd",
}

GOOD: dict[str, str] = {
    **_COMMON,
    "proc/sys/kernel/osrelease": "6.12.3-test",
    "sys/kernel/mm/transparent_hugepage/enabled": "always madvise [never]",
    "sys/kernel/mm/transparent_hugepage/defrag": "always defer defer+madvise [madvise] never",
    "proc/swaps": "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
    "proc/sys/vm/swappiness": "1",
    "proc/self/status": _status("2-3", "0"),
    "sys/class/net/eth0/device/numa_node": "0",
    "proc/sys/kernel/numa_balancing": "0",
    "sys/devices/system/cpu/isolated": "2-3",
    "sys/devices/system/cpu/nohz_full": "2-3",
    "proc/cmdline": "BOOT_IMAGE=/vmlinuz isolcpus=nohz,domain,2-3 nohz_full=2-3 -- init=1",
    **_cpus(16, "performance"),
    **_idle(2, [("POLL", 0, 0), ("C1", 2, 0), ("C6", 133, 1)]),
    "sys/devices/system/cpu/cpuidle/current_driver": "intel_idle",
    "sys/module/intel_idle/parameters/max_cstate": "1",
    "sys/devices/system/clocksource/clocksource0/current_clocksource": "tsc",
    "proc/self/timerslack_ns": "50000",
}

BAD: dict[str, str] = {
    **_COMMON,
    "sys/kernel/mm/transparent_hugepage/enabled": "[always] madvise never",
    "sys/kernel/mm/transparent_hugepage/defrag": "[always] defer defer+madvise madvise never",
    "proc/swaps": (
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
        "/dev/sda2                               partition\t8388604\t\t1024\t\t-2\n"
    ),
    "proc/sys/vm/swappiness": "60",
    "proc/self/status": _status("0-7", "0-1"),
    "sys/class/net/eth0/device/numa_node": "1",
    "proc/sys/kernel/numa_balancing": "1",
    "sys/devices/system/cpu/isolated": "",
    "proc/cmdline": "BOOT_IMAGE=/vmlinuz quiet",
    **_cpus(16, "powersave"),
    **_idle(0, [("POLL", 0, 0), ("C1", 2, 0), ("C6", 133, 0)]),
    "sys/devices/system/cpu/cpuidle/current_driver": "intel_idle",
    "sys/devices/system/clocksource/clocksource0/current_clocksource": "hpet",
    "proc/self/timerslack_ns": "200000",
    "proc/77/comm": "irqbalance",
}

BAD_ENV = {"PYTHONASYNCIODEBUG": "1"}


def build_tree(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + ("" if text.endswith("\n") else "\n"))
    return root


def no_uvloop() -> str:
    raise ImportError("No module named 'uvloop'")


def make_host(
    root: Path,
    files: Mapping[str, str],
    *,
    affinity: frozenset[int] | None = None,
    environ: Mapping[str, str] | None = None,
    uvloop: Callable[[], str] = lambda: "0.21.0",
) -> Host:
    """A :class:`Host` over ``files`` written under ``root``. ``affinity`` None: the checks fall
    back to the tree's Cpus_allowed_list, as ``--root`` does."""
    build_tree(root, files)
    return Host(root=root, affinity=lambda: affinity, environ=environ or {}, uvloop=uvloop)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("", set()),
        ("(null)", set()),
        ("3", {3}),
        ("0-3,8", {0, 1, 2, 3, 8}),
        ("0-2, 5 ,7-8", {0, 1, 2, 5, 7, 8}),
        ("0-7:2/4", {0, 1, 4, 5}),
    ],
)
def test_kernel_cpu_lists_parse_to_sets(text: str, cpus: set[int]) -> None:
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize("text", ["x", "3-1", "0-7:5/4", "1-"])
def test_malformed_cpu_lists_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpulist(text)


@pytest.mark.parametrize("cpus", [set(), {0}, {0, 1, 2, 5}, {1, 3, 4, 5, 9, 10}])
def test_formatting_a_cpu_set_round_trips_through_parsing(cpus: set[int]) -> None:
    text = format_cpulist(cpus)
    assert (parse_cpulist(text) if cpus else set()) == cpus
    if not cpus:
        assert text == "none"


def test_a_host_reads_missing_files_as_none(tmp_path: Path) -> None:
    host = make_host(tmp_path, {"proc/self/status": "Cpus_allowed_list:\t1-2\n"})
    assert host.read("proc/cmdline") is None
    assert host.status_field("Mems_allowed_list") is None
    assert host.allowed_cpus() == frozenset({1, 2})
    assert host.numa_nodes() is None


def test_injected_affinity_wins_over_the_status_file(tmp_path: Path) -> None:
    host = make_host(tmp_path, GOOD, affinity=frozenset({5}))
    assert host.allowed_cpus() == frozenset({5})
    assert host.numa_nodes() == {0: frozenset(range(8)), 1: frozenset(range(8, 16))}

"""Every doctor check against fixture /proc and /sys trees: a tuned host, an untuned one, and
files that are missing (containers, non-Linux)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broadcaster.cli.doctor.checks_cpu import (
    check_cpu_governor,
    check_cpu_isolation,
    check_cpu_pinning,
    check_cstates,
    check_scheduler_slice,
    isolated_cpus,
)
from broadcaster.cli.doctor.checks_memory import (
    check_swap,
    check_thp_defrag,
    check_thp_enabled,
    selected_choice,
)
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
from broadcaster.cli.doctor.model import Finding, Host, Status
from broadcaster.cli.doctor.report import CHECKS, run_checks
from tests.broadcaster.cli.test_doctor_hosts import BAD, BAD_ENV, GOOD, make_host, no_uvloop

OK, WARN, FAIL, UNKNOWN = Status.OK, Status.WARN, Status.FAIL, Status.UNKNOWN


def good(tmp_path: Path, **changes: str) -> Host:
    files = {**GOOD, **{k.replace("__", "/"): v for k, v in changes.items()}}
    return make_host(tmp_path, files)


def bad(tmp_path: Path) -> Host:
    return make_host(tmp_path, BAD, environ=BAD_ENV, uvloop=no_uvloop)


def empty(tmp_path: Path) -> Host:
    return make_host(tmp_path, {})


def assert_explained(finding: Finding) -> None:
    """A warning or failure always says why, in a sentence or two."""
    assert finding.status in (WARN, FAIL)
    assert 20 < len(finding.why) < 400
    assert finding.why.endswith(".")


def test_the_selected_choice_of_a_sysfs_selector_is_the_bracketed_one() -> None:
    assert selected_choice("always [madvise] never") == "madvise"
    assert selected_choice("madvise") == "madvise"
    assert selected_choice("always madvise never") is None


# --- transparent hugepages --------------------------------------------------------------------


def test_thp_never_is_ok(tmp_path: Path) -> None:
    assert check_thp_enabled(good(tmp_path)).status is OK
    assert check_thp_defrag(good(tmp_path)).status is OK


def test_thp_always_warns_and_always_defrag_on_top_fails(tmp_path: Path) -> None:
    host = bad(tmp_path)
    enabled, defrag = check_thp_enabled(host), check_thp_defrag(host)
    assert (enabled.status, enabled.value) == (WARN, "always")
    assert "madvise or never" in enabled.why
    assert defrag.status is FAIL
    assert_explained(enabled)
    assert_explained(defrag)


def test_always_defrag_only_warns_when_thp_is_opt_in(tmp_path: Path) -> None:
    host = make_host(
        tmp_path,
        {
            "sys/kernel/mm/transparent_hugepage/enabled": "always [madvise] never",
            "sys/kernel/mm/transparent_hugepage/defrag": "[always] madvise never",
        },
    )
    assert check_thp_defrag(host).status is WARN


def test_always_defrag_is_harmless_when_thp_is_off(tmp_path: Path) -> None:
    host = make_host(
        tmp_path,
        {
            "sys/kernel/mm/transparent_hugepage/enabled": "always madvise [never]",
            "sys/kernel/mm/transparent_hugepage/defrag": "[always] madvise never",
        },
    )
    assert check_thp_defrag(host).status is OK


# --- swap -------------------------------------------------------------------------------------


def test_no_swap_is_ok(tmp_path: Path) -> None:
    finding = check_swap(good(tmp_path))
    assert (finding.status, finding.value) == (OK, "off (swappiness 1)")


def test_swap_with_default_swappiness_warns_with_its_size(tmp_path: Path) -> None:
    finding = check_swap(bad(tmp_path))
    assert finding.status is WARN
    assert "8.0 GiB" in finding.value and "1.0 MiB used" in finding.value
    assert "swappiness 60" in finding.value
    assert_explained(finding)


def test_swap_with_low_swappiness_is_ok(tmp_path: Path) -> None:
    files = {**BAD, "proc/sys/vm/swappiness": "1"}
    assert check_swap(make_host(tmp_path, files)).status is OK


# --- NUMA -------------------------------------------------------------------------------------


def test_a_process_on_one_node_next_to_its_nic_is_ok(tmp_path: Path) -> None:
    host = good(tmp_path)
    assert check_numa_process(host).status is OK
    nic = check_numa_nic(host)
    assert nic.status is OK and "eth0: node 0" in nic.value
    assert check_numa_balancing(host).status is OK


def test_a_process_spanning_nodes_with_a_remote_nic_warns(tmp_path: Path) -> None:
    host = bad(tmp_path)
    process, nic, balancing = (
        check_numa_process(host),
        check_numa_nic(host),
        check_numa_balancing(host),
    )
    assert process.status is WARN and "memory on node(s) 0-1" in process.value
    assert nic.status is WARN and nic.why.startswith("eth0 is on another node")
    assert balancing.status is WARN
    for finding in (process, nic, balancing):
        assert_explained(finding)


def test_a_remote_nic_that_is_down_does_not_warn(tmp_path: Path) -> None:
    files = {**BAD, "sys/class/net/eth0/operstate": "down"}
    assert check_numa_nic(make_host(tmp_path, files)).status is OK


def test_a_single_node_machine_passes_every_numa_check(tmp_path: Path) -> None:
    files = {
        "sys/devices/system/node/node0/cpulist": "0-1",
        "sys/class/net/eth0/device/numa_node": "-1",
        "proc/sys/kernel/numa_balancing": "1",
        "proc/self/status": "Cpus_allowed_list:\t0-1\nMems_allowed_list:\t0\n",
    }
    host = make_host(tmp_path, files)
    assert [check_numa_process(host).status, check_numa_nic(host).status] == [OK, OK]
    assert check_numa_balancing(host).value == "1 (single node: inactive)"


# --- isolation and pinning ----------------------------------------------------------------------


def test_isolated_cpus_come_from_sysfs_and_the_kernel_command_line(tmp_path: Path) -> None:
    host = make_host(
        tmp_path,
        {
            "sys/devices/system/cpu/isolated": "2",
            "proc/cmdline": "ro isolcpus=managed_irq,domain,5-6 quiet -- isolcpus=9",
        },
    )
    assert isolated_cpus(host) == frozenset({2, 5, 6})


def test_a_process_confined_to_isolated_cpus_is_ok(tmp_path: Path) -> None:
    finding = check_cpu_isolation(good(tmp_path))
    assert finding.status is OK
    assert finding.value == "isolated 2-3, nohz_full 2-3; process may run on 2-3"


def test_no_isolated_cpus_warns(tmp_path: Path) -> None:
    finding = check_cpu_isolation(bad(tmp_path))
    assert finding.status is WARN and "isolcpus" in finding.why
    assert_explained(finding)


def test_a_two_cpu_host_is_told_it_is_too_small_to_isolate(tmp_path: Path) -> None:
    host = make_host(
        tmp_path, {"sys/devices/system/cpu/online": "0-1", "sys/devices/system/cpu/isolated": ""}
    )
    assert "too few to isolate" in check_cpu_isolation(host).why


def test_running_beside_unused_isolated_cpus_warns(tmp_path: Path) -> None:
    host = make_host(tmp_path, GOOD, affinity=frozenset(range(16)))
    finding = check_cpu_isolation(host)
    assert finding.status is WARN and "0-1,4-15" in finding.why


def test_isolation_judges_the_configured_pinning_when_given(tmp_path: Path) -> None:
    host = make_host(tmp_path, GOOD, affinity=frozenset(range(16)))
    finding = check_cpu_isolation(host, pinning=[2, 3])
    assert finding.status is OK and "pinned to 2-3" in finding.value


def test_pinning_is_unknown_without_a_config(tmp_path: Path) -> None:
    assert check_cpu_pinning(good(tmp_path), None).status is UNKNOWN


def test_pinning_to_isolated_cpus_on_one_node_is_ok(tmp_path: Path) -> None:
    finding = check_cpu_pinning(good(tmp_path), [2, 3])
    assert (finding.status, finding.value) == (OK, "2-3")


def test_pinning_to_a_cpu_that_is_not_online_fails(tmp_path: Path) -> None:
    finding = check_cpu_pinning(good(tmp_path), [3, 40])
    assert finding.status is FAIL and "40" in finding.why
    assert_explained(finding)


def test_pinning_outside_the_cpuset_fails(tmp_path: Path) -> None:
    finding = check_cpu_pinning(good(tmp_path), [8, 9])
    assert finding.status is FAIL and "cpuset" in finding.why


def test_pinning_to_cpu_zero_across_nodes_off_the_isolated_set_warns_about_each(
    tmp_path: Path,
) -> None:
    host = make_host(tmp_path, GOOD, affinity=frozenset(range(16)))
    finding = check_cpu_pinning(host, [0, 2, 9])
    assert finding.status is WARN
    assert "CPU 0" in finding.why
    assert "0,9 are not isolated" in finding.why
    assert "span NUMA nodes 0, 1" in finding.why


def test_no_pinning_while_isolated_cpus_wait_warns_with_the_line_to_add(tmp_path: Path) -> None:
    finding = check_cpu_pinning(good(tmp_path), [])
    assert finding.status is WARN and "pinning = [2, 3]" in finding.why
    assert check_cpu_pinning(bad(tmp_path / "b"), []).status is OK


# --- governor, idle states -----------------------------------------------------------------------


def test_the_performance_governor_is_ok_and_powersave_warns(tmp_path: Path) -> None:
    assert check_cpu_governor(good(tmp_path / "g")).value == "performance on 0-15"
    finding = check_cpu_governor(bad(tmp_path / "b"))
    assert (finding.status, finding.value) == (WARN, "powersave on 0-15")
    assert_explained(finding)


def test_mixed_governors_are_listed_per_cpu_range(tmp_path: Path) -> None:
    files = {**GOOD, "sys/devices/system/cpu/cpu10/cpufreq/scaling_governor": "schedutil"}
    finding = check_cpu_governor(make_host(tmp_path, files))
    assert finding.value == "performance on 0-9,11-15, schedutil on 10"
    assert finding.status is WARN


def test_shallow_idle_states_are_ok_and_a_disabled_deep_one_does_not_count(tmp_path: Path) -> None:
    finding = check_cstates(good(tmp_path))
    assert finding.status is OK
    assert "deepest enabled C1 (2 µs exit)" in finding.value


def test_an_enabled_deep_idle_state_warns(tmp_path: Path) -> None:
    finding = check_cstates(bad(tmp_path))
    assert finding.status is WARN and "C6" in finding.why and "133 µs" in finding.why
    assert_explained(finding)


# --- irqbalance, clock, timer slack, runtime ----------------------------------------------------


def test_irqbalance_warns_only_beside_isolated_cpus(tmp_path: Path) -> None:
    assert check_irqbalance(good(tmp_path / "g")).value == "not running"
    assert check_irqbalance(bad(tmp_path / "b")).status is OK
    files = {**GOOD, "proc/77/comm": "irqbalance"}
    finding = check_irqbalance(make_host(tmp_path / "i", files))
    assert finding.status is WARN
    assert_explained(finding)


@pytest.mark.parametrize(
    ("clock", "status"),
    [
        ("tsc", OK),
        ("arch_sys_counter", OK),
        ("kvm-clock", WARN),
        ("xen", WARN),
        ("hpet", FAIL),
        ("acpi_pm", FAIL),
    ],
)
def test_the_clock_source_is_judged_by_what_a_read_costs(
    tmp_path: Path, clock: str, status: Status
) -> None:
    files = {
        "sys/devices/system/clocksource/clocksource0/current_clocksource": clock,
        "sys/devices/system/clocksource/clocksource0/available_clocksource": f"{clock} tsc",
    }
    finding = check_clocksource(make_host(tmp_path, files))
    assert finding.status is status
    if status is not OK:
        assert_explained(finding)
        assert "echo tsc >" in finding.why


def test_xen_clock_mentions_the_syscall_per_read(tmp_path: Path) -> None:
    files = {"sys/devices/system/clocksource/clocksource0/current_clocksource": "xen"}
    finding = check_clocksource(make_host(tmp_path, files))
    assert "syscall" in finding.why and "instance type" in finding.why


def test_default_timer_slack_is_ok_and_a_raised_one_warns(tmp_path: Path) -> None:
    assert check_timer_slack(good(tmp_path / "g")).value == "50 µs"
    finding = check_timer_slack(bad(tmp_path / "b"))
    assert (finding.status, finding.value) == (WARN, "200 µs")


def test_uvloop_present_is_ok_and_missing_fails(tmp_path: Path) -> None:
    assert check_uvloop(good(tmp_path / "g")).value.startswith("uvloop 0.21.0")
    finding = check_uvloop(bad(tmp_path / "b"))
    assert finding.status is FAIL and "ImportError" in finding.value
    assert_explained(finding)


def test_the_real_uvloop_probe_finds_the_installed_uvloop() -> None:
    assert check_uvloop(Host()).status is OK


def test_debug_switches_in_the_environment_warn(tmp_path: Path) -> None:
    assert check_asyncio_debug(good(tmp_path / "g")).value == "off"
    finding = check_asyncio_debug(bad(tmp_path / "b"))
    assert (finding.status, finding.value) == (WARN, "PYTHONASYNCIODEBUG=1")
    quiet = make_host(tmp_path / "m", {}, environ={"PYTHONMALLOC": "malloc"})
    assert check_asyncio_debug(quiet).status is OK


# --- missing files ------------------------------------------------------------------------------


def test_every_file_based_check_is_unknown_on_an_empty_root(tmp_path: Path) -> None:
    findings = {f.id: f for f in run_checks(empty(tmp_path), pinning=None)}
    assert list(findings) == [check_id for check_id, _ in CHECKS]
    runtime = {"runtime.uvloop", "runtime.debug"}
    for check_id, finding in findings.items():
        expected = OK if check_id in runtime else UNKNOWN
        assert finding.status is expected, finding


def test_a_good_host_has_no_warnings_and_a_bad_host_fails(tmp_path: Path) -> None:
    good_findings = run_checks(good(tmp_path / "g"), pinning=[2, 3])
    assert {f.status for f in good_findings} == {OK}
    bad_statuses = {f.id: f.status for f in run_checks(bad(tmp_path / "b"), pinning=[0])}
    assert {i for i, s in bad_statuses.items() if s is FAIL} == {
        "thp.defrag",
        "clock.source",
        "runtime.uvloop",
    }
    assert OK not in {bad_statuses[i] for i in ("thp.enabled", "mem.swap", "cpu.governor")}


def test_a_check_that_crashes_becomes_unknown_and_the_audit_completes(tmp_path: Path) -> None:
    def broken() -> frozenset[int] | None:
        raise RuntimeError("boom")

    host = Host(root=tmp_path, affinity=broken, environ={}, uvloop=lambda: "1")
    findings = run_checks(host, pinning=None)
    assert len(findings) == len(CHECKS)
    crashed = [f for f in findings if f.value == "error"]
    assert crashed and all("RuntimeError: boom" in f.why for f in crashed)


@pytest.mark.parametrize(
    ("release", "status"),
    [("6.12.3-test", OK), ("6.12.0-rc1", OK), ("7.0.1", OK), ("6.18.44-fc-v595", OK),
     ("6.11.9", WARN), ("5.15.0-91-generic", WARN), ("6.x", UNKNOWN), ("", UNKNOWN)],
)  # fmt: skip
def test_the_scheduler_slice_is_honoured_from_linux_6_12(
    tmp_path: Path, release: str, status: Status
) -> None:
    finding = check_scheduler_slice(make_host(tmp_path, {"proc/sys/kernel/osrelease": release}))
    assert finding.status is status
    if status is WARN:
        assert_explained(finding)
        assert "chrt" in finding.why and finding.value.endswith("custom slices ignored")


def test_the_scheduler_slice_is_unknown_without_a_kernel_release(tmp_path: Path) -> None:
    assert check_scheduler_slice(empty(tmp_path)).status is UNKNOWN
    assert check_scheduler_slice(good(tmp_path / "g")).status is OK
    assert check_scheduler_slice(bad(tmp_path / "b")).status is WARN

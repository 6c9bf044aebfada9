"""``broadcaster doctor``: the JSON schema, the human report, and the exit codes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from broadcaster.cli.doctor.command import host_for_root
from broadcaster.cli.doctor.model import Status
from broadcaster.cli.doctor.report import CHECKS, exit_code, render_json, render_text, run_checks
from broadcaster.cli.main import main
from tests.broadcaster.cli.test_doctor_checks import good as good_host
from tests.broadcaster.cli.test_doctor_hosts import (
    BAD,
    BAD_ENV,
    GOOD,
    build_tree,
    make_host,
    no_uvloop,
)
from tests.broadcaster.settings.test_config import MINIMAL

CHECK_KEYS = {"id", "title", "status", "value", "why"}
SUMMARY_KEYS = {
    "status",
    "exit_code",
    "ok",
    "warn",
    "fail",
    "unknown",
    "canary",
    "root",
    "kernel",
    "cpus_online",
}
DISTRIBUTION_KEYS = {
    "samples",
    "p50_us",
    "p99_us",
    "p999_us",
    "max_us",
    "over_100us",
    "over_1ms",
    "time_over_1ms_us",
}


def config_file(tmp_path: Path, pinning: list[int]) -> Path:
    path = tmp_path / "broadcaster.toml"
    path.write_text(MINIMAL + f"[cpu]\npinning = {pinning}\n")
    return path


def doctor_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["doctor", "--json", *argv])
    return code, orjson.loads(capsys.readouterr().out)


def assert_schema(report: dict[str, Any]) -> None:
    assert set(report) == {"checks", "canary", "summary"}
    assert [c["id"] for c in report["checks"]] == [check_id for check_id, _ in CHECKS]
    for check in report["checks"]:
        assert set(check) == CHECK_KEYS
        assert check["status"] in {"ok", "warn", "fail", "unknown"}
        assert all(isinstance(check[k], str) for k in CHECK_KEYS)
    assert set(report["summary"]) == SUMMARY_KEYS
    counts = sum(report["summary"][s] for s in ("ok", "warn", "fail", "unknown"))
    assert counts == len(report["checks"])


def test_the_json_report_has_the_stable_schema(tmp_path: Path) -> None:
    host = make_host(tmp_path, BAD, environ=BAD_ENV, uvloop=no_uvloop)
    report = orjson.loads(orjson.dumps(render_json(host, run_checks(host))))
    assert_schema(report)
    assert report["canary"] is None
    summary = report["summary"]
    assert (summary["status"], summary["exit_code"], summary["fail"]) == ("fail", 1, 3)
    assert (summary["kernel"], summary["cpus_online"]) == ("6.8.0-test", "0-15")


def test_every_warning_and_failure_in_the_json_carries_a_why(tmp_path: Path) -> None:
    host = make_host(tmp_path, BAD, environ=BAD_ENV, uvloop=no_uvloop)
    for check in render_json(host, run_checks(host))["checks"]:
        if check["status"] in ("warn", "fail"):
            assert check["why"], check


def test_the_human_report_is_one_line_per_check_with_the_why_under_problems(
    tmp_path: Path,
) -> None:
    host = make_host(tmp_path, BAD, environ=BAD_ENV, uvloop=no_uvloop)
    findings = run_checks(host)
    lines = render_text(host, findings).splitlines()
    assert lines[0].startswith("broadcaster doctor: root ")
    check_lines = [line for line in lines if line[:1] not in (" ", "")][1:-1]
    assert [line.split()[1] for line in check_lines] == [f.id for f in findings]
    assert lines[lines.index(next(li for li in lines if " thp.enabled " in li)) + 1].startswith(
        "          why: Transparent hugepages = always"
    )
    assert lines[-1].startswith("summary: ") and lines[-1].endswith("-> fail (exit 1)")


def test_an_unknown_never_raises_the_overall_status(tmp_path: Path) -> None:
    host = make_host(tmp_path, {}, uvloop=lambda: "0.21.0")
    summary = render_json(host, run_checks(host))["summary"]
    assert summary["status"] == "ok" and summary["unknown"] > 0 and summary["exit_code"] == 0


def test_the_exit_code_is_one_only_when_something_fails(tmp_path: Path) -> None:
    host = good_host(tmp_path)
    findings = run_checks(host, pinning=[2, 3])
    assert exit_code(findings) == 0
    assert exit_code([*findings[:-1], findings[-1].__class__("x", "x", Status.WARN, "v")]) == 0
    assert exit_code([*findings, findings[0].__class__("x", "x", Status.FAIL, "v")]) == 1


def test_doctor_on_a_tuned_fixture_root_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_tree(tmp_path / "root", GOOD)
    code, report = doctor_json(capsys, "--root", str(root))
    assert_schema(report)
    assert code == 0 == report["summary"]["exit_code"]
    by_id = {c["id"]: c for c in report["checks"]}
    # under --root the process's CPUs come from the tree's /proc/self/status, not this process
    assert by_id["cpu.isolation"]["status"] == "ok"
    assert by_id["cpu.pinning"]["status"] == "unknown"


def test_doctor_on_an_untuned_fixture_root_exits_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_tree(tmp_path / "root", BAD)
    code, report = doctor_json(capsys, "--root", str(root))
    assert code == 1
    failed = {c["id"] for c in report["checks"] if c["status"] == "fail"}
    assert failed == {"thp.defrag", "clock.source"}


def test_doctor_prints_the_human_report_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_tree(tmp_path / "root", BAD)
    assert main(["doctor", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "FAIL      clock.source      hpet" in out
    assert "why: hpet cannot be read from user space" in out


def test_doctor_checks_the_configured_pinning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_tree(tmp_path / "root", GOOD)
    code, report = doctor_json(
        capsys, "--root", str(root), "--config", str(config_file(tmp_path, [2, 3]))
    )
    pinning = next(c for c in report["checks"] if c["id"] == "cpu.pinning")
    assert (code, pinning["status"], pinning["value"]) == (0, "ok", "2-3")


def test_doctor_fails_when_the_config_pins_to_a_cpu_this_host_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_tree(tmp_path / "root", GOOD)
    code, report = doctor_json(
        capsys, "--root", str(root), "--config", str(config_file(tmp_path, [3, 64]))
    )
    pinning = next(c for c in report["checks"] if c["id"] == "cpu.pinning")
    assert (code, pinning["status"]) == (1, "fail")


def test_doctor_exits_two_on_an_unreadable_config_or_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err
    assert main(["doctor", "--root", str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("seconds", ["0", "-1", "abc", "7200"])
def test_doctor_refuses_a_canary_length_out_of_bounds(
    seconds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["doctor", "--canary", seconds])
    assert info.value.code == 2
    assert "--canary" in capsys.readouterr().err


def test_doctor_with_a_canary_reports_its_distribution(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_tree(tmp_path / "root", GOOD)
    code, report = doctor_json(capsys, "--root", str(root), "--canary", "0.2")
    assert_schema(report)
    canary = report["canary"]
    assert canary["loop"] == "uvloop"
    assert set(canary["wakeup"]) == set(canary["busy"]) == DISTRIBUTION_KEYS
    assert set(canary["ctx_switches"]) == {
        "involuntary",
        "voluntary",
        "involuntary_per_s",
        "proc_nonvoluntary",
    }
    assert canary["status"] in {"ok", "warn", "fail"} and canary["verdict"]
    # a noisy machine may fail the canary: the exit code follows it, whatever it measured
    assert code == (1 if canary["status"] == "fail" else 0)
    assert report["summary"]["canary"] == canary["status"]


def test_doctor_on_this_machine_completes_with_a_well_formed_report(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = doctor_json(capsys)
    assert_schema(report)
    assert code in (0, 1)


def test_the_real_root_uses_this_processs_affinity_and_other_roots_their_status_file(
    tmp_path: Path,
) -> None:
    assert host_for_root("/").affinity() == frozenset(os.sched_getaffinity(0))
    assert host_for_root(tmp_path).affinity() is None


def test_a_canary_that_cannot_take_the_configured_cpus_runs_unpinned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_tree(tmp_path / "root", GOOD)
    config = config_file(tmp_path, [4000])
    code = main(["doctor", "--root", str(root), "--config", str(config), "--canary", "0.05"])
    captured = capsys.readouterr()
    assert code == 1  # CPU 4000 is not online in the fixture
    assert "canary not pinned" in captured.err
    assert "canary: " in captured.out

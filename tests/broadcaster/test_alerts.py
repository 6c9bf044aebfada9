"""config/alerts.yml: promtool accepts it, its unit tests pass, it only names real metrics."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from broadcaster.metrics import DESIGN_METRIC_NAMES
from tests.broadcaster.test_metrics import exercised, exposed_samples
from tests.prometheus import prometheus_binary, running_prometheus

CONFIG = Path(__file__).resolve().parents[2] / "config"

# promtool and a real Prometheus server check every rule here (the Makefile's `prometheus`
# target installs them; `make unit` leaves this module out).
pytestmark = pytest.mark.e2e


def exposed_names() -> set[str]:
    """Every sample name Metrics exposes (histograms as _bucket/_sum/_count and the base name)."""
    names = set(exposed_samples(exercised().exposition()[0].decode()))
    return names | {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def promql_metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(broadcaster_[a-z0-9_]+)", expr))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [prometheus_binary("promtool"), *args],
        cwd=CONFIG,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_promtool_check_rules_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alert_unit_tests_pass_so_each_rule_fires_when_it_should() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The rules as the real Prometheus loaded them (``/api/v1/rules``; no YAML parser needed)."""
    directory = tmp_path_factory.mktemp("prometheus")
    with running_prometheus([], directory, rule_files=[CONFIG / "alerts.yml"]) as prom:
        groups = prom.api("rules")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_tells_the_operator_what_it_means_and_what_to_do(
    rules: list[dict[str, Any]],
) -> None:
    assert len(rules) >= 10
    for rule in rules:
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations["summary"], rule["name"]
        assert len(str(annotations["description"])) > 80, rule["name"]
        assert rule["labels"] == {"severity": "critical"} or rule["labels"] == {
            "severity": "warning"
        }


def test_the_issue_s_alerts_all_exist(rules: list[dict[str, Any]]) -> None:
    names = {rule["name"] for rule in rules}
    assert {
        "BroadcasterReorgDeeperThan3",
        "BroadcasterDeepReorg",
        "BroadcasterNoHeads",
        "BroadcasterResendsSpiking",
        "BroadcasterSignerErrors",
        "BroadcasterClientLagging",
        "BroadcasterClientDown",
        "BroadcasterReactionSlow",
    } <= names


def test_alert_expressions_only_name_metrics_that_metrics_exposes(
    rules: list[dict[str, Any]],
) -> None:
    exposed = exposed_names()
    assert set(DESIGN_METRIC_NAMES) <= exposed
    for rule in rules:
        unknown = promql_metric_names(str(rule["query"])) - exposed
        assert not unknown, f"{rule['name']}: {unknown}"


def test_every_alert_has_a_promtool_unit_test(rules: list[dict[str, Any]]) -> None:
    tested = set(re.findall(r"alertname: (\w+)", (CONFIG / "alerts.test.yml").read_text()))
    assert {rule["name"] for rule in rules} - tested == {"BroadcasterRejectedHeaders"}

"""config/grafana-dashboard.json: valid JSON whose panels query only metrics Metrics exposes."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from tests.broadcaster.test_alerts import exposed_names, promql_metric_names
from tests.prometheus import running_prometheus

DASHBOARD = Path(__file__).resolve().parents[2] / "config/grafana-dashboard.json"


def panels() -> list[dict[str, Any]]:
    document = json.loads(DASHBOARD.read_text())
    found = []
    for panel in document["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return [p for p in found if p["type"] != "row"]


def test_the_dashboard_is_valid_json_with_unique_panel_ids_and_a_datasource_variable() -> None:
    document = json.loads(DASHBOARD.read_text())
    assert document["uid"] and document["title"]
    ids = [p["id"] for p in document["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in document["templating"]["list"]}
    assert {"datasource", "instance"} <= variables


def test_every_panel_queries_only_metrics_that_metrics_exposes() -> None:
    exposed = exposed_names()
    for panel in panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = promql_metric_names(target["expr"])
            assert names, f"{panel['title']}: no broadcaster metric in {target['expr']}"
            assert names <= exposed, f"{panel['title']}: unknown {names - exposed}"


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    used = {name for p in panels() for t in p["targets"] for name in promql_metric_names(t["expr"])}
    assert {
        "broadcaster_tip_number",
        "broadcaster_heads_total",
        "broadcaster_client_up",
        "broadcaster_client_head_lag_blocks",
        "broadcaster_reorgs_total",
        "broadcaster_reorg_depth_bucket",
        "broadcaster_resends_total",
        "broadcaster_reaction_seconds_bucket",
        "broadcaster_intent_seconds_bucket",
        "broadcaster_sign_seconds_bucket",
        "broadcaster_broadcast_seconds_bucket",
        "broadcaster_broadcast_errors_total",
        "broadcaster_pending_transactions",
        "broadcaster_intents_total",
        "broadcaster_bundles_total",
        "broadcaster_private_sends_total",
    } <= used
    reaction = [t["expr"] for p in panels() for t in p["targets"] if "reaction" in t["expr"]]
    assert any("histogram_quantile(0.5," in e for e in reaction)
    assert any("histogram_quantile(0.99," in e for e in reaction)


@pytest.mark.e2e  # a real Prometheus server
def test_every_panel_query_parses_in_a_real_prometheus(tmp_path: Path) -> None:
    grafana_variables = {"$instance": ".*", "$__rate_interval": "1m", "$__range": "1h"}
    with running_prometheus([], tmp_path) as prom:
        for panel in panels():
            for target in panel["targets"]:
                expr = target["expr"]
                for variable, value in grafana_variables.items():
                    expr = expr.replace(variable, value)
                try:
                    prom.query_vector(expr)
                except urllib.error.HTTPError as exc:
                    raise AssertionError(f"{panel['title']}: {expr}: {exc.read()!r}") from exc

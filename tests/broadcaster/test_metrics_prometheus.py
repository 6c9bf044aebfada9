"""A real Prometheus scrapes Metrics' HTTP server and evaluates config/alerts.yml against it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broadcaster.metrics import Metrics, start_metrics_server
from tests.prometheus import prometheus_binary, start_prometheus

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.e2e  # a real Prometheus server
async def test_prometheus_scrapes_the_metrics_and_the_alert_rules_fire(tmp_path: Path) -> None:
    metrics = Metrics(clients=["a", "b"], rpcs=["r"])
    server = await start_metrics_server(metrics, "127.0.0.1", 0)
    try:
        prom = await asyncio.to_thread(
            start_prometheus,
            [f"127.0.0.1:{server.port}"],
            tmp_path / "prometheus",
            rule_files=[REPO / "config/alerts.yml"],
        )
        try:
            await prom.wait_for_async('up{job="broadcaster"}', lambda v: v == 1)
            # Pre-bound series are scraped at 0 before anything happens (rate() alerts need that).
            assert await asyncio.to_thread(prom.query, "broadcaster_reorgs_total") == 0
            assert await asyncio.to_thread(prom.query, "broadcaster_reorg_depth_count") == 0

            for _ in range(3):
                metrics.head("a")
            metrics.tip(150)
            metrics.reorg(5)
            metrics.reaction(0.0003)
            metrics.broadcast_error("r", "timeout")

            await prom.wait_for_async('broadcaster_heads_total{client="a"}', lambda v: v == 3)
            await prom.wait_for_async("broadcaster_reorgs_total", lambda v: v == 1)
            assert await asyncio.to_thread(prom.query, 'broadcaster_heads_total{client="b"}') == 0
            assert await asyncio.to_thread(prom.query, "broadcaster_tip_number") == 150
            labels = '{rpc="r",kind="timeout"}'
            assert (
                await asyncio.to_thread(prom.query, f"broadcaster_broadcast_errors_total{labels}")
                == 1
            )
            p50 = await asyncio.to_thread(
                prom.query, "histogram_quantile(0.5, broadcaster_reaction_seconds_bucket)"
            )
            assert p50 is not None and 0.00025 < p50 <= 0.0003

            # The depth-5 reorg fires the "deeper than 3" rule against the real exposition format.
            firing = 'ALERTS{alertname="BroadcasterReorgDeeperThan3",alertstate="firing"}'
            await prom.wait_for_async(firing, lambda v: v == 1)
            metrics.deep_reorg()
            firing = 'ALERTS{alertname="BroadcasterDeepReorg",alertstate="firing"}'
            await prom.wait_for_async(firing, lambda v: v == 1)
        finally:
            await asyncio.to_thread(prom.stop)
        assert prom.process.poll() is not None
    finally:
        # Also when Prometheus fails to start: a server left open hangs uvloop's close.
        await server.close()


def test_a_missing_prometheus_binary_is_an_error_pointing_at_make_setup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("PROMETHEUS_BIN", raising=False)
    with pytest.raises(RuntimeError, match="make setup"):
        prometheus_binary()
    with pytest.raises(RuntimeError, match="make setup"):
        start_prometheus(["127.0.0.1:1"], Path("/nonexistent-dir-never-created"))

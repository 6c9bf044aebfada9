"""broadcaster.metrics: the exact DESIGN.md section 7 names, updates, /metrics and /healthz."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broadcaster.metrics import (
    DESIGN_METRIC_NAMES,
    REACTION_BUCKETS,
    REORG_DEPTH_BUCKETS,
    Metrics,
    start_metrics_server,
)

# DESIGN.md section 7, verbatim, and the type each one must have.
DESIGN_TYPES = {
    "broadcaster_heads_total": "counter",
    "broadcaster_reorgs_total": "counter",
    "broadcaster_reorg_depth": "histogram",
    "broadcaster_resends_total": "counter",
    "broadcaster_reaction_seconds": "histogram",
    "broadcaster_intent_seconds": "histogram",
    "broadcaster_sign_seconds": "histogram",
    "broadcaster_broadcast_seconds": "histogram",
    "broadcaster_broadcast_errors_total": "counter",
    "broadcaster_client_up": "gauge",
    "broadcaster_client_head_lag_blocks": "gauge",
    "broadcaster_tip_number": "gauge",
    "broadcaster_pending_transactions": "gauge",
    "broadcaster_invalid_messages_total": "counter",
    "broadcaster_intents_total": "counter",
    "broadcaster_bundles_total": "counter",
    "broadcaster_private_sends_total": "counter",
    "broadcaster_is_leader": "gauge",
}
DESIGN_LABELS = {
    "broadcaster_heads_total": {"client"},
    "broadcaster_resends_total": {"reason"},
    "broadcaster_broadcast_seconds_bucket": {"rpc", "le"},
    "broadcaster_broadcast_errors_total": {"rpc", "kind"},
    "broadcaster_client_up": {"client"},
    "broadcaster_client_head_lag_blocks": {"client"},
    "broadcaster_pending_transactions": {"sender"},
    "broadcaster_invalid_messages_total": {"client", "reason"},
    "broadcaster_intents_total": {"status"},
    "broadcaster_bundles_total": {"rpc", "result"},
    "broadcaster_private_sends_total": {"rpc"},
}
SENDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def exercised() -> Metrics:
    metrics = Metrics(clients=["a", "b"], rpcs=["r1", "r2"], senders=[SENDER])
    metrics.head("a")
    metrics.head("a")
    metrics.head("c")  # a client not configured at start still counts
    metrics.client_connected("a", True)
    metrics.client_lag("b", 3)
    metrics.tip(1234)
    metrics.reorg(2)
    metrics.deep_reorg()
    metrics.resend("reorg")
    metrics.reaction(0.000180)
    metrics.sign(0.000040)
    metrics.signer_error("timeout")
    metrics.signer_connected(True)
    metrics.broadcast("r1", 0.002)
    metrics.broadcast_error("r2", "underpriced")
    metrics.pending(SENDER, 4)
    metrics.invalid_message("b", "bad_json")
    metrics.rejected_header("b", "hash_mismatch")
    metrics.quarantine("b", True)
    metrics.intent("included")
    metrics.orderflow("builder", "eth_sendBundle", "accepted")
    metrics.orderflow("protect", "eth_sendPrivateTransaction", "accepted")
    return metrics


def exposed_samples(text: str) -> dict[str, list[dict[str, str]]]:
    samples: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?", line)
            assert match, line
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            samples.setdefault(match.group(1), []).append(labels)
    return samples


def test_the_constant_lists_exactly_the_design_names() -> None:
    assert set(DESIGN_METRIC_NAMES) == set(DESIGN_TYPES)


def test_every_design_name_is_exposed_exactly_with_its_type_and_labels() -> None:
    body, content_type = exercised().exposition()
    assert content_type.startswith("text/plain")
    text = body.decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    samples = exposed_samples(text)
    for name, kind in DESIGN_TYPES.items():
        if kind == "histogram":
            assert types.get(name) == "histogram", name
            assert {f"{name}_bucket", f"{name}_sum", f"{name}_count"} <= set(samples), name
        else:
            # prometheus_client declares counters without _total in TYPE lines of the 0.0.4 format
            declared = name.removesuffix("_total") if kind == "counter" else name
            assert types.get(name, types.get(declared)) == kind, name
            assert name in samples, f"{name} not exposed"
    for name, labels in DESIGN_LABELS.items():
        assert {frozenset(s) for s in samples[name]} == {frozenset(labels)}, name
    assert not any(name.endswith("_created") for name in samples)
    assert not any("_total_total" in name for name in samples)


def test_openmetrics_scrapers_get_openmetrics_with_the_same_families() -> None:
    body, content_type = exercised().exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b'broadcaster_heads_total{client="a"} 2.0' in body


def test_updates_land_on_the_right_series() -> None:
    m = exercised()
    assert m.sample("broadcaster_heads_total", {"client": "a"}) == 2
    assert m.sample("broadcaster_heads_total", {"client": "b"}) == 0  # bound at start
    assert m.sample("broadcaster_heads_total", {"client": "c"}) == 1
    assert m.sample("broadcaster_client_up", {"client": "a"}) == 1
    assert m.sample("broadcaster_client_up", {"client": "b"}) == 0
    assert m.sample("broadcaster_client_head_lag_blocks", {"client": "b"}) == 3
    assert m.sample("broadcaster_tip_number") == 1234
    assert m.sample("broadcaster_reorgs_total") == 1
    assert m.sample("broadcaster_reorg_depth_bucket", {"le": "1.0"}) == 0
    assert m.sample("broadcaster_reorg_depth_bucket", {"le": "2.0"}) == 1
    assert m.sample("broadcaster_deep_reorgs_total") == 1
    assert m.sample("broadcaster_resends_total", {"reason": "reorg"}) == 1
    assert m.sample("broadcaster_resends_total", {"reason": "underpriced"}) == 0
    assert m.sample("broadcaster_reaction_seconds_bucket", {"le": "0.0002"}) == 1
    assert m.sample("broadcaster_reaction_seconds_bucket", {"le": "0.00015"}) == 0
    assert m.sample("broadcaster_sign_seconds_count") == 1
    assert m.sample("broadcaster_signer_errors_total", {"kind": "timeout"}) == 1
    assert m.sample("broadcaster_signer_up") == 1
    assert m.sample("broadcaster_broadcast_seconds_count", {"rpc": "r1"}) == 1
    assert m.sample("broadcaster_broadcast_seconds_count", {"rpc": "r2"}) == 0
    labels = {"rpc": "r2", "kind": "underpriced"}
    assert m.sample("broadcaster_broadcast_errors_total", labels) == 1
    assert m.sample("broadcaster_pending_transactions", {"sender": SENDER}) == 4
    labels = {"client": "b", "reason": "bad_json"}
    assert m.sample("broadcaster_invalid_messages_total", labels) == 1
    labels = {"client": "b", "reason": "hash_mismatch"}
    assert m.sample("broadcaster_rejected_headers_total", labels) == 1
    assert m.sample("broadcaster_intents_total", {"status": "included"}) == 1
    assert m.sample("broadcaster_intents_total", {"status": "failed"}) == 0


def test_histogram_buckets_are_the_documented_ones() -> None:
    families = {
        f.name: f for f in text_string_to_metric_families(exercised().exposition()[0].decode())
    }

    def bounds(name: str) -> list[float]:
        return [float(s.labels["le"]) for s in families[name].samples if s.name.endswith("_bucket")]

    assert bounds("broadcaster_reorg_depth") == [*map(float, REORG_DEPTH_BUCKETS), float("inf")]
    reaction = bounds("broadcaster_reaction_seconds")
    assert reaction[0] == pytest.approx(50e-6)
    assert reaction[-2] == pytest.approx(1.0)
    assert sum(1 for b in reaction if b <= 0.002) >= 12  # fine-grained below 2 ms
    assert list(REACTION_BUCKETS) == sorted(REACTION_BUCKETS)
    sign = bounds("broadcaster_sign_seconds")
    assert sign[0] <= 10e-6 and sign[-2] == pytest.approx(0.1)


def test_each_metrics_owns_its_registry() -> None:
    one, two = Metrics(process_metrics=False), Metrics(process_metrics=False)
    one.reorg(1)
    assert one.sample("broadcaster_reorgs_total") == 1
    assert two.sample("broadcaster_reorgs_total") == 0


async def test_the_server_serves_metrics_and_healthz_on_a_free_port() -> None:
    metrics = exercised()
    status: dict[str, Any] = {"healthy": True, "tip": 1234}
    server = await start_metrics_server(metrics, "127.0.0.1", 0, health=lambda: status)
    try:
        assert server.port > 0
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                text = await response.text()
            assert 'broadcaster_heads_total{client="a"} 2.0' in text
            async with session.get(f"{server.url}/healthz") as response:
                assert response.status == 200
                assert await response.json() == {"healthy": True, "tip": 1234}
            status["healthy"] = False
            async with session.get(f"{server.url}/healthz") as response:
                assert response.status == 503
            async with session.get(f"{server.url}/nope") as response:
                assert response.status == 404
    finally:
        await server.close()


async def test_a_failing_health_callback_answers_500_with_the_reason() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("tracker gone")

    server = await start_metrics_server(Metrics(), "127.0.0.1", 0, health=broken)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.url}/healthz") as response,
        ):
            assert response.status == 500
            assert await response.json() == {
                "healthy": False,
                "error": "RuntimeError: tracker gone",
            }
    finally:
        await server.close()


async def test_a_busy_port_is_an_error_not_a_silent_no_metrics() -> None:
    server = await start_metrics_server(Metrics(), "127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            await start_metrics_server(Metrics(), "127.0.0.1", server.port)
    finally:
        await server.close()

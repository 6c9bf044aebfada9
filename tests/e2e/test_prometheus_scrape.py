"""A real Prometheus scrapes the running service and sees a real reorg counted.

The service runs against a real anvil and the real enclave app (``dev_stack``); Prometheus (the
Debian package, installed by ``make setup``) scrapes its ``/metrics`` every second. After an
``anvil_reorg`` that drops one of our transactions, Prometheus sees ``broadcaster_reorgs_total``
rise, the re-sign counted in ``broadcaster_resends_total{reason="reorg"}`` and the reaction in
``broadcaster_reaction_seconds``; the alert rules load and evaluate against the real series.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

from broadcaster.api.client import GWEI, BroadcasterClient
from broadcaster.dev.stack import dev_stack
from tests.prometheus import running_prometheus

REPO = Path(__file__).resolve().parents[2]


async def test_prometheus_sees_reorgs_total_rise_after_an_anvil_reorg(tmp_path: Path) -> None:
    async with dev_stack(tmp_path / "stack") as stack:
        target = urlsplit(stack.metrics_url).netloc
        with running_prometheus(
            [target], tmp_path / "prometheus", rule_files=[REPO / "config" / "alerts.yml"]
        ) as prometheus:
            await prometheus.wait_for_async('up{job="broadcaster"}', lambda v: v == 1)
            await prometheus.wait_for_async("broadcaster_reorgs_total", lambda v: v == 0)
            async with await BroadcasterClient.connect(stack.api_url, token=stack.token) as bot:
                sent = await bot.send_intent(
                    to="0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                    value=7,
                    gas=21_000,
                    max_fee_per_gas=3 * GWEI,
                    max_priority_fee_per_gas=GWEI,
                )
                for _ in range(200):
                    if (await bot.get_intent(sent["id"]))["status"] == "included":
                        break
                    await asyncio.sleep(0.05)
                await stack.node.rpc("anvil_reorg", 1, [])
                await prometheus.wait_for_async("broadcaster_reorgs_total", lambda v: v == 1)
                await prometheus.wait_for_async(
                    'broadcaster_resends_total{reason="reorg"}', lambda v: v == 1
                )
                await prometheus.wait_for_async(
                    "broadcaster_reaction_seconds_count", lambda v: v == 1
                )
                await prometheus.wait_for_async(
                    'broadcaster_heads_total{client="anvil"}', lambda v: v is not None and v >= 2
                )
                # The depth histogram saw one reorg of depth 1.
                await prometheus.wait_for_async(
                    'broadcaster_reorg_depth_bucket{le="1.0"}', lambda v: v == 1
                )

"""``auth = "flashbots"`` builders with an enclave whose policy names no auth key (DESIGN.md 5a):
the service runs (its public path and its signing are unaffected), and the misconfiguration is
loud -- an error log naming the auth rpcs at the signer's connect, and
``signer_errors_total{kind="no_auth_key"}`` for each request that could not be signed (the
SignerErrors alert) -- never counted as a policy denial, and no unsigned bundle reaches the
builder (a relay would rate-limit or ignore it)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest

from broadcaster.api.client import BroadcasterClient
from broadcaster.dev.anvil import start_anvil
from broadcaster.dev.stack import dev_stack
from broadcaster.service import Service
from tests.builder_double import BuilderDouble
from tests.e2e.test_private_orderflow import Orderflow, first_head, send_private, until

pytestmark = pytest.mark.e2e


def _errors(service: Service, kind: str) -> float:
    value = service.metrics.sample("broadcaster_signer_errors_total", {"kind": kind})
    return value or 0.0


async def test_auth_builders_and_a_signer_without_an_auth_key_alert_and_send_nothing_unsigned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="broadcaster.service")
    async with contextlib.AsyncExitStack() as stack:
        node = await stack.enter_async_context(start_anvil("anvil", "--no-mining"))
        builder = await stack.enter_async_context(BuilderDouble(node.http_url, require_auth=True))
        running = await stack.enter_async_context(
            dev_stack(
                tmp_path,
                node=node,
                endpoints=[("bld", builder.url, "builder", "flashbots")],
                routing_private=True,
            )
        )
        bot = await stack.enter_async_context(
            await BroadcasterClient.connect(running.api_url, token=running.token)
        )
        flow = Orderflow(running, node, builder, None, bot)
        await first_head(flow)
        await send_private(flow)  # signed by a transaction key: the signer works

        async def counted() -> bool:
            return _errors(running.service, "no_auth_key") >= 1

        await until(counted, "signer_errors_total{kind=no_auth_key}")
        assert _errors(running.service, "policy_denied") == 0
        assert [r for r in builder.received if r.method != "eth_chainId"] == []
        assert builder.refused == []  # nothing unsigned was even tried
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("bld" in m and "auth key" in m for m in errors), errors

"""``auth = "flashbots"`` in the orderflow sender (DESIGN.md 5a), against the builder double over
real HTTP: every request carries an ``X-Flashbots-Signature`` the double verifies; one that does
not verify is refused (403) and counted ``failed``; a body the signer will not sign is never sent.

The signer here is a local key (a unit test of the sender); ``tests/e2e/test_private_orderflow.py``
runs the same path with the real enclave's auth key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from broadcaster.rpc.orderflow import OrderflowSender
from signer_client import PolicyDenied
from signer_client.flashbots import auth_signing_hash, body_hash, header_value
from signer_client.signing import LocalKey
from tests.builder_double import BuilderDouble
from tests.enclave.running import AUTH_ADDRESS, AUTH_KEY

KEY = LocalKey(AUTH_KEY)
BUNDLE = {"txs": ["0x02"], "blockNumber": "0x10", "replacementUuid": "u-1"}


async def good_signer(body: bytes) -> str:
    return header_value(KEY.address_bytes, KEY.sign_hash(auth_signing_hash(body_hash(body))))


async def wrong_body_signer(body: bytes) -> str:  # a buggy or hostile signer: another body
    return await good_signer(body + b" ")


async def denying_signer(body: bytes) -> str:
    raise PolicyDenied("auth_key", "this enclave's policy names no auth key")


@pytest.fixture
async def builder() -> AsyncIterator[BuilderDouble]:
    async with BuilderDouble("http://127.0.0.1:9/", require_auth=True) as double:
        yield double  # upstream unused: nothing here builds a block


async def send_one(
    builder: BuilderDouble, sign: Callable[[bytes], Awaitable[str]]
) -> list[tuple[str, str, str]]:
    results: list[tuple[str, str, str]] = []
    done = asyncio.Event()

    def on_result(rpc: str, method: str, result: str) -> None:
        results.append((rpc, method, result))
        done.set()

    sender = OrderflowSender(
        [("bld", builder.url, "builder", "flashbots")], on_result=on_result, sign_auth=sign
    )
    await sender.connect()
    worker = asyncio.create_task(sender.run())
    try:
        assert sender.to_builders("eth_sendBundle", BUNDLE) == 0  # signed first: always queued
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await sender.aclose()
    return results


async def test_an_auth_endpoint_gets_every_request_signed_and_verified(
    builder: BuilderDouble,
) -> None:
    assert await send_one(builder, good_signer) == [("bld", "eth_sendBundle", "accepted")]
    (received,) = builder.sends()
    assert received.signer == AUTH_ADDRESS and received.params == BUNDLE
    assert builder.refused == []


async def test_a_header_that_does_not_recover_to_its_address_is_refused_and_failed(
    builder: BuilderDouble,
) -> None:
    assert await send_one(builder, wrong_body_signer) == [("bld", "eth_sendBundle", "failed")]
    assert builder.sends() == []
    (why,) = builder.refused
    assert "signed by" in why


async def test_a_body_the_signer_will_not_sign_is_never_sent(builder: BuilderDouble) -> None:
    assert await send_one(builder, denying_signer) == [("bld", "eth_sendBundle", "failed")]
    assert builder.received == [] and builder.refused == []


async def test_the_double_refuses_an_unsigned_bundle_when_auth_is_required(
    builder: BuilderDouble,
) -> None:
    results: list[str] = []
    done = asyncio.Event()

    def on_result(rpc: str, method: str, result: str) -> None:
        results.append(result)
        done.set()

    sender = OrderflowSender([("bld", builder.url, "builder")], on_result=on_result)
    await sender.connect()
    try:
        sender.to_builders("eth_sendBundle", BUNDLE)
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        await sender.aclose()
    assert results == ["failed"]
    assert builder.refused == ["eth_sendBundle: no X-Flashbots-Signature"]


def test_an_auth_endpoint_needs_a_signer_and_an_http_url() -> None:
    with pytest.raises(ValueError, match="no sign_auth"):
        OrderflowSender([("bld", "http://127.0.0.1:9/", "builder", "flashbots")])
    with pytest.raises(ValueError, match="http"):
        OrderflowSender(
            [("bld", "ws://127.0.0.1:9/", "builder", "flashbots")], sign_auth=good_signer
        )

"""``private`` on intents (DESIGN.md 5a): the default from ``[routing] private``, and a clear
refusal when nothing could carry the intent."""

from __future__ import annotations

from typing import Any

import pytest

from broadcaster.api.intents import IntentDefaults, ParamError, parse_intent
from broadcaster.api.server import IntentApi
from tests.broadcaster.api.test_api import (
    CHAIN_ID,
    DEV,
    GWEI,
    INTENT,
    TOKEN,
    StubManager,
    call,
    error_of,
    request,
)


def defaults(**routing: Any) -> IntentDefaults:
    return IntentDefaults(chain_id=CHAIN_ID, accounts=[DEV.lower()], **routing)


def test_an_intent_is_public_unless_it_says_private_or_the_routing_default_does() -> None:
    both = {"private_routes": True, "public_routes": True}
    assert parse_intent(INTENT, defaults(**both)).private is False
    assert parse_intent({**INTENT, "private": True}, defaults(**both)).private is True
    assert parse_intent(INTENT, defaults(private=True, **both)).private is True
    assert (
        parse_intent({**INTENT, "private": False}, defaults(private=True, **both)).private is False
    )


def test_a_private_intent_with_no_private_or_builder_endpoint_is_refused_clearly() -> None:
    with pytest.raises(ParamError) as info:
        parse_intent({**INTENT, "private": True}, defaults())
    assert info.value.field == "private"
    assert 'no [[rpcs]] of kind "private" or "builder"' in info.value.reason


def test_a_public_intent_in_a_deployment_without_public_endpoints_is_refused_clearly() -> None:
    with pytest.raises(ParamError) as info:
        parse_intent(
            {**INTENT, "private": False}, defaults(private_routes=True, public_routes=False)
        )
    assert 'no [[rpcs]] of kind "public"' in info.value.reason


def test_private_must_be_a_boolean() -> None:
    with pytest.raises(ParamError) as info:
        parse_intent({**INTENT, "private": "yes"}, defaults(private_routes=True))
    assert info.value.field == "private"


def test_a_retry_under_the_same_key_with_another_private_value_is_a_conflict() -> None:
    """Review: ``private`` was missing from the idempotency comparison, so a retry flipping it
    was answered with the earlier intent as if it were the same request."""
    from broadcaster.api.intents import idempotency_conflict

    both = defaults(private_routes=True, public_routes=True)
    params = {**INTENT, "key": "k1"}
    earlier = parse_intent(params, both)
    flipped = {**params, "private": True}
    assert idempotency_conflict(flipped, parse_intent(flipped, both), earlier) == "private"
    assert idempotency_conflict(params, parse_intent(params, both), earlier) is None


def private_api(asked: list[str], *, default_private: bool = False) -> IntentApi:
    async def node(method: str, *params: Any) -> Any:
        asked.append(method)
        return "0x5208" if method == "eth_estimateGas" else None

    return IntentApi(
        StubManager(10 * GWEI),  # type: ignore[arg-type]
        chain_id=CHAIN_ID,
        accounts=[DEV],
        tokens=[TOKEN],
        tip_number=lambda: 7,
        passthrough=node,
        routing=(default_private, True, True),
    )


@pytest.mark.parametrize(
    ("params", "default_private"),
    [({"private": True}, False), ({}, True)],
    ids=["private-true", "routing-default"],
)
async def test_eth_send_transaction_without_gas_for_a_private_intent_is_refused_unestimated(
    params: dict[str, Any], default_private: bool
) -> None:
    """Estimating would show the private calldata to a public node (chain reads never go to
    private or builder endpoints): ``gas`` is required, and no node is asked."""
    asked: list[str] = []
    api = private_api(asked, default_private=default_private)
    tx = {k: v for k, v in INTENT.items() if k != "gas"} | params
    code, message = error_of(await call(api, request("eth_sendTransaction", tx)))
    assert code == -32602
    assert "gas" in message and "private" in message
    assert "eth_estimateGas" not in asked


async def test_eth_send_transaction_without_gas_for_a_public_intent_is_still_estimated() -> None:
    asked: list[str] = []
    api = private_api(asked)
    tx = {k: v for k, v in INTENT.items() if k != "gas"} | {"private": False}
    await call(api, request("eth_sendTransaction", tx))  # the stub never signs: "accepted"
    assert asked == ["eth_estimateGas"]
    manager: StubManager = api.manager  # type: ignore[assignment]
    assert [i.gas for i in manager.submitted] == [0x5208]

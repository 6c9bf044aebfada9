"""The intent API in front of the real service: anvil (automine), the enclave app, the tx manager.

What only the whole stack can show: a refused handshake counted in the service's metrics, an
idempotency key that puts one transaction on chain, what cancelling does in each state of an
intent's life, and the status notifications of that life, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from broadcaster.dev.anvil import DEV_ADDRESS
from broadcaster.dev.stack import DevStack, dev_stack
from signer_client import SignedTx
from signer_client.errors import SignerUnavailable

pytestmark = pytest.mark.e2e  # every test runs the real stack: anvil, the enclave app, the service

RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
GWEI = 10**9
WAIT = 20.0  # seconds before a wait counts as a hang (2-core CI boxes), not a timing assertion
INTENT: dict[str, Any] = {
    "to": RECIPIENT,
    "value": "0x1",
    "gas": hex(21_000),
    "maxFeePerGas": hex(3 * GWEI),
    "maxPriorityFeePerGas": hex(GWEI),
}


class Wire:
    """A bare JSON-RPC connection that keeps every notification it sees, in arrival order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.notes: list[dict[str, Any]] = []  # params of broadcaster_subscription messages
        self._ids = itertools.count(1)

    async def _next(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            message: dict[str, Any] = orjson.loads(await self.ws.recv())
        return message

    async def call(self, method: str, *params: Any) -> dict[str, Any]:
        """The whole reply (``result`` or ``error``)."""
        request_id = next(self._ids)
        await self.ws.send(
            orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        )
        while True:
            message = await self._next()
            if message.get("method") == "broadcaster_subscription":
                self.notes.append(message["params"])
            elif message.get("id") == request_id:
                return message

    async def result(self, method: str, *params: Any) -> Any:
        reply = await self.call(method, *params)
        assert "result" in reply, reply
        return reply["result"]

    async def wait_for_note(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        while not any(predicate(n) for n in self.notes):
            message = await self._next()
            if message.get("method") == "broadcaster_subscription":
                self.notes.append(message["params"])

    def events(self, subscription: str, intent_id: str | None = None) -> list[str]:
        return [
            n["result"]["event"]
            for n in self.notes
            if n["subscription"] == subscription
            and (intent_id is None or n["result"]["id"] == intent_id)
        ]

    async def status_becomes(self, intent_id: str, *statuses: str) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + WAIT
        while (got := await self.result("broadcaster_getIntent", intent_id))["status"] not in (
            statuses
        ):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{intent_id} stayed {got['status']}, not {statuses}")
            await asyncio.sleep(0.05)
        return got


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[DevStack]:
    async with dev_stack(tmp_path) as running:
        yield running


@contextlib.asynccontextmanager
async def wire(stack: DevStack) -> AsyncIterator[Wire]:
    async with connect(
        stack.api_url,
        additional_headers={"Authorization": f"Bearer {stack.token}"},
        proxy=None,
        compression=None,
    ) as ws:
        yield Wire(ws)


async def chain_nonce(stack: DevStack) -> int:
    return int(await stack.node.rpc("eth_getTransactionCount", DEV_ADDRESS, "latest"), 16)


async def eventually(check: Callable[[], Any], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def reaches_pool(stack: DevStack, tx_hash: str) -> None:
    """Wait until the node knows ``tx_hash`` (pending or mined)."""

    async def known() -> bool:
        return await stack.node.rpc("eth_getTransactionByHash", tx_hash) is not None

    await eventually(known, f"the node to have {tx_hash}")


async def test_refused_handshakes_are_counted_as_unauthorized(stack: DevStack) -> None:
    metrics = stack.service.metrics
    labels = {"status": "unauthorized"}
    before = metrics.sample("broadcaster_intents_total", labels) or 0
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": stack.token}):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(stack.api_url, additional_headers=headers, proxy=None):
                pass
        assert refused.value.response.status_code == 401
    assert metrics.sample("broadcaster_intents_total", labels) == before + 3
    async with wire(stack) as w:  # the right token still gets in
        assert await w.result("eth_chainId") == hex(31337)


async def test_an_idempotency_key_sent_twice_gives_one_intent_and_one_transaction(
    stack: DevStack,
) -> None:
    async with wire(stack) as w, wire(stack) as other:
        first = await w.result("broadcaster_sendIntent", {**INTENT, "key": "order-42"})
        again = await other.result("broadcaster_sendIntent", {**INTENT, "key": "order-42"})
        assert again["id"] == first["id"] and again["hash"] == first["hash"]
        included = await w.status_becomes(first["id"], "included")
        late = await w.result("broadcaster_sendIntent", {**INTENT, "key": "order-42"})
        assert late["id"] == first["id"] and late["status"] == "included"
        # The same key with other fields is another request under a reused key: an error, not
        # the earlier record (which would tell the bot its new order went through).
        other_value = await w.call(
            "broadcaster_sendIntent", {**INTENT, "key": "order-42", "value": 9}
        )
        assert other_value["error"]["code"] == -32602
        assert other_value["error"]["message"] == (
            f"invalid params: key: already used for intent {first['id']} with a different "
            "value: a key names one request; use a new key for a new one"
        )
        assert other_value["error"]["data"]["id"] == first["id"]
    assert await chain_nonce(stack) == 1
    assert included["hashes"] == [first["hash"]]
    assert stack.service.metrics.sample("broadcaster_intents_total", {"status": "duplicate"}) == 3


async def test_cancelling_an_included_intent_is_refused_with_its_status(stack: DevStack) -> None:
    async with wire(stack) as w:
        sent = await w.result("broadcaster_sendIntent", INTENT)
        await w.status_becomes(sent["id"], "included")
        reply = await w.call("broadcaster_cancelIntent", sent["id"])
    error = reply["error"]
    assert error["code"] == -32000
    assert error["message"] == f"intent {sent['id']} is included: cannot cancel"
    assert error["data"]["status"] == "included"


async def test_cancelling_a_broadcast_intent_mines_a_noop_at_its_nonce_instead(
    stack: DevStack,
) -> None:
    await stack.node.rpc("evm_setAutomine", False)
    async with wire(stack) as w:
        sent = await w.result("broadcaster_sendIntent", {**INTENT, "value": hex(12345)})
        await w.status_becomes(sent["id"], "broadcast")
        cancelled = await w.result("broadcaster_cancelIntent", sent["id"])
        assert cancelled["status"] == "cancelled"
        original, noop = cancelled["hashes"]
        assert original == sent["hash"] and cancelled["hash"] == noop
        # The noop replaced the original in the node's pool (higher fees, same nonce).
        await reaches_pool(stack, noop)
        await stack.node.rpc("evm_mine")
    receipt = await stack.node.rpc("eth_getTransactionReceipt", noop)
    assert receipt is not None and receipt["status"] == "0x1"
    assert await stack.node.rpc("eth_getTransactionReceipt", original) is None
    tx = await stack.node.rpc("eth_getTransactionByHash", noop)
    assert tx["to"].lower() == DEV_ADDRESS.lower() and int(tx["value"], 16) == 0
    assert int(tx["nonce"], 16) == int(sent["nonce"], 16) == 0
    assert await chain_nonce(stack) == 1


class FailingSigner:
    """The enclave unreachable while ``down`` is set; otherwise the real signer."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.down = True

    async def sign_transaction(self, tx: Mapping[str, Any], sender: str) -> SignedTx:
        if self.down:
            raise SignerUnavailable("test: enclave down")
        signed: SignedTx = await self.real.sign_transaction(tx, sender)
        return signed


async def test_cancelling_a_pending_intent_keeps_its_transfer_off_the_chain(
    stack: DevStack,
) -> None:
    manager = stack.service.manager
    assert manager is not None
    signer = FailingSigner(manager.executor.signer)
    manager.executor.signer = signer
    async with wire(stack) as w:
        sent = await w.result("broadcaster_sendIntent", INTENT)
        assert (sent["status"], sent["hash"]) == ("pending", None)
        cancelled = await w.result("broadcaster_cancelIntent", sent["id"])
        assert (cancelled["status"], cancelled["hashes"]) == ("cancelled", [])
        signer.down = False
        later = await w.result("broadcaster_sendIntent", {**INTENT, "value": "0x2"})
        await w.status_becomes(later["id"], "included")
        final = await w.result("broadcaster_getIntent", sent["id"])
    assert final["status"] == "cancelled"
    # Its nonce went to the next intent, or (if that one had already taken the next nonce) to a
    # noop self-transfer that fills the gap: its own transfer never reaches the chain.
    for tx_hash in final["hashes"]:
        tx = await stack.node.rpc("eth_getTransactionByHash", tx_hash)
        assert tx is None or (tx["to"].lower() == DEV_ADDRESS.lower() and tx["value"] == "0x0")
    assert await chain_nonce(stack) == int(later["nonce"], 16) + 1  # no nonce left unused


async def test_eth_send_transaction_while_the_signer_is_down_says_so_and_returns_the_intent(
    stack: DevStack,
) -> None:
    manager = stack.service.manager
    assert manager is not None
    signer = FailingSigner(manager.executor.signer)
    manager.executor.signer = signer
    async with wire(stack) as w:
        reply = await w.call("eth_sendTransaction", INTENT)
        error = reply["error"]
        assert error["code"] == -32000
        intent_id = error["data"]["id"]
        assert error["message"] == (
            f"intent {intent_id} accepted but not signed yet (the signer is unavailable; "
            "signing is retried): follow it with broadcaster_getIntent"
        )
        signer.down = False  # the retry signs and sends it
        included = await w.status_becomes(intent_id, "included")
    assert await stack.node.rpc("eth_getTransactionReceipt", included["hash"]) is not None


async def test_notifications_follow_an_intent_through_its_life_in_order(stack: DevStack) -> None:
    async with wire(stack) as w:
        every = await w.result("broadcaster_subscribe")
        sent = await w.result("broadcaster_sendIntent", INTENT)
        await w.wait_for_note(
            lambda n: n["result"]["id"] == sent["id"] and n["result"]["event"] == "included"
        )
    assert w.events(every, sent["id"]) == ["signed", "broadcast", "included"]
    included = w.notes[-1]["result"]
    assert included["status"] == "included" and included["block"] is not None
    assert included["hash"] == sent["hash"]


async def test_subscriptions_filter_by_intent_id_and_stop_on_unsubscribe(stack: DevStack) -> None:
    await stack.node.rpc("evm_setAutomine", False)
    async with wire(stack) as w:
        a = await w.result("broadcaster_sendIntent", INTENT)
        b = await w.result("broadcaster_sendIntent", {**INTENT, "value": "0x2"})
        for sent in (a, b):  # "broadcast" is written, not yet necessarily in the node's pool
            await reaches_pool(stack, sent["hash"])
        only_a = await w.result("broadcaster_subscribe", [a["id"]])
        every = await w.result("broadcaster_subscribe")
        await stack.node.rpc("evm_mine")
        await w.wait_for_note(lambda n: n["subscription"] == every and n["result"]["id"] == b["id"])
        await w.wait_for_note(lambda n: n["subscription"] == every and n["result"]["id"] == a["id"])
        assert w.events(only_a) == ["included"]
        assert [n["result"]["id"] for n in w.notes if n["subscription"] == only_a] == [a["id"]]
        assert w.events(every, a["id"]) == w.events(every, b["id"]) == ["included"]

        # After unsubscribing, c's inclusion reaches only a subscription made for it.
        c = await w.result("broadcaster_sendIntent", {**INTENT, "value": "0x3"})
        await reaches_pool(stack, c["hash"])
        assert await w.result("broadcaster_unsubscribe", every) is True
        assert await w.result("broadcaster_unsubscribe", every) is False
        probe = await w.result("broadcaster_subscribe", [c["id"]])
        await stack.node.rpc("evm_mine")
        await w.wait_for_note(lambda n: n["subscription"] == probe)
    assert w.events(probe) == ["included"]
    assert w.events(every, c["id"]) == ["signed", "broadcast"]  # nothing after unsubscribing
    assert w.events(only_a, c["id"]) == []

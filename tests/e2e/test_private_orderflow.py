"""Private orderflow end to end (DESIGN.md 5a): a real anvil without auto-mining, the real
enclave app, the service, a recording public RPC and the builder double building anvil's blocks.

A private intent goes to the builder as a bundle for the next block and never to the public
endpoint; each head that passes without it re-targets it under the same ``replacementUuid``; a
real ``anvil_reorg`` that drops it brings the fee-bumped replacement as a bundle for the new next
block; it ends on chain once; cancel and expiry cancel the bundle. A builders-only deployment
(no public endpoint at all) works, its chain reads going to the head client's node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sha3

from broadcaster.api.client import GWEI, ApiError, BroadcasterClient
from broadcaster.dev.anvil import DEV_ADDRESS, AnvilNode, start_anvil
from broadcaster.dev.stack import DevStack, dev_stack
from broadcaster.tx.bundles import replacement_uuid
from tests.builder_double import BuilderDouble, Received
from tests.reliability.rpc_recorder import RecordingRpc

pytestmark = pytest.mark.e2e

RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
# anvil's fourth dev key: the enclave's auth key (X-Flashbots-Signature), never a tx key
AUTH_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"
AUTH_ADDRESS = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"


@dataclass
class Orderflow:
    stack: DevStack
    node: AnvilNode
    builder: BuilderDouble
    public: RecordingRpc | None
    bot: BroadcasterClient


@contextlib.asynccontextmanager
async def orderflow(
    tmp_path: Path, *, with_public: bool, builder_chain_id: int | None = None, auth: bool = False
) -> AsyncIterator[Orderflow]:
    """``auth``: the builder requires X-Flashbots-Signature, the enclave holds an auth key."""
    async with contextlib.AsyncExitStack() as stack:
        node = await stack.enter_async_context(start_anvil("anvil", "--no-mining"))
        builder = await stack.enter_async_context(
            BuilderDouble(node.http_url, chain_id=builder_chain_id, require_auth=auth)
        )
        endpoints: list[tuple[str, str, str] | tuple[str, str, str, str]] = [
            ("builder", builder.url, "builder", "flashbots")
            if auth
            else ("builder", builder.url, "builder")
        ]
        public = None
        if with_public:
            public = await stack.enter_async_context(RecordingRpc(node.http_url))
            endpoints.insert(0, ("public", public.url, "public"))
        running = await stack.enter_async_context(
            dev_stack(
                tmp_path,
                node=node,
                endpoints=endpoints,
                routing_private=not with_public,
                auth_key=AUTH_KEY if auth else None,
            )
        )
        bot = await stack.enter_async_context(
            await BroadcasterClient.connect(running.api_url, token=running.token)
        )
        flow = Orderflow(running, node, builder, public, bot)
        await first_head(flow)
        yield flow


async def first_head(flow: Orderflow) -> None:
    """Blocks until the service follows one: "ready" may come before its subscription is up,
    and anvil --no-mining announces nothing by itself."""
    hub = flow.stack.service.hub
    assert hub is not None
    for _ in range(100):
        await flow.node.rpc("evm_mine")
        with contextlib.suppress(AssertionError):
            await until(lambda: _has_tip(flow), "a first head", limit=1.0)
            return
    raise AssertionError("the service never followed a head")


async def _has_tip(flow: Orderflow) -> bool:
    hub = flow.stack.service.hub
    return hub is not None and hub.tracker.tip is not None


def tip(flow: Orderflow) -> int:
    hub = flow.stack.service.hub
    assert hub is not None and hub.tracker.tip is not None
    return hub.tracker.tip.number


async def until(predicate: Any, what: str, limit: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def mine_empty(flow: Orderflow) -> int:
    """A block without our bundle (anvil mines it directly); returns its number once followed."""
    await flow.node.rpc("evm_mine")
    number = int(await flow.node.rpc("eth_blockNumber"), 16)

    async def followed() -> bool:
        hub = flow.stack.service.hub
        return hub is not None and hub.tracker.tip is not None and tip(flow) == number

    await until(followed, f"the service to follow block {number}")
    return number


async def send_private(flow: Orderflow, **extra: Any) -> dict[str, Any]:
    params = {
        "to": RECIPIENT,
        "value": "0x3e8",
        "gas": hex(21_000),
        "maxFeePerGas": hex(3 * GWEI),
        "maxPriorityFeePerGas": hex(GWEI),
        **extra,
    }
    answer: dict[str, Any] = await flow.bot.request("broadcaster_sendIntent", params)
    return answer


def bundles_for(flow: Orderflow, uuid: str, block: int) -> list[Received]:
    return [
        r
        for r in flow.builder.sends()
        if r.params["replacementUuid"] == uuid and int(r.params["blockNumber"], 16) == block
    ]


def keccak(raw_hex: str) -> str:
    return "0x" + sha3.keccak_256(bytes.fromhex(raw_hex[2:])).hexdigest()


async def status(flow: Orderflow, intent_id: str) -> dict[str, Any]:
    return await flow.bot.get_intent(intent_id)


@pytest.fixture
async def flow(tmp_path: Path) -> AsyncIterator[Orderflow]:
    async with orderflow(tmp_path, with_public=True) as running:
        yield running


async def test_a_private_intent_is_bundled_re_targeted_survives_a_reorg_and_lands_once(
    flow: Orderflow,
) -> None:
    sent = await send_private(flow, private=True)
    uuid = replacement_uuid(sent["id"])
    first_block = tip(flow) + 1
    await flow.builder.wait_for(lambda: bundles_for(flow, uuid, first_block), "the first bundle")
    (first,) = bundles_for(flow, uuid, first_block)
    assert [keccak(raw) for raw in first.params["txs"]] == [sent["hash"]]

    # A head passes without it: the same transaction, re-targeted at the new next block.
    passed = await mine_empty(flow)
    await flow.builder.wait_for(lambda: bundles_for(flow, uuid, passed + 1), "the re-target")
    (again,) = bundles_for(flow, uuid, passed + 1)
    assert again.params["txs"] == first.params["txs"]

    # The builder builds the next block from it.
    await flow.builder.build()
    await until(lambda: _is(flow, sent["id"], "included"), "inclusion of the builder's block")
    included_at = tip(flow)

    # A real reorg drops that block and its transaction.
    reactions = flow.stack.service.metrics.sample("broadcaster_reaction_seconds_count") or 0
    await flow.node.rpc("anvil_reorg", 1, [])
    new_tip = included_at  # same height, another block

    async def replaced() -> bool:
        intent = await status(flow, sent["id"])
        return len(intent["hashes"]) >= 2 and bool(bundles_for(flow, uuid, new_tip + 1))

    await until(replaced, "the replacement bundle for the new next block")
    intent = await status(flow, sent["id"])
    replacement = intent["hashes"][-1]
    arrived = [
        r for r in bundles_for(flow, uuid, new_tip + 1) if keccak(r.params["txs"][0]) == replacement
    ]
    assert arrived, "the replacement went out under the same replacementUuid"
    after = flow.stack.service.metrics.sample("broadcaster_reaction_seconds_count") or 0
    assert after == reactions + 1  # the bundle went out inside the observed reaction

    await flow.builder.build()
    await until(lambda: _is(flow, sent["id"], "included"), "the replacement's inclusion")
    final = await status(flow, sent["id"])
    assert final["hash"] == replacement
    tx = await flow.node.rpc("eth_getTransactionByHash", replacement)
    assert int(tx["maxFeePerGas"], 16) >= 3 * GWEI * 110 // 100
    assert int(tx["maxPriorityFeePerGas"], 16) >= GWEI * 110 // 100
    # On chain once: one nonce used, the first attempt unmined.
    assert int(await flow.node.rpc("eth_getTransactionCount", DEV_ADDRESS, "latest"), 16) == 1
    assert await flow.node.rpc("eth_getTransactionReceipt", sent["hash"]) is None
    # Never a public endpoint; the builder served no chain read.
    assert flow.public is not None
    assert not [raw for raw in flow.public.raws if keccak("0x" + raw.hex()) in final["hashes"]]
    assert flow.builder.unexpected == []
    metrics = flow.stack.service.metrics
    accepted = metrics.sample("broadcaster_bundles_total", {"rpc": "builder", "result": "accepted"})
    assert accepted is not None and accepted >= 4


async def test_a_public_intent_still_goes_to_the_public_endpoint_only(flow: Orderflow) -> None:
    sent = await send_private(flow)

    async def at_public() -> bool:
        assert flow.public is not None
        return any(keccak("0x" + raw.hex()) == sent["hash"] for raw in flow.public.raws)

    await until(at_public, "the public send")
    assert flow.builder.sends() == []


async def test_cancel_cancels_the_bundle(flow: Orderflow) -> None:
    sent = await send_private(flow, private=True)
    uuid = replacement_uuid(sent["id"])
    await flow.builder.wait_for(lambda: flow.builder.sends(), "the bundle")
    await flow.bot.cancel_intent(sent["id"])
    await flow.builder.wait_for(lambda: uuid in flow.builder.cancelled, "eth_cancelBundle")
    assert uuid not in flow.builder.bundles


async def test_expiry_cancels_the_bundle(flow: Orderflow) -> None:
    valid_until = tip(flow) + 1
    sent = await send_private(flow, private=True, validUntilBlock=hex(valid_until))
    uuid = replacement_uuid(sent["id"])
    await flow.builder.wait_for(lambda: bundles_for(flow, uuid, valid_until), "the bundle")
    await mine_empty(flow)  # the last block it may be in passes without it
    await flow.builder.wait_for(lambda: uuid in flow.builder.cancelled, "eth_cancelBundle")
    assert not bundles_for(flow, uuid, valid_until + 1)


async def test_a_builders_only_deployment_sends_every_intent_as_a_bundle(tmp_path: Path) -> None:
    async with orderflow(tmp_path, with_public=False) as only:
        sent = await send_private(only)  # [routing] private = true: no "private" needed
        uuid = replacement_uuid(sent["id"])
        await only.builder.wait_for(lambda: bundles_for(only, uuid, tip(only) + 1), "the bundle")
        await only.builder.build()
        await until(lambda: _is(only, sent["id"], "included"), "inclusion")
        assert only.builder.unexpected == []  # nonce counts, blocks, receipts: the head client's
        assert only.builder.probed == 1  # the start-up eth_chainId screen covers builders too


async def test_a_builder_of_another_chain_is_kept_out_and_private_intents_refused(
    tmp_path: Path,
) -> None:
    """Review: the eth_chainId screen covers every kind; a builder answering chain 1 gets
    nothing of ours, and a private intent is refused clearly instead of going nowhere."""
    async with orderflow(tmp_path, with_public=True, builder_chain_id=1) as flow:
        with pytest.raises(ApiError) as info:
            await send_private(flow, private=True)
        assert 'no [[rpcs]] of kind "private" or "builder"' in str(info.value)
        assert (
            flow.stack.service.metrics.sample(
                "broadcaster_invalid_messages_total",
                {"client": "builder", "reason": "chain_id_mismatch"},
            )
            == 1
        )
        assert flow.builder.probed == 1 and flow.builder.sends() == []


async def _is(flow: Orderflow, intent_id: str, wanted: str) -> bool:
    return (await status(flow, intent_id))["status"] == wanted


async def test_flashbots_auth_every_bundle_signed_by_the_enclaves_auth_key_through_a_reorg(
    tmp_path: Path,
) -> None:
    """``auth = "flashbots"``: the builder double refuses any request whose header does not
    recover to the address it names; every bundle -- the first, the re-target and the reorg's
    replacement -- arrives signed by the enclave's auth key, and the intent lands once."""
    async with orderflow(tmp_path, with_public=False, auth=True) as flow:
        sent = await send_private(flow)
        uuid = replacement_uuid(sent["id"])
        first_block = tip(flow) + 1
        await flow.builder.wait_for(lambda: bundles_for(flow, uuid, first_block), "the bundle")
        passed = await mine_empty(flow)
        await flow.builder.wait_for(lambda: bundles_for(flow, uuid, passed + 1), "the re-target")
        await flow.builder.build()
        await until(lambda: _is(flow, sent["id"], "included"), "inclusion")
        included_at = tip(flow)
        await flow.node.rpc("anvil_reorg", 1, [])

        async def replaced() -> bool:
            intent = await status(flow, sent["id"])
            return len(intent["hashes"]) >= 2 and bool(bundles_for(flow, uuid, included_at + 1))

        await until(replaced, "the signed replacement bundle")
        await flow.builder.build()
        await until(lambda: _is(flow, sent["id"], "included"), "the replacement's inclusion")
        assert flow.builder.refused == []
        signed = [r for r in flow.builder.received if r.method != "eth_chainId"]
        assert flow.builder.sends() and all(r.signer == AUTH_ADDRESS for r in signed)
        assert int(await flow.node.rpc("eth_getTransactionCount", DEV_ADDRESS, "latest"), 16) == 1
        # The auth key signed no transaction: none on chain from it.
        assert int(await flow.node.rpc("eth_getTransactionCount", AUTH_ADDRESS, "latest"), 16) == 0

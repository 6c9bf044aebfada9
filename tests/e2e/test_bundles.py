"""``broadcaster_sendBundle`` end to end (DESIGN.md 5a): a real anvil without auto-mining, the
real enclave app with its real policy, the service and the builder double building anvil's
blocks from the bundles it holds.

A bundle of [our intent, a raw transaction another anvil account signed] goes to the builder as
one ``eth_sendBundle`` for the next block and lands atomically (both in that block, in order); a
real ``anvil_reorg`` drops it; the replacement bundle, under the same ``replacementUuid``, has our
transaction re-signed with fees +10 % at the same nonce and the raw one byte for byte; it lands
again and is on chain once. Hostile bundles are refused naming the rule; a bundle cancel sends
``eth_cancelBundle``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rlp
from eth_account import Account

from broadcaster.api.client import GWEI, ApiError, BroadcasterClient
from broadcaster.dev.anvil import DEV_ADDRESS, DEV_KEY, AnvilNode, start_anvil, start_enclave
from broadcaster.dev.stack import DevStack, dev_stack
from broadcaster.tx.bundles import replacement_uuid
from signer_client.txcodec import SECP256K1_HALF_N
from tests.builder_double import BuilderDouble, Received
from tests.e2e.test_private_orderflow import keccak, until

pytestmark = pytest.mark.e2e

B_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil #1: bot-b
B_ADDRESS = Account.from_key(B_KEY).address
# anvil #4: someone else (the backrun target's sender), no account of ours
OTHER_KEY = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a"
OTHER_ADDRESS = Account.from_key(OTHER_KEY).address
RECIPIENT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
SECP256K1_N = 2 * SECP256K1_HALF_N + 1
INTENT = {
    "to": RECIPIENT,
    "value": "0x3e8",
    "gas": hex(21_000),
    "maxFeePerGas": hex(3 * GWEI),
    "maxPriorityFeePerGas": hex(GWEI),
}


@dataclass
class Flow:
    stack: DevStack
    node: AnvilNode
    builder: BuilderDouble
    bot: BroadcasterClient  # tenant bot-a: DEV_ADDRESS only


def raw_tx(key: str, nonce: int = 0, chain_id: int = 31337, value: int = 7) -> str:
    signed = Account.sign_transaction(
        {
            "type": 2,
            "chainId": chain_id,
            "nonce": nonce,
            "to": RECIPIENT,
            "value": value,
            "gas": 21_000,
            "maxFeePerGas": 3 * GWEI,
            "maxPriorityFeePerGas": GWEI,
        },
        key,
    )
    return "0x" + bytes(signed.raw_transaction).hex()


def high_s(raw: str) -> str:
    """The same type-2 transaction with the high-s twin of its signature (EIP-2's malleability:
    ``s' = n - s``, the y parity flipped): valid secp256k1, refused by every node."""
    body = bytes.fromhex(raw[4:])  # after 0x02
    fields = rlp.decode(body)
    parity = int.from_bytes(fields[9], "big")
    s = int.from_bytes(fields[11], "big")
    fields[9] = b"" if parity else b"\x01"
    fields[11] = (SECP256K1_N - s).to_bytes(32, "big").lstrip(b"\x00")
    return "0x02" + bytes(rlp.encode(fields)).hex()


@contextlib.asynccontextmanager
async def bundle_flow(tmp_path: Path) -> AsyncIterator[Flow]:
    async with contextlib.AsyncExitStack() as stack:
        node = await stack.enter_async_context(start_anvil("anvil", "--no-mining"))
        builder = await stack.enter_async_context(BuilderDouble(node.http_url))
        signer_url = await stack.enter_async_context(
            start_enclave(tmp_path / "enclave", keys=(DEV_KEY, B_KEY))
        )
        running = await stack.enter_async_context(
            dev_stack(
                tmp_path,
                node=node,
                signer_url=signer_url,
                accounts=(DEV_ADDRESS, B_ADDRESS),
                tenants=[("bot-a", "tok-a", [DEV_ADDRESS]), ("bot-b", "tok-b", [B_ADDRESS])],
                endpoints=[("builder", builder.url, "builder")],
                routing_private=True,
            )
        )
        bot = await stack.enter_async_context(
            await BroadcasterClient.connect(running.api_url, token="tok-a")
        )
        flow = Flow(running, node, builder, bot)
        await first_head(flow)
        yield flow


async def first_head(flow: Flow) -> None:
    for _ in range(100):
        await flow.node.rpc("evm_mine")
        with contextlib.suppress(AssertionError):
            await until(lambda: _has_tip(flow), "a first head", limit=1.0)
            return
    raise AssertionError("the service never followed a head")


async def _has_tip(flow: Flow) -> bool:
    hub = flow.stack.service.hub
    return hub is not None and hub.tracker.tip is not None


def tip(flow: Flow) -> int:
    hub = flow.stack.service.hub
    assert hub is not None and hub.tracker.tip is not None
    return hub.tracker.tip.number


def bundles_for(flow: Flow, uuid: str, block: int) -> list[Received]:
    return [
        r
        for r in flow.builder.sends()
        if r.params["replacementUuid"] == uuid and int(r.params["blockNumber"], 16) == block
    ]


async def send_bundle(flow: Flow, txs: list[Any], **extra: Any) -> dict[str, Any]:
    answer: dict[str, Any] = await flow.bot.request("broadcaster_sendBundle", {"txs": txs, **extra})
    return answer


async def refused(flow: Flow, txs: list[Any], **extra: Any) -> str:
    with pytest.raises(ApiError) as caught:
        await send_bundle(flow, txs, **extra)
    assert caught.value.code == -32602, caught.value
    return caught.value.message


async def _status_is(flow: Flow, intent_id: str, wanted: str) -> bool:
    return bool((await flow.bot.get_intent(intent_id))["status"] == wanted)


async def test_a_bundle_with_a_raw_backrun_lands_atomically_survives_a_reorg_and_lands_once(
    tmp_path: Path,
) -> None:
    async with bundle_flow(tmp_path) as flow:
        raw = raw_tx(OTHER_KEY)
        sent = await send_bundle(flow, [INTENT, {"raw": raw}])
        bundle_id, (member,) = sent["id"], sent["intents"]
        ours, theirs = sent["hashes"]
        assert theirs == keccak(raw)
        uuid = replacement_uuid(bundle_id)
        first_block = tip(flow) + 1
        await flow.builder.wait_for(lambda: bundles_for(flow, uuid, first_block), "the bundle")
        (first,) = bundles_for(flow, uuid, first_block)
        assert [keccak(t) for t in first.params["txs"]] == [ours, theirs]
        assert (await flow.bot.get_intent(member))["bundle"] == bundle_id

        # The builder builds the next block from it: both land, in bundle order.
        await flow.builder.build()
        await until(lambda: _status_is(flow, member, "included"), "the bundle's inclusion")
        included_at = tip(flow)
        block = await flow.node.rpc("eth_getBlockByNumber", hex(included_at), False)
        assert block["transactions"] == [ours, theirs]
        assert (await flow.bot.get_intent(bundle_id))["status"] == "included"

        # A real reorg drops that block: the replacement bundle, same uuid, for the new next
        # block, inside the observed reaction: ours re-signed +10 %, the raw one unchanged.
        metrics = flow.stack.service.metrics
        reactions = metrics.sample("broadcaster_reaction_seconds_count") or 0
        await flow.node.rpc("anvil_reorg", 1, [])

        async def replaced() -> bool:
            intent = await flow.bot.get_intent(member)
            return len(intent["hashes"]) >= 2 and any(
                keccak(r.params["txs"][0]) == intent["hashes"][-1]
                for r in bundles_for(flow, uuid, included_at + 1)
            )

        await until(replaced, "the replacement bundle for the new next block")
        intent = await flow.bot.get_intent(member)
        replacement = intent["hashes"][-1]
        (again,) = [
            r
            for r in bundles_for(flow, uuid, included_at + 1)
            if keccak(r.params["txs"][0]) == replacement
        ]
        assert again.params["txs"][1] == raw  # byte for byte
        assert replacement != ours
        assert (metrics.sample("broadcaster_reaction_seconds_count") or 0) == reactions + 1

        await flow.builder.build()
        await until(lambda: _status_is(flow, member, "included"), "the replacement's inclusion")
        final = await flow.bot.get_intent(member)
        assert final["hash"] == replacement
        landed = await flow.node.rpc("eth_getBlockByNumber", final["block"]["number"], False)
        assert landed["transactions"] == [replacement, theirs]
        first_tx = await flow.node.rpc("eth_getTransactionByHash", replacement)
        assert int(first_tx["nonce"], 16) == 0  # the same nonce
        assert int(first_tx["maxFeePerGas"], 16) >= 3 * GWEI * 110 // 100
        assert int(first_tx["maxPriorityFeePerGas"], 16) >= GWEI * 110 // 100
        # On chain once: one nonce of each sender used, our first attempt unmined.
        for address in (DEV_ADDRESS, OTHER_ADDRESS):
            count = await flow.node.rpc("eth_getTransactionCount", address, "latest")
            assert int(count, 16) == 1
        assert await flow.node.rpc("eth_getTransactionReceipt", ours) is None
        status = await flow.bot.get_intent(bundle_id)
        assert status["status"] == "included"
        assert status["hashes"] == [replacement, theirs]
        assert status["replacementUuid"] == uuid
        assert flow.builder.unexpected == []


async def test_hostile_bundles_are_refused_naming_the_rule_and_a_cancel_cancels_the_bundle(
    tmp_path: Path,
) -> None:
    async with bundle_flow(tmp_path) as flow:
        other_chain = await refused(flow, [INTENT, {"raw": raw_tx(OTHER_KEY, chain_id=1)}])
        assert "txs[1].raw: raw transaction refused (chain-id)" in other_chain
        malleable = await refused(flow, [INTENT, {"raw": high_s(raw_tx(OTHER_KEY))}])
        assert "txs[1].raw: raw transaction refused (low-s)" in malleable
        ours = await refused(flow, [INTENT, {"raw": raw_tx(DEV_KEY)}])
        assert "txs[1].raw: raw transaction refused (ours)" in ours
        garbage = await refused(flow, [INTENT, {"raw": "0x02c0"}])
        assert "txs[1].raw: raw transaction refused (decode)" in garbage
        tenant = await refused(flow, [{**INTENT, "from": B_ADDRESS}, {"raw": raw_tx(OTHER_KEY)}])
        assert "txs[0].from" in tenant and "not an account this token may send from" in tenant
        public = await refused(flow, [{**INTENT, "private": False}])
        assert "txs[0].private" in public
        too_many = await refused(flow, [INTENT] * 17)
        assert "txs: expected a list of 1 to 16" in too_many
        only_raw = await refused(flow, [{"raw": raw_tx(OTHER_KEY)}])
        assert "no intent of ours" in only_raw
        past = await refused(flow, [INTENT], maxBlockNumber=hex(tip(flow)))
        assert "maxBlockNumber" in past and "has passed" in past
        # Nothing of a refused bundle went anywhere, nor took a nonce.
        assert flow.builder.sends() == []
        assert await flow.bot.request("eth_getTransactionCount", DEV_ADDRESS, "pending") == "0x0"

        # A bundle cancel: eth_cancelBundle under its replacementUuid, every member cancelled.
        sent = await send_bundle(flow, [INTENT, {"raw": raw_tx(OTHER_KEY)}])
        uuid = replacement_uuid(sent["id"])
        await flow.builder.wait_for(
            lambda: any(r.params["replacementUuid"] == uuid for r in flow.builder.sends()),
            "the bundle",
        )
        answer = await flow.bot.cancel_intent(sent["id"])
        assert answer["id"] == sent["id"]
        await flow.builder.wait_for(lambda: uuid in flow.builder.cancelled, "eth_cancelBundle")
        (member,) = sent["intents"]
        await until(lambda: _status_is(flow, member, "cancelled"), "the member's cancel")
        assert (await flow.bot.get_intent(sent["id"]))["status"] == "cancelled"
        # Another tenant does not see it.
        async with await BroadcasterClient.connect(flow.stack.api_url, token="tok-b") as bot_b:
            with pytest.raises(ApiError) as caught:
                await bot_b.get_intent(sent["id"])
            assert "no bundle" in caught.value.message

        # Two of our intents in one bundle (consecutive nonces, in order); cancelling one member
        # cancels the bundle and every member.
        pair = await send_bundle(flow, [INTENT, {"raw": raw_tx(OTHER_KEY)}, INTENT])
        pair_uuid = replacement_uuid(pair["id"])
        await flow.builder.wait_for(
            lambda: any(r.params["replacementUuid"] == pair_uuid for r in flow.builder.sends()),
            "the two-intent bundle",
        )
        (whole,) = [r for r in flow.builder.sends() if r.params["replacementUuid"] == pair_uuid]
        assert [keccak(t) for t in whole.params["txs"]] == pair["hashes"]
        nonces = [int((await flow.bot.get_intent(i))["nonce"], 16) for i in pair["intents"]]
        assert nonces[1] == nonces[0] + 1
        answer = await flow.bot.cancel_intent(pair["intents"][1])
        assert answer["bundle"] == pair["id"]
        await flow.builder.wait_for(lambda: pair_uuid in flow.builder.cancelled, "its cancel")
        for intent_id in pair["intents"]:
            await until(lambda i=intent_id: _status_is(flow, i, "cancelled"), "every member")


async def test_a_member_the_enclave_refuses_takes_the_whole_bundle_down_none_goes_alone(
    tmp_path: Path,
) -> None:
    """Real enclave policy in the loop: the second member's value is over the policy's
    ``max_value`` (``value_cap``), so the first member is signed and the second never is. The
    first member's payload reaches the builder in no bundle (a bundle needs every member) and
    never alone; it ends cancelled (its noop takes the nonce), and the bundle says so."""
    async with bundle_flow(tmp_path) as flow:
        over = {**INTENT, "value": hex(2 * 10**21)}
        txs = [INTENT, {"raw": raw_tx(OTHER_KEY)}, over]
        with pytest.raises(ApiError) as caught:
            await send_bundle(flow, txs)
        assert "value_cap" in caught.value.message, caught.value.message
        await flow.node.rpc("evm_mine")
        await flow.node.rpc("evm_mine")
        manager = flow.stack.service.manager
        assert manager is not None
        (first,) = [
            r for r in manager.book.all_records() if r.intent.value == int(INTENT["value"], 16)
        ]
        await until(
            lambda: _status_is(flow, first.intent.id, "cancelled"), "the first member's cancel"
        )
        ours = [
            r
            for r in flow.builder.sends()
            if r.method == "eth_sendBundle"
            and any(keccak(t) not in (keccak(raw_tx(OTHER_KEY)),) for t in r.params["txs"])
        ]
        for request in ours:
            # only the first member's noop may go alone (a self-transfer at its nonce, value 0)
            txs_sent = request.params["txs"]
            if len(txs_sent) != 3:
                assert len(txs_sent) == 1
                decoded = rlp.decode(bytes.fromhex(txs_sent[0][4:]))
                assert int.from_bytes(decoded[6], "big") == 0, "a member's payload went alone"

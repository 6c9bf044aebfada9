"""The whole service against a real anvil and the real enclave app: intents survive reorgs.

Each test submits intents through the API, lets anvil (automine) include them, reorgs them out
with ``anvil_reorg`` (which drops their transactions), and checks what the chain ends up with:
every intent included exactly once, each nonce used once, the re-signed attempts carrying fees
at least 10% above the first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broadcaster.api.client import GWEI, BroadcasterClient
from broadcaster.dev.anvil import DEV_ADDRESS
from broadcaster.dev.stack import DevStack, dev_stack

RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.fixture(params=[True, False], ids=["presigned", "live-resign"])
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[DevStack]:
    """The stack twice: replacements signed ahead of the reorg, and signed at reaction time."""
    async with dev_stack(tmp_path, presign=request.param) as running:
        yield running


@pytest.fixture
async def bot(stack: DevStack) -> AsyncIterator[BroadcasterClient]:
    async with await BroadcasterClient.connect(stack.api_url, token=stack.token) as client:
        yield client


async def until(predicate: Any, what: str, limit: float = 20.0) -> None:
    """Poll an async predicate until it holds (a deadline, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + limit
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def send(bot: BroadcasterClient, count: int) -> list[dict[str, Any]]:
    """Submit ``count`` transfers; each answer is kept with the value it asked for."""
    sent = []
    for i in range(count):
        answer = await bot.send_intent(
            to=RECIPIENT,
            value=1000 + i,
            gas=21_000,
            max_fee_per_gas=3 * GWEI,
            max_priority_fee_per_gas=GWEI,
        )
        sent.append({**answer, "value": 1000 + i})
    return sent


async def all_included(bot: BroadcasterClient, sent: list[dict[str, Any]]) -> bool:
    states = [await bot.get_intent(s["id"]) for s in sent]
    return all(s["status"] == "included" for s in states)


async def assert_exactly_once_on_chain(
    stack: DevStack, bot: BroadcasterClient, sent: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every intent's final hash is mined in the canonical chain; nonces 0..n-1 used once each."""
    node = stack.node
    assert int(await node.rpc("eth_getTransactionCount", DEV_ADDRESS, "latest"), 16) == len(sent)
    finals = []
    for s in sent:
        intent = await bot.get_intent(s["id"])
        receipt = await node.rpc("eth_getTransactionReceipt", intent["hash"])
        assert receipt is not None, f"{intent['hash']} is not mined"
        canonical = await node.rpc("eth_getBlockByNumber", receipt["blockNumber"], False)
        assert canonical["hash"] == receipt["blockHash"] == intent["block"]["hash"]
        tx = await node.rpc("eth_getTransactionByHash", intent["hash"])
        assert int(tx["nonce"], 16) == int(intent["nonce"], 16)
        assert int(tx["value"], 16) == s["value"]
        assert tx["to"].lower() == RECIPIENT.lower()
        finals.append({**intent, "tx": tx})
    # Every other attempt of ours is unmined: one transaction per nonce.
    for final in finals:
        for other in final["hashes"]:
            if other != final["hash"]:
                assert await node.rpc("eth_getTransactionReceipt", other) is None
    return finals


@pytest.mark.parametrize("depth", [1, 3])
async def test_reorged_out_intents_are_re_signed_with_higher_fees_and_included_again(
    stack: DevStack, bot: BroadcasterClient, depth: int
) -> None:
    sent = await send(bot, depth)
    await until(lambda: all_included(bot, sent), "first inclusion")
    first = {s["id"]: s["hash"] for s in sent}
    manager = stack.service.manager
    assert manager is not None
    if manager.presign:

        async def presigned() -> bool:
            book = manager.book
            return all(manager.presigned_for(book.by_intent(s["id"])) for s in sent)

        await until(presigned, "replacements signed ahead")
    reorgs_before = stack.service.metrics.sample("broadcaster_reorgs_total") or 0
    # [cpu] yield_after_reaction (on by default): the CPU is given away once per reaction,
    # after its last write. Count the calls and the writes done by then.
    yields: list[int] = []
    assert manager.follower.after_reaction is not None
    gives_away = manager.follower.after_reaction
    fanout_stats = manager.executor.fanout.stats  # type: ignore[attr-defined]

    def counted_yield() -> None:
        yields.append(sum(s.fast_writes + s.queued_writes for s in fanout_stats().values()))
        gives_away()

    manager.follower.after_reaction = counted_yield
    writes_before = sum(s.fast_writes + s.queued_writes for s in fanout_stats().values())

    await stack.node.rpc("anvil_reorg", depth, [])  # drops the blocks and their transactions

    async def re_included() -> bool:
        states = [await bot.get_intent(s["id"]) for s in sent]
        return all(st["status"] == "included" and st["hash"] != first[st["id"]] for st in states)

    await until(re_included, "re-signed transactions to be included")
    finals = await assert_exactly_once_on_chain(stack, bot, sent)
    for final in finals:
        assert final["hashes"][0] == first[final["id"]]
        assert int(final["tx"]["maxFeePerGas"], 16) >= 3 * GWEI * 110 // 100
        assert int(final["tx"]["maxPriorityFeePerGas"], 16) >= GWEI * 110 // 100
    metrics = stack.service.metrics
    assert (metrics.sample("broadcaster_reorgs_total") or 0) == reorgs_before + 1
    assert metrics.sample("broadcaster_resends_total", {"reason": "reorg"}) == depth
    assert metrics.sample("broadcaster_reaction_seconds_count") == 1
    # Every intent's first attempt was timed from its API frame (DESIGN.md §7), once; the
    # reaction's re-sends are not intents.
    assert metrics.sample("broadcaster_intent_seconds_count") == len(sent)
    assert manager.presigned_sent == (depth if manager.presign else 0)
    # One reaction: depth transactions, each to the stack's one RPC endpoint.
    assert len(yields) == 1 and yields[0] >= writes_before + depth


async def test_a_reorg_while_a_broadcast_is_in_flight_keeps_every_intent_exactly_once(
    stack: DevStack, bot: BroadcasterClient
) -> None:
    sent = await send(bot, 2)
    await until(lambda: all_included(bot, sent), "first inclusion")
    # Start more intents and reorg the first ones out at the same moment.
    more = asyncio.gather(*(send(bot, 1) for _ in range(3)))
    await stack.node.rpc("anvil_reorg", 2, [])
    extra = [batch[0] for batch in await more]
    everything = sent + extra
    await until(lambda: all_included(bot, everything), "everything included")
    await asyncio.sleep(0.5)  # let any late duplicate show itself before counting
    await assert_exactly_once_on_chain(stack, bot, everything)


async def test_an_intents_access_list_is_signed_into_its_transaction(
    stack: DevStack, bot: BroadcasterClient
) -> None:
    access = [{"address": RECIPIENT.lower(), "storageKeys": ["0x" + "00" * 31 + "07"]}]
    sent = await bot.request(
        "broadcaster_sendIntent",
        {
            "to": RECIPIENT,
            "value": "0x1",
            "gas": hex(30_000),
            "maxFeePerGas": hex(3 * GWEI),
            "maxPriorityFeePerGas": hex(GWEI),
            "accessList": access,
        },
    )
    await until(lambda: all_included(bot, [sent]), "inclusion")
    tx = await stack.node.rpc("eth_getTransactionByHash", sent["hash"])
    assert tx["accessList"] == access

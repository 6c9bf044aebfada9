"""Memory stays bounded: finalized records leave memory and are answered from the journal."""

from __future__ import annotations

import asyncio
from pathlib import Path

from broadcaster.api.client import GWEI, BroadcasterClient
from broadcaster.dev.stack import dev_stack


async def test_evicted_finalized_intents_are_still_answered_and_keys_still_deduplicate(
    tmp_path: Path,
) -> None:
    async with dev_stack(tmp_path, finality_depth=2) as stack:
        manager = stack.service.manager
        assert manager is not None
        manager.retention.retain_settled = 1  # keep one finalized record in memory
        async with await BroadcasterClient.connect(stack.api_url, token=stack.token) as bot:
            sent = [
                await bot.send_intent(
                    to="0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                    value=1 + i,
                    gas=21_000,
                    max_fee_per_gas=3 * GWEI,
                    max_priority_fee_per_gas=GWEI,
                    key=f"retained-{i}",
                )
                for i in range(3)
            ]
            for _ in range(400):
                await stack.node.rpc("evm_mine")
                states = [(await bot.get_intent(s["id"]))["status"] for s in sent]
                if all(state == "finalized" for state in states):
                    break
                await asyncio.sleep(0.05)
            assert states == ["finalized"] * 3
            in_memory = [manager.book.find_intent(s["id"]) is not None for s in sent]
            assert in_memory.count(True) == 1  # the other two were evicted...
            first = await bot.get_intent(sent[0]["id"])  # ...and come back from the journal
            assert first["status"] == "finalized" and first["hash"] == sent[0]["hash"]
            again = await bot.send_intent(
                to="0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                value=1,
                gas=21_000,
                max_fee_per_gas=3 * GWEI,
                max_priority_fee_per_gas=GWEI,
                key="retained-0",
            )
            assert again["id"] == sent[0]["id"]  # the evicted key still deduplicates
        count = await stack.node.rpc(
            "eth_getTransactionCount", "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "latest"
        )
        assert int(count, 16) == 3

"""A transaction signed outside the enclave with our key is caught live and by `broadcaster audit`.

Real anvil (automine), the real enclave app on a unix socket, the real service (DESIGN.md §9):
the bot sends an intent (signed by the enclave: in the audit log), a raw transaction through
``eth_sendRawTransaction`` (signed elsewhere on purpose: journaled as external), and a second
intent. Then the attacker, who holds the key, signs a transaction at that intent's nonce and puts
it into a reorg's new branch (``anvil_reorg 1 [[raw, 0]]``). The live reconciler flags it as
foreign in the block that holds it; with ``[audit] stop_signing_on_foreign = true`` the next
intent for that account is refused with an error that says why; ``broadcaster audit`` over the
run lists that transaction and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from eth_account import Account

from broadcaster.api.client import GWEI, ApiError, BroadcasterClient
from broadcaster.cli.audit import run_audit
from broadcaster.dev.anvil import DEV_ADDRESS, DEV_KEY, start_enclave
from broadcaster.dev.stack import dev_stack

RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
THIEF = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
SENDER = DEV_ADDRESS.lower()


async def until(predicate: Any, what: str, limit: float = 30.0) -> None:
    """Poll an async predicate until it holds (a deadline, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + limit
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def signed_elsewhere(nonce: int, to: str, value: int) -> tuple[str, str]:
    """``(raw, hash)`` of a type-2 transfer signed with our key by eth-account, not the enclave."""
    tx = {
        "type": 2, "chainId": 31337, "nonce": nonce, "to": to, "value": value, "gas": 21_000,
        "maxFeePerGas": 3 * GWEI, "maxPriorityFeePerGas": GWEI,
    }  # fmt: skip
    signed = Account.sign_transaction(tx, DEV_KEY)
    return "0x" + signed.raw_transaction.hex(), "0x" + signed.hash.hex()


async def intent(bot: BroadcasterClient, value: int) -> dict[str, Any]:
    return await bot.send_intent(
        to=RECIPIENT, value=value, gas=21_000, max_fee_per_gas=3 * GWEI,
        max_priority_fee_per_gas=GWEI,
    )  # fmt: skip


@pytest.mark.timeout(120)
async def test_a_key_used_outside_the_enclave_is_flagged_live_stops_signing_and_is_audited(
    tmp_path: Path,
) -> None:
    async with dev_stack(tmp_path, stop_signing_on_foreign=True) as stack:
        service, node = stack.service, stack.node
        async with await BroadcasterClient.connect(stack.api_url, token=stack.token) as bot:

            async def included(ref: str) -> bool:
                return (await bot.get_intent(ref))["status"] == "included"

            first = await intent(bot, 1000)  # nonce 0: the enclave signs it
            await until(lambda: included(first["id"]), "the first intent's inclusion")
            raw, raw_hash = signed_elsewhere(1, RECIPIENT, 5)  # nonce 1: external, on purpose
            assert await bot.request("eth_sendRawTransaction", raw) == raw_hash
            await until(lambda: included(raw_hash), "the external raw tx's inclusion")
            second = await intent(bot, 2000)  # nonce 2
            await until(lambda: included(second["id"]), "the second intent's inclusion")
            reconciler = service.reconciler
            assert reconciler is not None

            async def checked_up_to_tip() -> bool:
                tip = int(await node.rpc("eth_blockNumber"), 16)
                return any(a.number == tip for a in reconciler.checked)

            await until(checked_up_to_tip, "the reconciler to reach the tip")
            foreign_metric = ("broadcaster_foreign_transactions_total", {"sender": SENDER})
            assert service.metrics.sample(*foreign_metric) == 0  # nothing foreign so far

            # The attacker: our key, nonce 2, to its own address, in the reorg's new branch.
            stolen, stolen_hash = signed_elsewhere(2, THIEF, 10**18)
            await node.rpc("anvil_reorg", 1, [[stolen, 0]])

            async def flagged() -> bool:
                return service.metrics.sample(*foreign_metric) == 1

            await until(flagged, "the foreign transaction to be flagged")
            report = service.manager.observer.report  # type: ignore[union-attr]
            found = report.seen[(SENDER, 2)]
            assert found is not None and "0x" + found.hash.hex() == stolen_hash
            mined = await node.rpc("eth_getTransactionReceipt", stolen_hash)
            assert found.block_hash == mined["blockHash"]
            # Within a block: flagged in the block that holds it, no later block needed.
            assert found.block == int(mined["blockNumber"], 16)
            assert found.block == int(await node.rpc("eth_blockNumber"), 16)

            with pytest.raises(ApiError) as refused:
                await intent(bot, 3000)
            assert "signing for " + SENDER + " is stopped" in refused.value.message
            assert stolen_hash in refused.value.message

            # The inclusion tracker finds the taken nonce too, a few blocks later (it waits for
            # them: automine makes none by itself): still counted once.
            async def second_failed() -> bool:
                if (await bot.get_intent(second["id"]))["status"] == "failed":
                    return True
                await node.rpc("evm_mine")
                return False

            await until(second_failed, "the second intent to fail (its nonce is taken)")
            assert service.metrics.sample(*foreign_metric) == 1
            assert service.streamer is not None and service.streamer.refused is None
            audit_health = service.health()["audit"]
            assert audit_health["refused"] is None and audit_health["stopped_senders"] == [SENDER]

            out = io.StringIO()
            args = argparse.Namespace(
                config=str(stack.config_path), from_block=0, to_block=None, json=True
            )
            status = await asyncio.to_thread(run_audit, args, out)
            tip = int(await node.rpc("eth_blockNumber"), 16)
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [
        {
            "event": "foreign",
            "hash": stolen_hash,
            "sender": SENDER,
            "nonce": 2,
            "block": found.block,
        },
        {"event": "summary", "blocks": tip + 1, "ours": 1, "external": 1, "foreign": 1},
    ]  # fmt: skip
    assert status == 1


@pytest.mark.timeout(120)
async def test_an_enclave_on_a_cut_or_rolled_back_log_is_refused_and_nothing_more_is_signed(
    tmp_path: Path,
) -> None:
    """The parent owns the enclave's disk. It cuts the last entry of the log and restarts the
    enclave: the enclave itself refuses to start (the tail no longer ends at its sealed anchor).
    It then puts back an older, consistent pair of log and anchor (taken before the intent was
    signed; the enclave cannot tell it from its own): the enclave starts, but its log no longer
    extends the head the journal holds. Refused, counted, alerted; signing stops."""
    enclave_dir = tmp_path / "enclave"
    log_file = enclave_dir / "enclave-audit.jsonl"
    anchor_file = enclave_dir / "enclave-audit.jsonl.head"
    async with contextlib.AsyncExitStack() as outer:
        first = contextlib.AsyncExitStack()
        signer_url = await first.enter_async_context(start_enclave(enclave_dir))
        stack = await outer.enter_async_context(dev_stack(tmp_path, signer_url=signer_url))
        service = stack.service
        bot = await outer.enter_async_context(
            await BroadcasterClient.connect(stack.api_url, token=stack.token)
        )
        # An older consistent pair: the anchor first, then the log (a line committed in between
        # only makes the log longer than its anchor: the enclave starts either way).
        old_anchor = anchor_file.read_bytes()
        old_log = log_file.read_bytes()
        sent = await intent(bot, 1000)

        async def included() -> bool:
            return (await bot.get_intent(sent["id"]))["status"] == "included"

        await until(included, "the intent's inclusion")
        streamer = service.streamer
        assert streamer is not None
        assert await streamer.sync()
        held = streamer.anchor.seq
        lines = log_file.read_bytes().splitlines(keepends=True)
        assert len(lines) == held  # the copy holds every entry the enclave wrote
        await first.aclose()  # the enclave stops...
        log_file.write_bytes(b"".join(lines[:-1]))  # ...the parent cuts its last entry...
        with pytest.raises(RuntimeError, match="exited with 2"):
            await outer.enter_async_context(start_enclave(enclave_dir))  # ...refused at start
        assert b"refusing to start" in (enclave_dir / "enclave.log").read_bytes()
        anchor_file.write_bytes(old_anchor)  # ...so it rolls both back to the older pair
        log_file.write_bytes(old_log)
        await outer.enter_async_context(start_enclave(enclave_dir))  # ...which starts
        # The reconnect window: an intent at once, before the streamer has looked at the new
        # log. Signing holds until the log check (which refuses it): the rolled-back enclave
        # signs nothing.
        signs_before = old_log.count(b'"kind":"sign"')
        with contextlib.suppress(ApiError):
            await intent(bot, 1500)

        refusals = ("broadcaster_audit_refusals_total", {"reason": "not_extending"})

        async def refused() -> bool:
            streamer.wake()
            return service.metrics.sample(*refusals) == 1

        await until(refused, "the restarted enclave's log to be refused")
        assert streamer.refused is not None and streamer.refused.reason == "not_extending"
        assert streamer.anchor.seq == held  # nothing of the new log was taken
        assert log_file.read_bytes().count(b'"kind":"sign"') == signs_before
        with pytest.raises(ApiError) as refusal:
            await intent(bot, 2000)
        assert "signing is stopped" in refusal.value.message
        assert "not_extending" in refusal.value.message
        assert "not_extending" in service.health()["audit"]["refused"]

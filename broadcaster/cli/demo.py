"""``broadcaster demo``: the whole product on 127.0.0.1, a reorg, and what it did about it.

It starts an anvil node mining a block a second, the reference enclave signer (its own process,
on a unix socket as it would be on VSOCK), and the service; a demo bot submits intents through
the API and follows their status notifications; then the demo reorgs the chain under them
(``anvil_reorg``, which drops their transactions) and narrates: the reorg, which transactions
it dropped, their re-signed replacements (same nonce, higher fees), the reaction latency, and the
re-inclusion. A third round does the same to a *private* intent (DESIGN.md §5a): it goes only to
a builder (``broadcaster.dev.builder``, the bundle API in front of anvil) as a bundle for the next
block, signed with ``X-Flashbots-Signature`` by the enclave's auth key; the reorg drops it and the
fee-bumped replacement reaches the builder under the same ``replacementUuid`` for the new next
block. It ends with a summary checked against the chain, then ``broadcaster audit`` over
its own run (every transaction of the demo account in every block must be in the enclave's
verified audit log: DESIGN.md §6a), and leaves nothing running.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from broadcaster.api.client import GWEI, BroadcasterClient
from broadcaster.cli.audit import run_audit
from broadcaster.dev.anvil import DEV_ADDRESS, start_anvil
from broadcaster.dev.builder import BundleSeen, DemoBuilder, wait_for_bundle
from broadcaster.dev.stack import DevStack, dev_stack
from broadcaster.tx.bundles import replacement_uuid
from signer_client.txcodec import keccak

__all__ = ["run_demo"]

RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
# anvil's fourth dev key as the enclave's auth key (X-Flashbots-Signature): it signs no tx
AUTH_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {text}", flush=True)


def _short(value: str | None) -> str:
    return f"{value[:10]}…" if value else "-"


class _Narrator:
    """Turns the bot's status notifications into the demo's lines, as they arrive.

    A notification's ``hash`` is the intent's *latest* attempt when it was sent. For a reorg
    whose replacement was signed ahead, the replacement is already written (and is the latest
    attempt) by the time ``reorged`` goes out, so that note's ``hash`` is the new transaction, not
    the one the dropped block held. The narrator therefore remembers, per intent, the hash (and
    block) of its last ``included`` note and names that as what the reorg dropped; the
    replacement's hash is the ``resent`` note's (its own line).
    """

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}
        self.included: dict[str, tuple[str, dict[str, Any] | None]] = {}

    def label(self, intent_id: str, text: str) -> None:
        self.labels[intent_id] = text

    def lines(self, note: dict[str, Any]) -> list[str]:
        """What to print for ``note`` (nothing for the events the demo does not narrate)."""
        intent_id = note["id"]
        who = self.labels.get(intent_id, _short(intent_id))
        event = note["event"]
        block = note.get("block")
        if event == "reorged":
            dropped_hash, dropped_block = self.included.pop(intent_id, (None, None))
            where = _where(dropped_block)
            return [f"   {who}: DROPPED by the reorg (was {_short(dropped_hash)}{where})"]
        if event == "resent":
            return [f"   {who}: re-signed -> {_short(note['hash'])} (same nonce, fees +10%)"]
        if event == "included":
            self.included[intent_id] = (note["hash"], block)
        if event in ("included", "finalized", "failed", "expired", "cancelled"):
            return [f"   {who}: {event}{_where(block)} {_short(note['hash'])}"]
        return []

    def show(self, note: dict[str, Any]) -> None:
        for line in self.lines(note):
            _say(line)


def _where(block: dict[str, Any] | None) -> str:
    return f" in block #{int(block['number'], 16)} {_short(block['hash'])}" if block else ""


async def _follow(bot: BroadcasterClient, narrator: _Narrator) -> None:
    async for note in bot.subscribe():
        narrator.show(note)


async def _wait(bot: BroadcasterClient, ids: list[str], want: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        states = [(await bot.get_intent(i))["status"] for i in ids]
        if all(s == want for s in states):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"intents did not all become {want} within {limit:.0f} s")


def _reaction_stats(stack: DevStack) -> tuple[float, float]:
    metrics = stack.service.metrics
    total = metrics.sample("broadcaster_reaction_seconds_sum") or 0.0
    count = metrics.sample("broadcaster_reaction_seconds_count") or 0.0
    return total, count


async def _reorg_round(
    stack: DevStack, bot: BroadcasterClient, narrator: _Narrator, round_no: int, depth: int
) -> list[str]:
    _say(f"bot: submitting {depth} intents (round {round_no})")
    ids = []
    for i in range(depth):
        sent = await bot.send_intent(
            to=RECIPIENT,
            value=10_000 + i,
            gas=21_000,
            max_fee_per_gas=3 * GWEI,
            max_priority_fee_per_gas=GWEI,
            key=f"demo-{round_no}-{i}",
        )
        narrator.label(sent["id"], f"intent nonce {int(sent['nonce'], 16)}")
        _say(
            f"   intent nonce {int(sent['nonce'], 16)}: signed {_short(sent['hash'])},"
            " sent to 3 RPCs"
        )
        ids.append(sent["id"])
    await _wait(bot, ids, "included")
    included = [await bot.get_intent(i) for i in ids]
    first = {s["id"]: s["hash"] for s in included}
    # Let the chain grow until a reorg of this depth reaches back to the block holding them.
    lowest = min(int(s["block"]["number"], 16) for s in included)
    for _ in range(100):
        if int(await stack.node.rpc("eth_blockNumber"), 16) >= lowest + depth - 1:
            break
        await asyncio.sleep(0.1)
    before_sum, before_count = _reaction_stats(stack)
    tip = int(await stack.node.rpc("eth_blockNumber"), 16)
    _say(f"injecting a reorg of depth {depth} at block #{tip} (anvil_reorg drops their txs)")
    await stack.node.rpc("anvil_reorg", depth, [])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = [await bot.get_intent(i) for i in ids]
        if all(s["status"] == "included" and s["hash"] != first[s["id"]] for s in states):
            break
        await asyncio.sleep(0.1)
    else:
        raise TimeoutError("the dropped intents were not included again within 30 s")
    after_sum, after_count = _reaction_stats(stack)
    if after_count > before_count:
        micros = (after_sum - before_sum) / (after_count - before_count) * 1e6
        _say(
            "reaction: reorg head frame read -> last RPC write of the re-signed txs:"
            f" {micros:.0f} µs"
        )
    return ids


def _tx_hash(raw: str) -> str:
    return "0x" + keccak(bytes.fromhex(raw[2:])).hex()


async def _private_round(
    stack: DevStack, bot: BroadcasterClient, narrator: _Narrator, builder: DemoBuilder
) -> str:
    """A private intent through a reorg: builder only, re-targeted, replaced under one uuid."""
    _say("bot: submitting a private intent (private: true: builders only, never a public RPC)")
    sent = await bot.request(
        "broadcaster_sendIntent",
        {
            "to": RECIPIENT, "value": hex(77_777), "gas": hex(21_000),
            "maxFeePerGas": hex(3 * GWEI), "maxPriorityFeePerGas": hex(GWEI),
            "key": "demo-private", "private": True,
        },
    )  # fmt: skip
    intent_id, nonce = sent["id"], int(sent["nonce"], 16)
    narrator.label(intent_id, f"private intent nonce {nonce}")
    uuid = replacement_uuid(intent_id)

    def carries(tx_hash: str) -> Any:
        return lambda b: (
            b.params.get("replacementUuid") == uuid
            and any(_tx_hash(raw) == tx_hash for raw in b.params.get("txs", []))
        )

    first = await wait_for_bundle(builder, carries(sent["hash"]))
    _say(f"   builder: {_bundle_line(first)}")
    await _wait(bot, [intent_id], "included")
    included = await bot.get_intent(intent_id)
    block = int(included["block"]["number"], 16)
    tip = int(await stack.node.rpc("eth_blockNumber"), 16)
    depth = tip - block + 1
    before_sum, before_count = _reaction_stats(stack)
    _say(f"injecting a reorg of depth {depth} at block #{tip} (drops block #{block} and the tx)")
    await stack.node.rpc("anvil_reorg", depth, [])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = await bot.get_intent(intent_id)
        if state["status"] == "included" and state["hash"] != sent["hash"]:
            break
        await asyncio.sleep(0.1)
    else:
        raise TimeoutError("the private intent was not included again within 30 s")
    replacement = await wait_for_bundle(builder, carries(state["hash"]))
    _say(f"   builder: {_bundle_line(replacement)} (the replacement: same uuid)")
    after_sum, after_count = _reaction_stats(stack)
    if after_count > before_count:
        micros = (after_sum - before_sum) / (after_count - before_count) * 1e6
        _say(
            "reaction: reorg head frame read -> replacement bundle written to the builder:"
            f" {micros:.0f} µs"
        )
    retargets = len(builder.bundles(uuid))
    signed = {b.signer for b in builder.bundles(uuid)}
    _say(
        f"   {retargets} bundles under replacementUuid {uuid[:8]}…, all signed by "
        f"{', '.join(sorted(str(s) for s in signed))}; refused by the builder: "
        f"{len(builder.refused)}"
    )
    return str(intent_id)


def _bundle_line(b: BundleSeen) -> str:
    txs = ", ".join(_short(_tx_hash(raw)) for raw in b.params.get("txs", []))
    return (
        f"eth_sendBundle for block #{int(b.params['blockNumber'], 16)} [{txs}] "
        f"uuid {str(b.params.get('replacementUuid'))[:8]}…, X-Flashbots-Signature by "
        f"{_short(b.signer)}"
    )


async def _demo(workdir: Path, anvil: str | None) -> int:
    _say(
        "starting anvil (1 block/s), the enclave signer app, a demo block builder and the "
        "broadcaster on 127.0.0.1"
    )
    async with (
        start_anvil("anvil", anvil=anvil, block_time=1) as node,
        DemoBuilder(node.http_url) as builder,
        dev_stack(
            workdir,
            node=node,
            endpoints=[
                ("rpc0", node.http_url, "public"),
                ("rpc1", node.ws_url, "public"),
                ("rpc2", node.http_url, "public"),
                ("builder", builder.url, "builder", "flashbots"),
            ],
            auth_key=AUTH_KEY,
        ) as stack,
    ):
        _say(f"   anvil {stack.node.ws_url}, signer {stack.signer_url}, builder {builder.url}")
        _say(f"   intent API {stack.api_url}, metrics {stack.metrics_url}/metrics")
        narrator = _Narrator()
        async with await BroadcasterClient.connect(stack.api_url, token=stack.token) as bot:
            async with asyncio.TaskGroup() as group:
                follower = group.create_task(_follow(bot, narrator))
                await asyncio.sleep(0.2)
                ids = await _reorg_round(stack, bot, narrator, 1, 1)
                ids += await _reorg_round(stack, bot, narrator, 2, 3)
                ids.append(await _private_round(stack, bot, narrator, builder))
                follower.cancel()
            ok = await _summary(stack, bot, ids)
            ok &= await _audit(stack)
    _say("stopped everything" + ("" if ok else " (with problems: see above)"))
    return 0 if ok else 1


async def _summary(stack: DevStack, bot: BroadcasterClient, ids: list[str]) -> bool:
    node = stack.node
    _say("summary (checked against the chain):")
    ok = True
    for intent_id in ids:
        intent = await bot.get_intent(intent_id)
        receipt = await node.rpc("eth_getTransactionReceipt", intent["hash"])
        mined = receipt is not None and receipt["blockHash"] == (intent["block"] or {}).get("hash")
        others = [h for h in intent["hashes"] if h != intent["hash"]]
        stray = [h for h in others if await node.rpc("eth_getTransactionReceipt", h) is not None]
        ok &= mined and not stray and intent["status"] == "included"
        _say(
            f"   nonce {int(intent['nonce'], 16)}: {intent['status']:9s} attempts "
            f"{len(intent['hashes'])}, mined {_short(intent['hash'])} "
            f"{'once' if mined and not stray else 'PROBLEM'}"
        )
    count = int(await node.rpc("eth_getTransactionCount", DEV_ADDRESS, "latest"), 16)
    ok &= count == len(ids)
    metrics = stack.service.metrics
    reorgs = metrics.sample("broadcaster_reorgs_total") or 0
    resends = metrics.sample("broadcaster_resends_total", {"reason": "reorg"}) or 0
    _say(
        f"   {len(ids)} intents, nonces used {count} (expected {len(ids)}), "
        f"{reorgs:.0f} reorgs survived, {resends:.0f} re-signed"
    )
    return ok


async def _audit(stack: DevStack) -> bool:
    """``broadcaster audit --config FILE --from-block 0`` over the demo's own chain."""
    streamer = stack.service.streamer
    if streamer is not None:
        await streamer.sync()  # the enclave's newest entries into the journal's copy
    _say(f"broadcaster audit --config {stack.config_path.name} --from-block 0:")
    out = io.StringIO()
    args = argparse.Namespace(
        config=str(stack.config_path), from_block=0, to_block=None, json=False
    )
    status = await asyncio.to_thread(run_audit, args, out)
    for line in out.getvalue().splitlines():
        _say(f"   {line}")
    return status == 0


def run_demo(args: argparse.Namespace) -> int:
    import uvloop

    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(message)s")
    with (
        tempfile.TemporaryDirectory(prefix="broadcaster-demo-") as tmp,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        return runner.run(_demo(Path(tmp), args.anvil))

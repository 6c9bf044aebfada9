"""Unchanged clients across a real reorg that re-signs their transaction (issue 13).

Each bot sends a transfer through the broadcaster (``eth_sendTransaction``: we sign), anvil
(automine) includes it, ``anvil_reorg`` drops that block, the broadcaster re-signs at the same
nonce with higher fees under a new hash, and only then does the bot wait, by the hash it was
given: web3.py ``wait_for_transaction_receipt`` (``HTTPProvider`` and ``WebSocketProvider``),
ethers v6 ``provider.waitForTransaction`` (``JsonRpcProvider``, ``WebSocketProvider``) and viem
``waitForTransactionReceipt`` (``http()``, ``webSocket()``). Each must end with the successful
receipt of the transfer's re-signed attempt. The node itself has no receipt for the original
hash (asserted), so without hash continuity every one of these waits would time out.

ethers and viem are the npm packages ``make setup`` installs into ``.tools/js-clients``
(``JS_CLIENTS_DIR``), driven by the scripts in ``tests/clients/`` (the README's snippets).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from web3 import AsyncWeb3, HTTPProvider, Web3, WebSocketProvider

from broadcaster.api.client import BroadcasterClient
from broadcaster.dev.anvil import DEV_ADDRESS
from broadcaster.dev.stack import DevStack, dev_stack

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "tests" / "clients"
RECIPIENT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # anvil account 2
VALUE = 12_345
WAIT = 30.0  # seconds before a wait counts as a hang (not a timing assertion)


def js_clients_dir() -> str:
    found = os.environ.get("JS_CLIENTS_DIR") or str(REPO / ".tools/js-clients/node_modules")
    if not (Path(found) / "ethers").is_dir() or not (Path(found) / "viem").is_dir():
        raise RuntimeError(f"ethers/viem not found in {found}: run `make setup`")
    if shutil.which("node") is None:
        raise RuntimeError("node not found (it comes with npm, which `make setup` needs)")
    return found


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[DevStack]:
    async with dev_stack(tmp_path) as running:
        yield running


async def until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def reorg_until_resigned(stack: DevStack, original: str) -> str:
    """Let ``original`` be included, reorg its block away, wait for the re-signed attempt to be
    included; return the new hash."""
    async with await BroadcasterClient.connect(stack.api_url, token=stack.token) as bot:

        async def included(want_new: bool) -> bool:
            intent = await bot.get_intent(original)  # by hash: any hash names its intent
            fresh = intent["hash"] != original
            return bool(intent["status"] == "included" and fresh == want_new)

        await until(lambda: included(False), "the first inclusion")
        await stack.node.rpc("anvil_reorg", 1, [])  # drops the block and its transaction
        await until(lambda: included(True), "the re-signed attempt's inclusion")
        intent = await bot.get_intent(original)
    assert intent["hashes"][0] == original and len(intent["hashes"]) >= 2
    # A plain node knows nothing of the original hash any more: this is what bots would wait on.
    assert await stack.node.rpc("eth_getTransactionReceipt", original) is None
    resigned: str = intent["hash"]
    return resigned


async def assert_transfer_receipt(stack: DevStack, receipt: dict[str, Any], resigned: str) -> None:
    assert receipt["transactionHash"].lower() == resigned.lower()
    tx = await stack.node.rpc("eth_getTransactionByHash", resigned)
    assert tx["to"].lower() == RECIPIENT.lower() and int(tx["value"], 16) == VALUE
    assert tx["from"].lower() == DEV_ADDRESS.lower()
    node_receipt = await stack.node.rpc("eth_getTransactionReceipt", resigned)
    assert receipt["blockHash"].lower() == node_receipt["blockHash"].lower()


# -- web3.py -------------------------------------------------------------------------------------


async def test_web3_http_provider_waits_through_a_reorg_by_the_original_hash(
    stack: DevStack,
) -> None:
    w3 = Web3(HTTPProvider(stack.url_for(stack.token, "http")))  # the token as the URL path
    tx = {"from": DEV_ADDRESS, "to": RECIPIENT, "value": VALUE}
    original = (await asyncio.to_thread(w3.eth.send_transaction, tx)).to_0x_hex()  # type: ignore[arg-type]
    resigned = await reorg_until_resigned(stack, original)
    receipt = await asyncio.to_thread(w3.eth.wait_for_transaction_receipt, original, WAIT)  # type: ignore[arg-type]
    assert receipt["status"] == 1
    await assert_transfer_receipt(
        stack,
        {"transactionHash": receipt["transactionHash"].to_0x_hex(),
         "blockHash": receipt["blockHash"].to_0x_hex()},
        resigned,
    )  # fmt: skip


async def test_web3_websocket_provider_waits_through_a_reorg_by_the_original_hash(
    stack: DevStack,
) -> None:
    provider = WebSocketProvider(
        stack.api_url,
        websocket_kwargs={
            "additional_headers": {"Authorization": f"Bearer {stack.token}"},
            "proxy": None,
        },
    )
    async with AsyncWeb3(provider) as w3:
        tx = {"from": DEV_ADDRESS, "to": RECIPIENT, "value": VALUE}
        original = (await w3.eth.send_transaction(tx)).to_0x_hex()  # type: ignore[arg-type]
        resigned = await reorg_until_resigned(stack, original)
        receipt = await w3.eth.wait_for_transaction_receipt(original, WAIT)  # type: ignore[arg-type]
    assert receipt["status"] == 1
    await assert_transfer_receipt(
        stack,
        {"transactionHash": receipt["transactionHash"].to_0x_hex(),
         "blockHash": receipt["blockHash"].to_0x_hex()},
        resigned,
    )  # fmt: skip


# -- ethers v6 and viem (node) -------------------------------------------------------------------


async def run_node_bot(stack: DevStack, script: str, kind: str) -> None:
    scheme = "ws" if kind == "ws" else "http"
    process = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPTS / script),
        kind,
        stack.url_for(stack.token, scheme),
        DEV_ADDRESS,
        RECIPIENT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": js_clients_dir()},
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        async with asyncio.timeout(WAIT):
            line = await process.stdout.readline()
        if not line:
            _, err = await process.communicate()
            raise AssertionError(f"{script} {kind} failed to send:\n{err.decode()[-3000:]}")
        original = json.loads(line)["hash"]
        resigned = await reorg_until_resigned(stack, original)
        process.stdin.write(b"wait\n")
        await process.stdin.drain()
        async with asyncio.timeout(WAIT + 10):
            out, err = await process.communicate()
        assert process.returncode == 0, err.decode()[-3000:]
        receipt = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert receipt["status"] in (1, "success")
    assert receipt["to"].lower() == RECIPIENT.lower()
    await assert_transfer_receipt(stack, receipt, resigned)


@pytest.mark.parametrize("kind", ["http", "ws"], ids=["JsonRpcProvider", "WebSocketProvider"])
async def test_ethers_wait_for_transaction_ends_with_the_resigned_receipt(
    stack: DevStack, kind: str
) -> None:
    await run_node_bot(stack, "ethers_bot.cjs", kind)


@pytest.mark.parametrize("kind", ["http", "ws"], ids=["http", "webSocket"])
async def test_viem_wait_for_transaction_receipt_ends_with_the_resigned_receipt(
    stack: DevStack, kind: str
) -> None:
    await run_node_bot(stack, "viem_bot.cjs", kind)


async def test_eth_subscribe_new_heads_announces_each_new_tip_as_the_node_sent_it(
    stack: DevStack,
) -> None:
    from websockets.asyncio.client import connect

    async with connect(stack.url_for(stack.token), proxy=None) as ws:
        await ws.send(
            json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
            )
        )
        sub_id = json.loads(await ws.recv())["result"]
        # Blocks keep coming until one is announced: a block mined before the service's own
        # newHeads subscription to the node is (re)established is never pushed to it (a loaded
        # machine), and a chain never stops producing.
        async with asyncio.timeout(WAIT):
            while True:
                await stack.node.rpc("evm_mine")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        note = json.loads(await ws.recv())
                        break
    assert note["method"] == "eth_subscription"
    assert note["params"]["subscription"] == sub_id
    head = note["params"]["result"]
    block = await stack.node.rpc("eth_getBlockByNumber", head["number"], False)
    assert (head["hash"], head["number"], head["parentHash"]) == (
        block["hash"],
        block["number"],
        block["parentHash"],
    )

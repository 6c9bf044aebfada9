"""Peer (c): a hand-written bot. Raw websockets + orjson, eth-account, one aiohttp session.

    python -m bench.peers.raw --ws URL --rpc URL --rpc URL --rpc URL

uvloop; heads parsed with orjson; on a reorg that drops our transaction it re-signs it with
``Account.sign_transaction`` at +10% fees and posts it to the 3 RPCs concurrently through one
kept-alive ``aiohttp.ClientSession`` (``asyncio.gather``). Inclusion: ``eth_getBlockByHash``
on the same websocket after each head, while something is waiting to be included.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from typing import Any

import aiohttp
import orjson
import uvloop
from eth_account import Account
from websockets.asyncio.client import ClientConnection, connect

from bench.peers.common import (
    ADDRESS,
    KEY,
    MAX_FEE,
    PRIORITY,
    OwnTx,
    Tracker,
    bumped,
    say,
    tx_dict,
)


class RawBot:
    def __init__(self, ws: ClientConnection, session: aiohttp.ClientSession, rpcs: list[str]):
        self.ws = ws
        self.session = session
        self.rpcs = rpcs
        self.account = Account.from_key(KEY)
        self.tracker = Tracker()
        self.ids = itertools.count(1)
        self.calls: dict[int, asyncio.Future[Any]] = {}
        self.subscription: str | None = None
        self.nonce = 0
        self.base_fee = 0
        self.anchored = False
        self.tasks: set[asyncio.Task[None]] = set()

    async def call(self, method: str, params: list[Any]) -> Any:
        rid = next(self.ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.calls[rid] = fut
        await self.ws.send(
            orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}),
            text=True,
        )
        return await fut

    async def read(self) -> None:
        async for raw in self.ws:
            msg = orjson.loads(raw)
            if msg.get("method") == "eth_subscription":
                await self.on_head(msg["params"]["result"])
            else:
                fut = self.calls.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg.get("result"))

    async def on_head(self, head: dict[str, Any]) -> None:
        number = int(head["number"], 16)
        if head.get("baseFeePerGas"):
            self.base_fee = int(head["baseFeePerGas"], 16)
        dropped = self.tracker.on_head(number, head["hash"], head["parentHash"])
        if dropped:
            await self.resend(dropped)
        if not self.anchored:
            self.anchored = True
            say("anchored")
        if self.tracker.waiting:
            self.spawn(self.check(number, head["hash"]))

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def check(self, number: int, block_hash: str) -> None:
        block = await self.call("eth_getBlockByHash", [block_hash, False])
        if block and self.tracker.on_block(number, block_hash, set(block["transactions"])):
            say("included")

    def sign(self, tx: OwnTx) -> bytes:
        signed = self.account.sign_transaction(tx_dict(tx.nonce, tx.max_fee, tx.priority))
        tx.hashes.add(signed.hash.to_0x_hex())
        return orjson.dumps(
            {
                "jsonrpc": "2.0",
                "id": next(self.ids),
                "method": "eth_sendRawTransaction",
                "params": [signed.raw_transaction.to_0x_hex()],
            }
        )

    async def post(self, url: str, body: bytes) -> None:
        async with self.session.post(url, data=body) as response:
            await response.read()

    async def broadcast(self, bodies: list[bytes]) -> None:
        await asyncio.gather(*(self.post(url, b) for b in bodies for url in self.rpcs))

    async def resend(self, dropped: list[OwnTx]) -> None:
        bodies = []
        for tx in dropped:
            tx.max_fee, tx.priority = bumped(tx.max_fee, tx.priority, self.base_fee)
            bodies.append(self.sign(tx))
        await self.broadcast(bodies)

    async def send(self, k: int) -> None:
        bodies = []
        for _ in range(k):
            tx = OwnTx(self.nonce, MAX_FEE, PRIORITY)
            self.nonce += 1
            bodies.append(self.sign(tx))
            self.tracker.sent(tx)
        await self.broadcast(bodies)


async def commands(bot: RawBot) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().split():
        if line[0] == "send":
            await bot.send(int(line[1]))
        elif line[0] == "quit":
            return


async def main(args: argparse.Namespace) -> None:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with (
        aiohttp.ClientSession(
            connector=connector, headers={"content-type": "application/json"}
        ) as session,
        connect(args.ws, compression=None, max_size=None, proxy=None) as ws,
    ):
        bot = RawBot(ws, session, args.rpc)
        reader = asyncio.get_running_loop().create_task(bot.read())
        bot.nonce = int(await bot.call("eth_getTransactionCount", [ADDRESS, "pending"]), 16)
        bot.subscription = await bot.call("eth_subscribe", ["newHeads"])
        # Open the kept-alive connections now, not on the first (measured) send.
        await asyncio.gather(*(bot.post(url, b'{"jsonrpc":"2.0","id":0,"method":"eth_chainId"}')
                               for url in args.rpc))  # fmt: skip
        say("ready")
        await commands(bot)
        reader.cancel()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ws", required=True)
    parser.add_argument("--rpc", action="append", required=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    uvloop.run(main(parse()))

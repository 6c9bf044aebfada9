"""Peer (b): the straightforward web3.py + eth-account bot.

    python -m bench.peers.web3bot --ws URL --rpc URL --rpc URL --rpc URL

``AsyncWeb3(WebSocketProvider)`` ``newHeads`` subscription, parent-hash tracking; on a reorg
that drops its transaction it re-signs with ``Account.sign_transaction`` at +10% fees and sends
it with ``send_raw_transaction`` to each of the 3 RPCs (one ``AsyncWeb3(AsyncHTTPProvider)``
each, concurrently with ``asyncio.gather``). Inclusion: ``w3.eth.get_block(hash)``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from eth_account import Account
from eth_typing import HexStr
from web3 import AsyncHTTPProvider, AsyncWeb3, WebSocketProvider

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


class Web3Bot:
    def __init__(self, w3: AsyncWeb3[Any], rpcs: list[str]) -> None:
        self.w3 = w3
        self.http = [AsyncWeb3(AsyncHTTPProvider(url)) for url in rpcs]
        self.account = Account.from_key(KEY)
        self.tracker = Tracker()
        self.nonce = 0
        self.base_fee = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def sign(self, tx: OwnTx) -> bytes:
        signed = self.account.sign_transaction(tx_dict(tx.nonce, tx.max_fee, tx.priority))
        tx.hashes.add(signed.hash.to_0x_hex())
        return bytes(signed.raw_transaction)

    async def broadcast(self, raws: list[bytes]) -> None:
        await asyncio.gather(*(h.eth.send_raw_transaction(raw) for raw in raws for h in self.http))

    async def send(self, k: int) -> None:
        raws = []
        for _ in range(k):
            tx = OwnTx(self.nonce, MAX_FEE, PRIORITY)
            self.nonce += 1
            raws.append(self.sign(tx))
            self.tracker.sent(tx)
        await self.broadcast(raws)

    async def check(self, number: int, block_hash: str) -> None:
        block = await self.w3.eth.get_block(HexStr(block_hash))
        hashes = {t.to_0x_hex() for t in block["transactions"]}  # type: ignore[union-attr]
        if self.tracker.on_block(number, block_hash, hashes):
            say("included")

    async def heads(self) -> None:
        anchored = False
        async for message in self.w3.socket.process_subscriptions():
            head = message["result"]
            number = head["number"]
            block_hash = head["hash"].to_0x_hex()
            if head.get("baseFeePerGas"):
                self.base_fee = head["baseFeePerGas"]
            dropped = self.tracker.on_head(number, block_hash, head["parentHash"].to_0x_hex())
            if dropped:
                raws = []
                for tx in dropped:
                    tx.max_fee, tx.priority = bumped(tx.max_fee, tx.priority, self.base_fee)
                    raws.append(self.sign(tx))
                await self.broadcast(raws)
            if not anchored:
                anchored = True
                say("anchored")
            if self.tracker.waiting:
                task = asyncio.get_running_loop().create_task(self.check(number, block_hash))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)


async def commands(bot: Web3Bot) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().split():
        if line[0] == "send":
            await bot.send(int(line[1]))
        elif line[0] == "quit":
            return


async def main(args: argparse.Namespace) -> None:
    async with AsyncWeb3(WebSocketProvider(args.ws)) as w3:
        bot = Web3Bot(w3, args.rpc)
        bot.nonce = await w3.eth.get_transaction_count(ADDRESS, "pending")
        await w3.eth.subscribe("newHeads")
        for h in bot.http:  # open the kept-alive sessions before the first measured send
            await h.eth.chain_id
        heads = asyncio.get_running_loop().create_task(bot.heads())
        say("ready")
        await commands(bot)
        heads.cancel()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ws", required=True)
    parser.add_argument("--rpc", action="append", required=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))

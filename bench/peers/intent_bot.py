"""The intent-to-wire peers: a bot that signs each transaction itself and posts it to 3 RPCs.

    python -m bench.peers.intent_bot --mode raw|web3|floor --rpc URL --rpc URL --rpc URL
        [--trials N] [--pause-ms MS]

``raw``: the hand-written bot (``eth_account.Account.sign_transaction`` in-process, one
kept-alive ``aiohttp.ClientSession``, the 3 posts concurrent with ``asyncio.gather``).
``web3``: web3.py (``AsyncWeb3`` with one ``AsyncHTTPProvider`` per RPC, ``w3.eth.account``
signs, ``eth.send_raw_transaction`` on the 3 at once). ``floor``: the harness floor, the raw bot
posting a transaction signed before the clock starts (no signing, nothing else).

Each trial prints ``t0_ns tx_hash``: ``t0_ns`` is ``time.perf_counter_ns()`` (CLOCK_MONOTONIC,
comparable with the harness process's stamps) when the bot decides to send, before signing; the
bench subtracts it from the harness's arrival stamp of that hash at the last of the 3 RPCs.
A trial waits for the 3 replies, then ``--pause-ms``, so trials never overlap.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp
import orjson
import uvloop
from eth_account import Account

from bench.peers.common import KEY, MAX_FEE, PRIORITY, say, tx_dict


def _body(raw: bytes) -> bytes:
    params = ["0x" + raw.hex()]
    return orjson.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": params}
    )


async def raw_bot(rpcs: list[str], trials: int, pause: float, *, presigned: bool) -> None:
    account = Account.from_key(KEY)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:

        async def post(url: str, body: bytes) -> Any:
            async with session.post(url, data=body, headers=headers) as response:
                return await response.read()

        ready = [account.sign_transaction(tx_dict(n, MAX_FEE, PRIORITY)) for n in range(trials + 3)]
        for url in rpcs:  # connections open and warm before the first trial
            await post(url, b'{"jsonrpc":"2.0","id":0,"method":"eth_chainId","params":[]}')
        for nonce in range(trials):
            t0 = time.perf_counter_ns()
            if presigned:
                signed = ready[nonce]
            else:
                signed = account.sign_transaction(tx_dict(nonce, MAX_FEE, PRIORITY))
            body = _body(bytes(signed.raw_transaction))
            await asyncio.gather(*(post(url, body) for url in rpcs))
            say(f"{t0} 0x{bytes(signed.hash).hex()}")
            await asyncio.sleep(pause)


async def web3_bot(rpcs: list[str], trials: int, pause: float) -> None:
    from web3 import AsyncHTTPProvider, AsyncWeb3

    nodes = [AsyncWeb3(AsyncHTTPProvider(url)) for url in rpcs]
    signer = nodes[0].eth.account
    for w3 in nodes:
        await w3.eth.chain_id
    for nonce in range(trials):
        t0 = time.perf_counter_ns()
        signed = signer.sign_transaction(tx_dict(nonce, MAX_FEE, PRIORITY), KEY)
        raw = signed.raw_transaction
        await asyncio.gather(*(w3.eth.send_raw_transaction(raw) for w3 in nodes))
        say(f"{t0} 0x{bytes(signed.hash).hex()}")
        await asyncio.sleep(pause)
    for w3 in nodes:
        await w3.provider.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("raw", "web3", "floor"), required=True)
    parser.add_argument("--rpc", action="append", required=True)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--pause-ms", type=float, default=20.0)
    args = parser.parse_args()
    pause = args.pause_ms / 1000
    if args.mode == "web3":
        uvloop.run(web3_bot(args.rpc, args.trials, pause))
    else:
        uvloop.run(raw_bot(args.rpc, args.trials, pause, presigned=args.mode == "floor"))


if __name__ == "__main__":
    main()

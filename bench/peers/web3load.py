"""Intent-throughput peer: a web3.py bot that signs with eth-account and sends to 3 RPCs itself.

    python -m bench.peers.web3load --rpc URL --rpc URL --rpc URL --seconds 5 --workers 16

``workers`` coroutines each loop: next nonce, ``Account.sign_transaction``, then
``send_raw_transaction`` to the 3 ``AsyncWeb3(AsyncHTTPProvider)`` concurrently. Counts the
transactions all 3 RPCs answered within the measured window (after a warm-up) and prints one
JSON line: ``{"completed": n, "seconds": s, "hashes": [...]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time

import orjson
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3

from bench.peers.common import KEY, MAX_FEE, PRIORITY, tx_dict


async def main(args: argparse.Namespace) -> None:
    account = Account.from_key(KEY)
    http = [AsyncWeb3(AsyncHTTPProvider(url)) for url in args.rpc]
    for h in http:
        await h.eth.chain_id
    nonces = itertools.count(0)
    start = time.monotonic() + args.warmup
    stop = start + args.seconds
    hashes: list[str] = []

    async def worker() -> None:
        while time.monotonic() < stop:
            signed = account.sign_transaction(tx_dict(next(nonces), MAX_FEE, PRIORITY))
            raw = signed.raw_transaction
            await asyncio.gather(*(h.eth.send_raw_transaction(raw) for h in http))
            if start <= time.monotonic() < stop:
                hashes.append(signed.hash.to_0x_hex())

    await asyncio.gather(*(worker() for _ in range(args.workers)))
    print(orjson.dumps({"completed": len(hashes), "seconds": args.seconds,
                        "hashes": hashes}).decode())  # fmt: skip


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rpc", action="append", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=16)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))

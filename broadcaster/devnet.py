"""Local anvil nodes for the demo and the benchmarks (127.0.0.1 only).

Anvil comes from the npm package ``@foundry-rs/anvil-linux-amd64`` that ``make setup`` installs
into ``.tools/``; ``ANVIL_BIN`` (set by the Makefile) or ``PATH`` finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

__all__ = ["AnvilNode", "find_anvil", "free_port", "start_anvil"]

_REPO_ANVIL = (
    Path(__file__).resolve().parent.parent
    / ".tools/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
)


def find_anvil(explicit: str | None = None) -> str:
    for candidate in (explicit, os.environ.get("ANVIL_BIN"), str(_REPO_ANVIL)):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("anvil")
    if found:
        return found
    raise FileNotFoundError("anvil not found: run `make setup` or set ANVIL_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AnvilNode:
    name: str
    port: int
    process: asyncio.subprocess.Process
    session: aiohttp.ClientSession
    _ids: int = 0

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def rpc(self, method: str, *params: Any) -> Any:
        self._ids += 1
        body = {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": list(params)}
        async with self.session.post(self.http_url, data=orjson.dumps(body)) as response:
            reply = orjson.loads(await response.read())
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {method} failed: {reply['error']}")
        return reply["result"]


@contextlib.asynccontextmanager
async def start_anvil(
    name: str, *extra: str, anvil: str | None = None, block_time: float | None = None
) -> AsyncIterator[AnvilNode]:
    """Run one anvil until the context exits; wait until it answers."""
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--silent", *extra]
    if block_time is not None:
        args += ["--block-time", str(block_time)]
    process = await asyncio.create_subprocess_exec(
        find_anvil(anvil), *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    session = aiohttp.ClientSession(headers={"content-type": "application/json"})
    node = AnvilNode(name, port, process, session)
    try:
        for _ in range(600):
            if process.returncode is not None:
                raise RuntimeError(f"anvil {name} exited with {process.returncode}")
            try:
                await node.rpc("eth_chainId")
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"anvil {name} did not answer on port {port}")
        yield node
    finally:
        await session.close()
        if process.returncode is None:
            process.kill()
        await process.wait()

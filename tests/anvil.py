"""Real anvil nodes for tests: start, wait until they answer, stop.

Anvil comes from the npm package the Makefile installs into ``.tools/`` (``ANVIL_BIN`` points at
it). Every node listens on 127.0.0.1 on a port the OS picked free; nothing leaves the machine.
A missing anvil is an error, not a skip: the README's test command installs it.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from broadcaster.dev.anvil import DEV_ADDRESS, DEV_KEY, find_anvil, free_port
from tests import real_servers

__all__ = [
    "DEV_ADDRESS",
    "DEV_KEY",
    "REPO",
    "Anvil",
    "anvil_binary",
    "free_port",
    "running_anvil",
    "start_anvil",
]

REPO = Path(__file__).resolve().parent.parent


def anvil_binary() -> str:
    """The anvil ``make setup`` installed (``ANVIL_BIN``), else one on PATH; an error if none."""
    try:
        found = find_anvil()
    except FileNotFoundError as exc:
        raise RuntimeError(f"{exc} (installs @foundry-rs/anvil-linux-amd64)") from None
    return real_servers.binary("anvil", found)


@dataclass
class Anvil:
    """One running anvil process."""

    port: int
    process: subprocess.Popen[bytes]
    args: list[str] = field(default_factory=list)
    _ids: int = 0

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def rpc(self, method: str, *params: Any, timeout: float = 10.0) -> Any:
        """Blocking JSON-RPC call over HTTP; raises on a JSON-RPC error."""
        self._ids += 1
        body = orjson.dumps({"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params})
        request = urllib.request.Request(
            self.http_url, data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = orjson.loads(response.read())
        if "error" in reply:
            raise RuntimeError(f"{method} failed: {reply['error']}")
        return reply["result"]

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()


def start_anvil(*extra: str, port: int | None = None, block_time: float | None = None) -> Anvil:
    """Start anvil on 127.0.0.1 and wait until it answers ``eth_chainId``.

    ``block_time=None`` means no automatic mining (blocks only on ``evm_mine`` or on a
    transaction), which keeps tests deterministic.
    """
    port = port or free_port()
    args = [anvil_binary(), "--host", "127.0.0.1", "--port", str(port), "--silent"]
    if block_time is not None:
        args += ["--block-time", str(block_time)]
    args += list(extra)
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    node = Anvil(port=port, process=process, args=args)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"anvil exited with {process.returncode}: {err}")
        try:
            node.rpc("eth_chainId", timeout=1)
            return node
        except (OSError, RuntimeError):
            if time.monotonic() > deadline:
                node.stop()
                raise RuntimeError(f"anvil on port {port} did not answer within 30 s") from None
            time.sleep(0.05)


@contextlib.contextmanager
def running_anvil(*extra: str, block_time: float | None = None) -> Iterator[Anvil]:
    node = start_anvil(*extra, block_time=block_time)
    try:
        yield node
    finally:
        node.stop()

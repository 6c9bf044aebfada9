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
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from signer_client.signing import LocalKey

__all__ = ["AnvilNode", "find_anvil", "free_port", "start_anvil"]

_REPO_ANVIL = (
    Path(__file__).resolve().parents[2]
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


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port not handed out before by this process. The kernel may give the
    same ephemeral port to two ``bind(0)`` calls in a row once the first socket is closed (seen:
    the API and the metrics listener of one config got the same port), so each is remembered."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise OSError("no free loopback port that was not handed out already")


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


# anvil's default account 0 (public test key; dev and tests only).
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
DEV_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def _enclave_files(
    workdir: Path,
    keys: tuple[str, ...],
    chain_id: int,
    auth_key: str | None = None,
    policy: str = "",
) -> tuple[Path, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    key_file = workdir / "enclave-keys.txt"
    key_file.write_text("\n".join((*keys, *([auth_key] if auth_key else []))) + "\n")
    key_file.chmod(0o600)
    # auth_key: the X-Flashbots-Signature key (DESIGN.md 5a), named by [policy] auth_address
    auth = f'auth_address = "{LocalKey(auth_key).address}"\n' if auth_key else ""
    config = workdir / "enclave.toml"
    config.write_text(
        f'mode = "dev"\n[policy]\nchain_ids = [{chain_id}]\nallow_self = true\n'
        f"rate_per_second = 100000\nburst = 100000\n{auth}{policy}"
        f'[audit]\npath = "{workdir / "enclave-audit.jsonl"}"\n'
    )
    return key_file, config


@contextlib.asynccontextmanager
async def start_enclave(
    workdir: Path,
    *,
    keys: tuple[str, ...] = (DEV_KEY,),
    chain_id: int = 31337,
    auth_key: str | None = None,
    policy: str = "",
) -> AsyncIterator[str]:
    """Run the reference enclave app (``python -m enclave``) on a unix socket in ``workdir``.

    ``policy``: more ``[policy]`` lines (TOML), e.g. ``allowed_delegates`` for EIP-7702.

    Its output goes to ``workdir/enclave.log``. Yields the signer URL once the app listens.
    ``auth_key``: also load this key as the policy's auth key (``auth = "flashbots"`` rpcs).
    """
    key_file, config = _enclave_files(workdir, keys, chain_id, auth_key, policy)
    url = f"unix://{workdir / 'enclave.sock'}"
    log_path = workdir / "enclave.log"
    with open(log_path, "wb") as log_file:  # noqa: ASYNC230 - opened once, before anything runs
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "enclave",
            "--listen",
            url,
            "--key-file",
            str(key_file),
            "--config",
            str(config),
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        for _ in range(600):
            if process.returncode is not None:
                raise RuntimeError(f"the enclave app exited with {process.returncode}")
            if b"listening on" in log_path.read_bytes():
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the enclave app did not start listening within 30 s")
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()

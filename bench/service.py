"""Run the real broadcaster against the harness: the enclave app + ``broadcaster run --config``.

The config is rendered with :func:`broadcaster.settings.render_config` (clients = the
harness websocket, rpcs = its 3 endpoints, signer = the enclave app over a unix socket, journal
in a temp dir). The service's log (stderr) goes to a file: the in-process reaction figure is
parsed from its ``reorg reaction: N tx re-signed and rebroadcast in X µs`` lines afterwards,
so nothing reads a pipe while a reaction is being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from websockets.exceptions import WebSocketException

from bench.harness import CHAIN_ID, Harness
from bench.peers.common import ADDRESS
from broadcaster.api.client import BroadcasterClient
from broadcaster.dev.anvil import free_port, start_enclave
from broadcaster.settings import render_config

__all__ = ["RunningService", "reaction_lines", "running_broadcaster"]

TOKEN = "bench-token"
_REACTION = re.compile(r"reorg reaction: (\d+) tx re-signed and rebroadcast in (\d+) µs")


@dataclass
class RunningService:
    api_url: str
    log_path: Path
    process: asyncio.subprocess.Process
    enclave_pid: int | None

    async def client(self) -> BroadcasterClient:
        return await BroadcasterClient.connect(self.api_url, token=TOKEN)


def reaction_lines(log_path: Path) -> list[tuple[int, float]]:
    """``(dropped, µs)`` of every reaction the service logged, in order."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return [(int(m[1]), float(m[2])) for m in _REACTION.finditer(text)]


def _config(harness: Harness, signer_url: str, workdir: Path, api_port: int, rate: bool) -> str:
    rpcs: list[tuple[str, str] | tuple[str, str, str]]
    if harness.builders:  # DESIGN.md 5a: 3 builders, one public RPC for the reads
        rpcs = [(f"builder{i}", url, "builder") for i, url in enumerate(harness.rpc_urls)]
        rpcs.append(("reader", harness.reader_url, "public"))
    else:
        rpcs = [(f"rpc{i}", url) for i, url in enumerate(harness.rpc_urls)]
    text = render_config(
        chain_id=CHAIN_ID,
        clients=[("harness", harness.ws_url)],
        rpcs=rpcs,
        routing_private=True if harness.builders else None,
        signer_url=signer_url,
        accounts=[ADDRESS],
        api_listen=f"127.0.0.1:{api_port}",
        tokens=[TOKEN],
        metrics_listen=f"127.0.0.1:{free_port()}",
        journal_path=workdir / "journal.db",
        watchdog_seconds=3600.0,
        header="make bench: the service under test, against the loopback harness",
    )
    if rate:
        # The throughput figure drives far more than the default 1,000 req/s per token.
        marker = f"tokens = [{TOKEN!r}]".replace("'", '"')
        assert marker in text, "render_config changed its [api] layout"
        text = text.replace(marker, marker + "\nrate_per_token = 1000000.0\nrate_burst = 1000000")
    return text


@contextlib.asynccontextmanager
async def running_broadcaster(
    harness: Harness, workdir: Path, *, unthrottled_api: bool = False
) -> AsyncIterator[RunningService]:
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    async with start_enclave(workdir / "enclave") as signer_url:
        api_port = free_port()
        config = workdir / "broadcaster.toml"
        config.write_text(_config(harness, signer_url, workdir, api_port, unthrottled_api))
        log_path = workdir / "broadcaster.log"
        enclave_pid = _pid_listening(workdir / "enclave" / "enclave.sock")
        with open(log_path, "wb") as log_file:  # noqa: ASYNC230 - before anything runs
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "broadcaster", "run", "--config", str(config),
                stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        service = RunningService(
            f"ws://127.0.0.1:{api_port}",
            log_path,
            process,
            enclave_pid,
        )
        try:
            await _wait_api(service)
            yield service
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def _wait_api(service: RunningService, within: float = 60.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if service.process.returncode is not None:
                raise RuntimeError(
                    f"broadcaster exited with {service.process.returncode}:\n"
                    + service.log_path.read_text(errors="replace")[-3000:]
                )
            try:
                client = await service.client()
            except (OSError, WebSocketException):
                await asyncio.sleep(0.05)
                continue
            await client.close()
            return


def _pid_listening(sock_path: Path) -> int | None:
    """The enclave app's pid (for CPU accounting), found through /proc without signals."""
    with contextlib.suppress(OSError):
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                if b"enclave" in cmdline and str(sock_path).encode() in b" ".join(cmdline):
                    return int(proc.name)
    return None

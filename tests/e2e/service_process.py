"""The service as a real process (``python -m broadcaster run``), for crash and chaos tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from broadcaster.settings import load_config

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ServiceProcess:
    config_path: Path
    log_path: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def api_url(self) -> str:
        config = load_config(self.config_path)
        return f"ws://{config.api.listen.host}:{config.api.listen.port}"

    @property
    def metrics_url(self) -> str:
        config = load_config(self.config_path)
        return f"http://{config.metrics.listen.host}:{config.metrics.listen.port}"

    async def start(self) -> None:
        """Start the service and wait until /healthz says it is ready."""
        with open(self.log_path, "ab") as log:  # noqa: ASYNC230 - opened once per start
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "broadcaster",
                "run",
                "--config",
                str(self.config_path),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                if self.process.returncode is not None:
                    raise RuntimeError(f"service exited with {self.process.returncode}")
                try:
                    async with session.get(self.metrics_url + "/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("service did not become healthy within 30 s")

    async def kill9(self) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM: the service drains and exits; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()


@contextlib.asynccontextmanager
async def service_process(config_path: Path) -> AsyncIterator[ServiceProcess]:
    service = ServiceProcess(config_path, config_path.with_suffix(".log"))
    try:
        yield service
    finally:
        await service.stop()

"""A real Prometheus server for tests: start, scrape given targets every second, query, stop.

The binary comes from the Debian package ``prometheus`` that ``make setup`` installs (the
Makefile's ``prometheus`` target). A missing binary is an error that says so, never a skip.
Everything listens on 127.0.0.1 on a port the OS picked free; storage lives under the test's
``tmp_path``.

Queries go through the HTTP API with urllib, so they block: from an async test whose event loop
also serves the scraped ``/metrics``, use :meth:`Prometheus.wait_for_async` (or
``asyncio.to_thread``) so the loop keeps answering scrapes while the test waits.

    with running_prometheus(["127.0.0.1:9650"], tmp_path) as prom:
        prom.wait_for('broadcaster_reorgs_total', lambda v: v >= 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import real_servers
from tests.anvil import free_port

__all__ = ["Prometheus", "prometheus_binary", "running_prometheus", "start_prometheus"]

SETUP_HINT = "run `make setup` (installs the Debian package `prometheus`: server + promtool)"


def prometheus_binary(name: str = "prometheus") -> str:
    """Path of ``prometheus`` (or ``promtool``); ``PROMETHEUS_BIN`` overrides the server's."""
    override = os.environ.get("PROMETHEUS_BIN") if name == "prometheus" else None
    if override and Path(override).is_file():
        return real_servers.binary(name, override)
    found = shutil.which(name)
    if found:
        return real_servers.binary(name, found)
    raise RuntimeError(f"{name} not found on PATH; {SETUP_HINT}")


@dataclass
class Prometheus:
    """One running Prometheus process."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.directory / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` member of a successful answer."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as reply:
            body = json.load(reply)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {body}")
        return body["data"]

    def query_vector(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's samples as ``(labels, value)`` pairs."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def query(self, expr: str) -> float | None:
        """The value of an instant query with at most one sample; ``None`` when it has none."""
        samples = self.query_vector(expr)
        if len(samples) > 1:
            raise ValueError(f"{expr!r} returned {len(samples)} samples: {samples}")
        return samples[0][1] if samples else None

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return active

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[float | None], bool] = lambda value: value is not None,
        within: float = 30.0,
    ) -> float | None:
        """Poll ``query(expr)`` until ``predicate`` holds; raise ``TimeoutError`` with the last
        value (and the scrape targets' health) when ``within`` seconds pass."""
        deadline = time.monotonic() + within
        while True:
            value = self.query(expr)
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(self._timeout_text(expr, value, within))
            time.sleep(0.1)

    async def wait_for_async(
        self,
        expr: str,
        predicate: Callable[[float | None], bool] = lambda value: value is not None,
        within: float = 30.0,
    ) -> float | None:
        """:meth:`wait_for` for async tests: queries run in a thread, the loop stays free."""
        deadline = time.monotonic() + within
        while True:
            value = await asyncio.to_thread(self.query, expr)
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                targets = await asyncio.to_thread(self._timeout_text, expr, value, within)
                raise TimeoutError(targets)
            await asyncio.sleep(0.1)

    def _timeout_text(self, expr: str, value: float | None, timeout: float) -> str:
        try:
            health = [(t["scrapeUrl"], t["health"], t.get("lastError", "")) for t in self.targets()]
        except (OSError, RuntimeError) as exc:
            health = [("?", "unknown", str(exc))]
        return f"{expr!r} still {value} after {timeout} s; targets: {health}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _config(targets: Sequence[str], job: str, rule_files: Sequence[Path]) -> str:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
    }
    return json.dumps(config, indent=2)  # JSON is YAML


def start_prometheus(
    targets: Sequence[str],
    directory: Path,
    *,
    job: str = "broadcaster",
    rule_files: Sequence[Path] = (),
    ready_timeout: float = 30.0,
) -> Prometheus:
    """Start Prometheus scraping ``targets`` (``host:port``) every 1 s; return once it is ready."""
    binary = prometheus_binary()
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "prometheus.yml"
    config_path.write_text(_config(targets, job, rule_files))
    port = free_port()
    with (directory / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    prom = Prometheus(port, process, directory)
    deadline = time.monotonic() + ready_timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}:\n{prom.log[-2000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as reply,
        ):
            if reply.status == 200:
                return prom
        if time.monotonic() > deadline:
            prom.stop()
            raise RuntimeError(f"prometheus not ready after {ready_timeout} s:\n{prom.log[-2000:]}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_prometheus(
    targets: Sequence[str],
    directory: Path,
    *,
    job: str = "broadcaster",
    rule_files: Sequence[Path] = (),
) -> Iterator[Prometheus]:
    """:func:`start_prometheus` as a context manager that always stops the process."""
    prom = start_prometheus(targets, directory, job=job, rule_files=rule_files)
    try:
        yield prom
    finally:
        prom.stop()

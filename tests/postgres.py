"""A real PostgreSQL server for tests: initdb in a temp dir, started on a free 127.0.0.1 port.

The binaries come from the Debian package ``postgresql`` that ``make setup`` installs (the
Makefile's ``postgresql`` target); ``PG_BINDIR`` overrides where they are. PostgreSQL refuses
to run as root: as root the server runs as the ``postgres`` user the package creates (through
``runuser``), otherwise as the current user. A missing binary is an error, never a skip.

    with running_postgres() as pg:
        url = pg.new_database()      # a fresh, empty database per test
        pg.restart()                 # the database restarted under load
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests import real_servers
from tests.anvil import free_port

__all__ = ["Postgres", "pg_bindir", "running_postgres"]

SETUP_HINT = "run `make setup` (installs the Debian package `postgresql`)"


def pg_bindir() -> Path:
    """Where ``initdb`` and ``postgres`` are (the newest /usr/lib/postgresql/N/bin)."""
    override = os.environ.get("PG_BINDIR")
    candidates = [override] if override else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    for candidate in candidates:
        if candidate and (Path(candidate) / "postgres").is_file():
            real_servers.binary("postgres", str(Path(candidate) / "postgres"))
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        real_servers.binary("postgres", found)
        return Path(found).parent
    raise RuntimeError(f"PostgreSQL server binaries not found; {SETUP_HINT}")


def _as_server_user() -> list[str]:
    if os.getuid() != 0:
        return []
    pwd.getpwnam("postgres")  # the Debian package creates it
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class Postgres:
    """One running server (superuser ``postgres``, trust auth on 127.0.0.1)."""

    bindir: Path
    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def start(self) -> None:
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(
            [*_as_server_user(), str(self.bindir / "postgres"), "-D", str(self.directory / "data"),
             "-p", str(self.port), "-k", str(self.directory), "-c", "listen_addresses=127.0.0.1",
             "-c", "max_connections=200", "-c", "fsync=on"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log()[-2000:]}")
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, *, fast: bool = True) -> None:
        """Stop the server: ``fast`` (open connections are cut, a checkpoint is written, as an
        operator's restart does) or immediate (like a crash)."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            # As root the process is runuser's child: signal the whole group via pg_ctl.
            subprocess.run(
                [*_as_server_user(), str(self.bindir / "pg_ctl"), "stop", "-D",
                 str(self.directory / "data"), "-m", "fast" if fast else "immediate", "-w"],
                check=False, capture_output=True,
            )  # fmt: skip
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop (cutting every connection) and start again on the same port and data."""
        self.stop()
        self.start()

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "server.log").read_text(errors="replace")
        return ""


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    bindir = pg_bindir()
    directory = Path(tempfile.mkdtemp(prefix="pg-test-"))
    prefix = _as_server_user()
    if prefix:
        shutil.chown(directory, "postgres", "postgres")
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(directory / "data"), "-U", "postgres",
         "--auth=trust", "-E", "UTF8", "--no-instructions"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = Postgres(bindir, directory, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop(fast=False)  # immediate: no shutdown checkpoint, the directory goes anyway
        shutil.rmtree(directory, ignore_errors=True)

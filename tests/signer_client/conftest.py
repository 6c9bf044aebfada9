from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.enclave.running import Enclave, running_enclave


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module", params=["unix", "tcp"])
def enclave(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Enclave]:
    """The real enclave app in a subprocess, over a unix socket and over TCP."""
    workdir = tmp_path_factory.mktemp(f"enclave-{request.param}")
    url = (
        f"unix://{workdir}/e.sock" if request.param == "unix" else f"tcp://127.0.0.1:{free_port()}"
    )
    with running_enclave(workdir, url) as running:
        yield running


@pytest.fixture
def fresh_enclave(tmp_path: Path) -> Iterator[Enclave]:
    with running_enclave(tmp_path, f"unix://{tmp_path}/e.sock") as running:
        yield running

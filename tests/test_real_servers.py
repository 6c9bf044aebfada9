"""The guard that keeps real servers (anvil, Prometheus, PostgreSQL) out of tests not marked e2e."""

from __future__ import annotations

from pathlib import Path

import pytest

import broadcaster.dev.anvil
from tests import real_servers
from tests.anvil import anvil_binary
from tests.prometheus import prometheus_binary


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """A directory with files named like the real binaries (never run)."""
    for name in ("anvil", "prometheus", "promtool"):
        path = tmp_path / name
        path.write_text("#!/bin/sh\nexit 1\n")
        path.chmod(0o755)
    return tmp_path


def test_an_unmarked_test_that_finds_anvil_is_told_to_mark_itself_e2e(
    fake_bin: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("ANVIL_BIN", str(fake_bin / "anvil"))
    with pytest.raises(RuntimeError, match="is not marked e2e") as raised:
        anvil_binary()
    assert request.node.nodeid in str(raised.value)
    # The path the service's dev nodes (start_anvil, dev_stack) take is guarded too.
    with pytest.raises(RuntimeError, match="is not marked e2e"):
        broadcaster.dev.anvil.find_anvil()


def test_an_unmarked_test_that_finds_prometheus_or_promtool_is_told_to_mark_itself_e2e(
    fake_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_BIN", raising=False)
    monkeypatch.setenv("PATH", str(fake_bin))
    for name in ("prometheus", "promtool"):
        with pytest.raises(RuntimeError, match=f"starts {name} .* is not marked e2e"):
            prometheus_binary(name)


def test_a_missing_anvil_is_still_the_setup_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANVIL_BIN", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(broadcaster.dev.anvil, "_REPO_ANVIL", tmp_path / "none")
    with pytest.raises(RuntimeError, match="make setup"):
        anvil_binary()


def test_while_an_e2e_test_runs_the_binary_is_handed_out(
    fake_bin: Path, request: pytest.FixtureRequest
) -> None:
    real_servers.running_unmarked(None)  # what the conftest hook sets for an e2e test
    try:
        assert real_servers.binary("anvil", str(fake_bin / "anvil")) == str(fake_bin / "anvil")
    finally:
        real_servers.running_unmarked(request.node.nodeid)


def test_an_unmarked_test_that_finds_postgresql_is_told_to_mark_itself_e2e(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.postgres import pg_bindir

    (tmp_path / "postgres").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "postgres").chmod(0o755)
    monkeypatch.setenv("PG_BINDIR", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"starts postgres .* is not marked e2e"):
        pg_bindir()


def test_a_missing_postgresql_is_the_setup_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import glob

    from tests import postgres

    monkeypatch.setenv("PG_BINDIR", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    with pytest.raises(RuntimeError, match="make setup"):
        postgres.pg_bindir()

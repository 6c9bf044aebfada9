from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvloop

import broadcaster.dev.anvil
from tests import real_servers
from tests.anvil import Anvil, running_anvil
from tests.postgres import Postgres, running_postgres

# Real mainnet frontier headers and uncles, kept in the repo (tests/fixtures/mainnet/README.md).
MAINNET_FRONTIER = Path(__file__).resolve().parent / "fixtures" / "mainnet"


@pytest.fixture(scope="session", autouse=True)
def _hypothesis_unicode_table() -> None:
    # On a fresh clone Hypothesis has no .hypothesis/ cache yet and builds its Unicode table
    # (about a second) inside the first st.text() draw, which then fails the too_slow health
    # check. Build it once per process (each xdist worker too) before the first test runs.
    # (Not at plugin/conftest load time: Hypothesis forbids storage access there.)
    from hypothesis.internal.charmap import charmap

    charmap()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/e2e/ runs real processes: mark it so `make unit` can leave it out.
    for item in items:
        if "/tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


# Only e2e tests may start anvil or Prometheus (tests/real_servers.py): tests.anvil and
# tests.prometheus check when they find a binary; broadcaster.dev.anvil.start_anvil (the
# service's dev nodes, used by dev_stack and the reliability suite) is checked here.
_find_anvil = broadcaster.dev.anvil.find_anvil


def _find_anvil_for_e2e_only(explicit: str | None = None) -> str:
    return real_servers.binary("anvil", _find_anvil(explicit))


broadcaster.dev.anvil.find_anvil = _find_anvil_for_e2e_only


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    # Set before the item's fixtures (module-scoped ones included) are set up.
    real_servers.running_unmarked(None if item.get_closest_marker("e2e") else item.nodeid)
    try:
        return (yield)
    finally:
        real_servers.running_unmarked(None)


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    """One fresh anvil node (no automatic mining) for the test."""
    with running_anvil() as node:
        yield node


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on uvloop, the loop the service runs on in production."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL server per test process (tests/postgres.py); e2e tests only."""
    with running_postgres() as server:
        yield server

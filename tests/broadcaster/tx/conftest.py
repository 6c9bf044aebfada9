"""The deterministic simulator's fixture, for every test of the transaction side here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broadcaster.tx.testing import SimFactory


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[SimFactory]:
    """Booted simulations (``sims(**config)``), closed at the end of the test."""
    factory = SimFactory(tmp_path)
    yield factory
    factory.close()

"""The journal contract suite runs on both backends: ``store`` is a SQLite path or the URL of a
fresh database on the session's real PostgreSQL (those cases are marked e2e)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nonce.backends import Target, is_postgres


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.e2e)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        yield tmp_path / "j.db"
    else:
        yield request.getfixturevalue("postgres").new_database()


def query(target: Target, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (SQLite spelling; ``rowid`` order works on both) read independently."""
    if is_postgres(target):
        import psycopg

        from nonce.schema import POSTGRES

        assert isinstance(target, str)
        with psycopg.connect(target) as conn:
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                    for row in conn.execute(POSTGRES.sql(sql)).fetchall()]  # fmt: skip
    import sqlite3

    conn = sqlite3.connect(target)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()

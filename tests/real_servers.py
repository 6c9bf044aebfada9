"""Only tests marked ``e2e`` may start a real server (anvil, Prometheus, promtool, PostgreSQL).

``make unit`` (``-m "not e2e"``) must pass on a machine that has none of them, so a test that
needs one has to carry the marker. The suite enforces it where it runs with them installed too:
while a test without the marker runs (its fixtures included), finding one of these binaries is an
error naming the test. A binary that is missing stays the error it always was (setup hint).
Our own Python processes (the enclave app, the service) are not real servers in this sense.
"""

from __future__ import annotations

__all__ = ["binary", "running_unmarked"]

_unmarked: str | None = None  # node id of the running test when it is not marked e2e


def running_unmarked(nodeid: str | None) -> None:
    """Called by tests/conftest.py around each test: its id if it lacks ``e2e``, else None."""
    global _unmarked
    _unmarked = nodeid


def binary(what: str, path: str) -> str:
    """``path``, the ``what`` binary just found, unless the running test may not start it."""
    if _unmarked is not None:
        raise RuntimeError(
            f"{_unmarked} starts {what} ({path}) but is not marked e2e: add pytest.mark.e2e"
            " (module-level pytestmark if the whole module needs it) so `make unit` leaves it out"
        )
    return path

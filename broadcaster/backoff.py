"""Retry delays: one exponential backoff for every retry loop of the service.

:func:`backoff` only computes delays; it never sleeps and never reads a clock, and its
randomness (if any) comes from the caller's ``random.Random``. The loop that uses it owns the
waiting, so tests drive it with fixed delays, or a seeded ``Random``, and no time passes::

    for delay in backoff(initial=0.2, maximum=5.0):
        try:
            return await connect()
        except OSError:
            await asyncio.sleep(delay)

A caller that wants a fresh sequence after a success (a reconnect loop whose connection worked
for a while) simply starts a new generator.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

__all__ = ["backoff"]


def backoff(
    *,
    initial: float,
    maximum: float,
    factor: float = 2.0,
    jitter: random.Random | None = None,
) -> Iterator[float]:
    """Delays in seconds, endlessly: ``initial``, ``initial * factor``, ... capped at ``maximum``.

    ``jitter`` None: exactly those delays (deterministic). With a ``random.Random``, each delay
    ``d`` becomes uniform in ``[d / 2, d]`` ("equal jitter", AWS Architecture Blog, *Exponential
    Backoff And Jitter*): retries of many callers that failed together spread out instead of
    arriving in lock-step, yet none comes back sooner than half the nominal delay, which spares an
    endpoint that is already struggling. Pass a seeded ``Random`` for reproducible delays.

    Raises ``ValueError`` for a negative ``initial``, ``maximum < initial`` or ``factor < 1``.
    """
    if initial < 0 or maximum < initial or factor < 1:
        raise ValueError(
            f"backoff needs 0 <= initial <= maximum and factor >= 1, "
            f"got initial={initial}, maximum={maximum}, factor={factor}"
        )
    return _delays(initial, maximum, factor, jitter)


def _delays(
    initial: float, maximum: float, factor: float, jitter: random.Random | None
) -> Iterator[float]:
    # A separate generator so that backoff() checks its arguments when called, not on first next().
    delay = initial
    if jitter is None:
        while True:
            yield delay
            delay = min(maximum, delay * factor)
    uniform = jitter.uniform
    while True:
        yield uniform(delay / 2, delay)
        delay = min(maximum, delay * factor)

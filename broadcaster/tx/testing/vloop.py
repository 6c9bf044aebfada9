"""Virtual time for asyncio: an event loop whose clock only moves when nothing else can run.

``VirtualTimeLoop`` is asyncio's own selector loop with two changes:

- ``time()`` returns a virtual clock. When the loop has nothing ready, asyncio's ``_run_once``
  asks its selector to wait until the next timer; the virtual selector polls the real one without
  blocking and, if no file descriptor is ready, moves the clock straight to that timer. A run of
  ``asyncio.sleep(3600)`` takes microseconds of real time and timers fire in exactly the order
  their deadlines say, every run (the trick of trio's ``MockClock(autojump_threshold=0)`` and
  of Twisted's ``task.Clock``, applied to asyncio's stock loop).
- ``run_in_executor`` (and so ``asyncio.to_thread``) runs the function inline and returns a done
  future: no thread ever races the virtual clock.

A loop with no timer and nothing ready would wait for ever: that is a deadlock of the code under
test, and the loop raises :class:`VirtualDeadlock` instead of hanging. The clock never goes back.

:class:`VirtualClock` turns the loop's clock into the two callables the tx manager takes
(``clock=`` wall seconds, ``clock_ns=`` a nanosecond counter) so every part of a simulation reads
the same time.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

__all__ = ["VirtualClock", "VirtualDeadlock", "VirtualTimeLoop", "run_virtual"]

_T = TypeVar("_T")

WALL_EPOCH = 1_700_000_000.0
"""Wall-clock seconds at virtual time 0 (any fixed value: runs must not depend on the date)."""


class VirtualDeadlock(RuntimeError):
    """The loop has no timer and nothing ready: whatever it waits for can never happen."""


class _VirtualSelector(selectors.BaseSelector):
    """Delegates registrations to a real selector; ``select`` never blocks, it jumps the clock."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.loop: VirtualTimeLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # Nothing scheduled at all. Only another thread could still wake us (the self-pipe):
            # give it a moment of real time, then call it what it is.
            ready = self._real.select(0.5)
            if ready:
                return ready
            raise VirtualDeadlock("the event loop has nothing to run and no timer to wait for")
        assert self.loop is not None
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on virtual time (see the module docstring)."""

    def __init__(self, start: float = 0.0) -> None:
        selector = _VirtualSelector()
        self._virtual_now = float(start)
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (only the loop's selector and tests call this)."""
        if seconds > 0:
            self._virtual_now += seconds

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        future: asyncio.Future[_T] = self.create_future()
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # handed to the awaiting task, as an executor would
            future.set_exception(exc)
        return future


class VirtualClock:
    """The loop's virtual time as wall seconds (``wall``) and nanoseconds (``ns``)."""

    def __init__(self, loop: VirtualTimeLoop, epoch: float = WALL_EPOCH) -> None:
        self.loop = loop
        self.epoch = epoch

    def now(self) -> float:
        """Seconds since the simulation began."""
        return self.loop.time()

    def wall(self) -> float:
        return self.epoch + self.loop.time()

    def ns(self) -> int:
        return round(self.loop.time() * 1e9)


def run_virtual(coro: Coroutine[Any, Any, _T], *, start: float = 0.0) -> _T:
    """Run ``coro`` to completion on a fresh :class:`VirtualTimeLoop`, then close the loop."""
    loop = VirtualTimeLoop(start)
    try:
        return loop.run_until_complete(coro)
    finally:
        _cancel_all(loop)
        loop.close()


def _cancel_all(loop: VirtualTimeLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())

"""Two small things every part of the tx manager shares: what it knows of the chain right now
(``ChainView``) and the task group its background work runs in (``Background``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from broadcaster.tx.window import CanonicalWindow
from heads.events import Head

__all__ = ["Background", "ChainView"]

log = logging.getLogger(__name__)


class ChainView:
    """The canonical tip as the tracker last reported it, its verified base fee, the window of
    canonical blocks, and the chain's block number read at start (before any head arrived).

    Written only by ``ChainFollower`` (and ``Recovery.start`` for ``head_number``); read by all.
    """

    __slots__ = ("base_fee", "canonical_chain", "head_number", "tip", "window")

    def __init__(
        self,
        finality_depth: int,
        canonical_chain: Callable[[], Iterable[Head]] | None = None,
    ) -> None:
        self.window = CanonicalWindow(finality_depth)
        # The tracker's canonical chain (``ChainTracker.canonical_chain``): it reaches below
        # where our window starts after a restart (the tracker backfills by hash).
        self.canonical_chain = canonical_chain
        self.tip: Head | None = None
        self.base_fee: int | None = None
        self.head_number: int | None = None

    def head(self) -> int | None:
        """The canonical block number as far as we know (the tip, else what start read)."""
        return self.tip.number if self.tip is not None else self.head_number

    def tip_number(self) -> int:
        return self.tip.number if self.tip is not None else 0

    def is_canonical(self, number: int, block_hash: str) -> bool | None:
        """Is ``block_hash`` the canonical block at ``number``? Our window first, then the
        tracker's chain; ``None`` where neither reaches (older than either follows)."""
        verdict = self.window.judge(number, block_hash)
        if verdict is not None or self.canonical_chain is None:
            return verdict
        for head in self.canonical_chain():
            if head.number == number:
                return head.hash == block_hash
        return None

    def orphaned_holds(self) -> list[str]:
        """Held blocks (our inclusions) that are not canonical at their height, by our window or
        by the tracker's chain below it; each reported once (the hold is dropped)."""
        window = self.window
        bad = window.orphans()
        outside = window.holds_outside() if self.canonical_chain is not None else ()
        if outside:
            assert self.canonical_chain is not None
            canonical = {head.number: head.hash for head in self.canonical_chain()}
            below = [h for h, n in outside if n in canonical and canonical[n] != h]
            for block_hash in below:
                window.drop_hold(block_hash)
            bad += below
        return bad


class Background:
    """The manager's TaskGroup: ``spawn`` runs a coroutine there; its exceptions are logged, not
    fatal (one failed resend must not stop the service). Coroutines spawned before ``run``
    starts wait for it."""

    def __init__(self) -> None:
        self._group: asyncio.TaskGroup | None = None
        self._waiting: list[Coroutine[Any, Any, None]] = []

    async def run(self, *forever: Coroutine[Any, Any, None]) -> None:
        """Own the background tasks (and ``forever``, e.g. the inclusion worker) until
        cancelled."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            for coro in self._waiting:
                group.create_task(coro)
            self._waiting.clear()
            for coro in forever:
                group.create_task(coro)
            await asyncio.Event().wait()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        guarded = _guard(coro)
        if self._group is None:
            self._waiting.append(guarded)
        else:
            self._group.create_task(guarded)


async def _guard(coro: Awaitable[None]) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background task failed")

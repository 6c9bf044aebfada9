"""Each sender's next nonce against the chain, the holes in it, and what may be forgotten.

``NonceSync`` reconciles a sender's next nonce with ``eth_getTransactionCount(latest/pending)``
(DESIGN.md §5: at start, after a reorg, after nonce errors, and whenever a given-up intent left a
hole): it asks every read endpoint, does not trust one endpoint's jump alone
(``plans.plan_nonce_counts``), and plugs holes with noops, at most ``[fees] max_gap_fill`` per
sender (``plans.plan_gap_fill``); holes it could not plug now (signer down) are tried again.

``Retention`` keeps memory bounded: a record that needs nothing more (final, released, failed for
good) loses its per-attempt notes at once and leaves the book once ``retain_settled`` newer ones
exist (the journal on disk still answers for it).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from broadcaster.rpc.chain_reader import ChainReadError
from broadcaster.tx.executor import RETRY_MAX, Executor
from broadcaster.tx.ledger import AttemptLedger
from broadcaster.tx.plans import Alert, plan_gap_fill, plan_nonce_counts
from broadcaster.tx.pricing import FeePolicy
from broadcaster.tx.seams import ChainState, TxObserver
from broadcaster.tx.view import Background
from nonce import NonceBook, TxRecord, TxState
from nonce.resync import held_top
from nonce.state import GIVEN_UP_STATES

__all__ = ["NonceSync", "Retention"]

log = logging.getLogger(__name__)


class Retention:
    """Forgets what settled records no longer need (see the module docstring)."""

    def __init__(
        self,
        book: NonceBook,
        ledger: AttemptLedger,
        executor: Executor,
        *,
        retain_settled: int = 10_000,
        evicted_on_disk: bool = False,
    ) -> None:
        self.book = book
        self.ledger = ledger
        self.executor = executor
        self.retain_settled = retain_settled
        self.evicted_any = evicted_on_disk
        self._settled: collections.deque[TxRecord] = collections.deque()
        self._retired: set[int] = set()  # id() of the records in _settled
        self._forgetters: list[Callable[[TxRecord], None]] = []

    def also_forget(self, forget: Callable[[TxRecord], None]) -> None:
        """Another part's per-record state to drop when a record settles."""
        self._forgetters.append(forget)

    def settle(self, record: TxRecord) -> None:
        if id(record) in self._retired:
            return
        self.ledger.forget(record)
        self.executor.forget(record)
        for forget in self._forgetters:
            forget(record)
        self._settled.append(record)
        self._retired.add(id(record))
        while len(self._settled) > self.retain_settled:
            old = self._settled.popleft()
            self._retired.discard(id(old))
            self.book.evict(old)
            self.evicted_any = True

    def retired(self, record: TxRecord) -> bool:
        """Nothing more is done for ``record`` (final, released, or its nonce taken by others)."""
        return id(record) in self._retired


class NonceSync:
    """Resyncs senders' nonces and fills gaps (see the module docstring)."""

    def __init__(
        self,
        *,
        book: NonceBook,
        chain: ChainState,
        executor: Executor,
        retention: Retention,
        fees: FeePolicy,
        observer: TxObserver,
        background: Background,
        clock: Callable[[], float] = time.time,
        delay: float = 0.2,
    ) -> None:
        self.book = book
        self.chain = chain
        self.executor = executor
        self.retention = retention
        self.fees = fees
        self.observer = observer
        self.background = background
        self.clock = clock
        self.delay = delay
        self._wanted: set[str] = set()
        book.listen(self._on_transition)

    def _on_transition(self, record: TxRecord, old: TxState, new: TxState) -> None:
        # A given-up intent whose nonce nothing will use is a hole (or, at the top, reusable).
        # So is the authorization nonce n + 1 of a self-sponsored delegation a noop replaced.
        if new in GIVEN_UP_STATES and (
            not record.covers_nonce or record.span < record.intent.nonce_span
        ):
            self.want(record.sender)

    def want(self, sender: str) -> None:
        """Resync ``sender`` soon (once, however many answers ask for it meanwhile)."""
        if sender in self._wanted:
            return
        self._wanted.add(sender)
        self.background.spawn(self._resync(sender))

    async def counts(self, sender: str) -> tuple[int, int]:
        """(latest, pending) for ``sender``, not trusting one endpoint's jump alone."""
        each = getattr(self.chain, "transaction_counts_each", None)
        if each is None:
            answers: Mapping[str, Any] = {"rpc": await self.chain.transaction_counts(sender)}
        else:
            answers = await each(sender)
        counts = {k: v for k, v in answers.items() if isinstance(v, tuple)}
        if not counts:
            raise ChainReadError(f"no endpoint answered eth_getTransactionCount for {sender}")
        slots = {r.nonce: r for r in self.book.records(sender)}
        latest, pending, alerts = plan_nonce_counts(
            counts, held=held_top(slots), max_gap_fill=self.fees.max_gap_fill
        )
        for alert in alerts:
            self.alert(alert)
        return latest, pending

    def alert(self, alert: Alert) -> None:
        self.observer.alert(alert.kind, alert.detail)

    async def _resync(self, sender: str) -> None:
        await asyncio.sleep(self.delay)  # let the burst of answers for this sender settle first
        self._wanted.discard(sender)
        try:
            latest, pending = await self.counts(sender)
        except ChainReadError as exc:
            log.warning("resync of %s failed: %s", sender, exc)
            return
        await self.apply(sender, latest, pending)

    async def apply(self, sender: str, latest: int, pending: int) -> None:
        """Set ``sender``'s next nonce from the counts; release and plug what that reveals."""
        before = {r.nonce: r for r in self.book.records(sender)}
        result = self.book.resync(
            sender, chain_latest=latest, chain_pending=pending, now=self.clock()
        )
        for nonce in result.released:
            self.retention.settle(before[nonce])
        plan = plan_gap_fill(sender, result.gaps, max_gap_fill=self.fees.max_gap_fill)
        if plan.alert is not None:
            self.alert(plan.alert)
        unfilled = False
        for nonce in plan.fill:
            if not await self.executor.fill_gap(sender, nonce):
                unfilled = True
        if unfilled:  # the signer is down or busy: try again shortly, nothing else will
            self.background.spawn(self._later(sender))
        self.observer.pending(self.book.pending_counts())

    async def _later(self, sender: str) -> None:
        await asyncio.sleep(RETRY_MAX)
        self.want(sender)

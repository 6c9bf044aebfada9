"""Start-up resync and crash recovery for the tx manager (DESIGN.md §5, "Durability").

After a restart (``kill -9`` included) the journal holds every acknowledged intent and a prefix
of later changes. ``start`` asks the chain for each sender's nonces and each open attempt's
receipt, lets ``nonce.recovery.plan_recovery`` decide, and carries the plan out: mark what was
mined, resend identical bytes for what was not, sign what never was, fill gaps, and find at
(sender, nonce) an attempt whose journal entry the crash lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from broadcaster.rpc.chain_reader import ChainReadError
from broadcaster.tx.blobs import BlobError, SidecarBusy, prepare_sidecar
from broadcaster.tx.executor import Executor
from broadcaster.tx.inclusion import InclusionTracker
from broadcaster.tx.nonces import NonceSync
from broadcaster.tx.reasons import ResendReason
from broadcaster.tx.seams import ChainState, TxObserver
from broadcaster.tx.view import ChainView
from nonce import AttemptReason, BlockRef, NonceBook, TxState
from nonce.recovery import (
    ChainFacts,
    FillGap,
    MarkIncluded,
    NonceTaken,
    ReplaceExpired,
    Resend,
    Sign,
    hashes_to_check,
    plan_recovery,
)

__all__ = ["Recovery"]

log = logging.getLogger(__name__)

_S = TxState


class Recovery:
    """Nonce resync and crash recovery (see the module docstring)."""

    def __init__(
        self,
        *,
        book: NonceBook,
        chain: ChainState,
        view: ChainView,
        executor: Executor,
        inclusion: InclusionTracker,
        nonces: NonceSync,
        observer: TxObserver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.chain = chain
        self.view = view
        self.executor = executor
        self.inclusion = inclusion
        self.nonces = nonces
        self.observer = observer
        self.clock = clock

    async def start(self, accounts: Iterable[str]) -> list[Any]:
        """Resync every account's nonce against the chain and reconcile the reloaded book.

        Reads the chain's current block first: intents past ``validUntilBlock`` are judged
        against it even before any head arrives (also after a restart). Returns the recovery
        actions taken (for logs and tests).
        """
        senders = sorted({a.lower() for a in accounts} | set(self.book.senders()))
        window = self.view.window
        for record in self.book.all_records():  # the journal's inclusions still need finality
            if record.block is not None and not record.settled and not record.released:
                window.hold(record.block.hash, record.block.number)
            self.inclusion.watch(record)
        for record in list(self.book.all_records()):
            if record.attempts:
                self.executor.delegated.note(record)  # self-sponsored EIP-7702 signed before
            if record.intent.blobs and not record.settled and not record.released:
                # KZG in a worker now, so a re-sign after a reorg finds the sidecar cached
                try:
                    await prepare_sidecar(record.intent.blobs)
                except BlobError as exc:  # journaled blobs passed intake: not expected
                    log.error("%s/%d: blobs: %s", record.sender, record.nonce, exc)
                except SidecarBusy as exc:  # the worker died twice: a re-sign computes it
                    log.error("%s/%d: blobs: %s", record.sender, record.nonce, exc)
        try:
            self.view.base_fee = await self.chain.base_fee()
        except ChainReadError as exc:
            log.warning("could not read the base fee at start: %s", exc)
        if self.view.tip is None:
            self.view.head_number = await self.chain.block_number()
        return await self.reconcile(senders, self.view.head())

    async def reconcile(self, senders: Sequence[str], head_number: int | None) -> list[Any]:
        """Reconcile every unsettled record of ours with the chain (start, deep reorgs)."""
        nonces = self.nonces
        counts = {s: await nonces.counts(s) for s in senders}
        records = [r for r in self.book.all_records() if not r.settled and not r.released]
        for record in records:
            if record.sender not in counts:
                counts[record.sender] = await nonces.counts(record.sender)
        latest = {s: c[0] for s, c in counts.items()}
        check = hashes_to_check(records, latest)
        receipts = await self.chain.receipts(check) if check else {}
        # Only receipts whose canonical block's proven body holds the tx (issue 18).
        proven = await self.inclusion.proven_receipts(receipts)
        refs = {h: BlockRef(r.block_number, r.block_hash) for h, r in proven.items()}
        head = head_number if head_number is not None else self.view.head()
        actions = plan_recovery(records, ChainFacts(latest, refs, head))
        for action in actions:
            await self._apply(action)
        for sender in sorted(counts):
            await nonces.apply(sender, *counts[sender])
        return actions

    async def _apply(self, action: Any) -> None:
        now = self.clock()
        executor = self.executor
        if isinstance(action, MarkIncluded):
            self.inclusion.mark_included(action.tx_hash, action.block, now)
        elif isinstance(action, Resend):
            record = action.record
            if action.was_included and record.state is _S.INCLUDED:
                self.book.transition(record, _S.REORGED, reason="recovery: not mined", now=now)
            executor.send(record, action.attempt, reason=ResendReason.RECOVERY)
        elif isinstance(action, Sign):
            await executor.sign_and_send(action.record)
        elif isinstance(action, ReplaceExpired):
            record = action.record
            if record.state is _S.PENDING and not record.attempts:
                executor.give_up(record, _S.EXPIRED, "validUntilBlock passed before it was signed")
                return
            if record.state is _S.INCLUDED:
                self.book.transition(record, _S.REORGED, reason="recovery: not mined", now=now)
            await executor.noop(record, AttemptReason.EXPIRED_REPLACEMENT, final=_S.EXPIRED)
        elif isinstance(action, FillGap):
            await executor.fill_gap(action.sender, action.nonce)
        elif isinstance(action, NonceTaken):
            await self.inclusion.resolve_taken(action.record)

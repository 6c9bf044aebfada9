"""Start-up resync and crash recovery for the tx manager (DESIGN.md §5, "Durability").

After a restart (``kill -9`` included) the journal holds every acknowledged intent and a prefix
of later changes. ``start`` asks the chain for each sender's nonces and each open attempt's
receipt, lets ``nonce.recovery.plan_recovery`` decide, and carries the plan out: mark what was
mined, resend identical bytes for what was not, sign what never was, fill gaps, and find at
(sender, nonce) an attempt whose journal entry the crash lost.

With a ``signed_nonces`` source (the enclave's verified audit log), recovery then takes every
nonce the enclave signed for an intent the journal lost (the manager asks the signer during the
intent's fsync) with a noop before the book hands it to a new intent
(``broadcaster.tx.unjournaled``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from broadcaster.audit.verify import AuditRefused
from broadcaster.rpc.chain_reader import ChainReadError
from broadcaster.tx.blobs import BlobError, SidecarBusy, prepare_sidecar
from broadcaster.tx.executor import Executor, retry_delays
from broadcaster.tx.inclusion import InclusionTracker
from broadcaster.tx.nonces import NonceSync
from broadcaster.tx.reasons import ResendReason
from broadcaster.tx.seams import ChainState, TxObserver
from broadcaster.tx.unjournaled import NoopAt, SignedNonces, plan_unjournaled
from broadcaster.tx.view import Background, ChainView
from nonce import AttemptReason, BlockRef, NonceBook, TxState
from nonce.errors import JournalError
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
from signer_client.errors import SignerError

__all__ = ["Recovery"]

# What leaves recovery unsure which nonces the enclave signed: the signer did not answer, its
# log was refused, the audit copy could not be read, the chain's count could not be had.
_UNSURE = (SignerError, AuditRefused, JournalError, ChainReadError)

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
        signed_nonces: SignedNonces | None = None,
        background: Background | None = None,
    ) -> None:
        self.book = book
        self.signed_nonces = signed_nonces
        self.background = background or Background()
        # Set once the nonces signed but never journaled are booked (at once without
        # ``signed_nonces``); ``TxManager.admit`` books no new intent before.
        self.checked = asyncio.Event()
        if signed_nonces is None:
            self.checked.set()
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
        actions = await self.reconcile(senders, self.view.head())
        if self.signed_nonces is not None:
            try:
                actions += await self.unjournaled(senders)
            except _UNSURE as exc:  # the rest of recovery does not wait for the signer
                log.warning(
                    "recovery: the enclave's audit log could not be read (%s); new intents wait "
                    "for it (no nonce is reused on a guess)",
                    exc,
                )
                self.background.spawn(self._unjournaled_later(senders))
        return actions

    async def unjournaled(self, senders: Sequence[str]) -> list[NoopAt]:
        """Noops at the nonces the enclave signed that the journal does not know (and at the
        holes below them), each sender's from its mined count (module docstring). Sets
        :attr:`checked` once planned: new intents get nonces only after that (``admit``)."""
        assert self.signed_nonces is not None
        floors = {s: (await self.nonces.counts(s))[0] for s in senders}
        signed = await self.signed_nonces(floors)
        book = self.book
        plan = plan_unjournaled(signed, floors, lambda s, n: book.get(s, n) is not None)
        unsigned = []
        for noop in plan:
            log.warning(
                "recovery: %s/%d %s; a noop takes it before the nonce is reused",
                noop.sender,
                noop.nonce,
                "signed by the enclave for an intent the journal lost"
                if noop.signed
                else "a hole below a nonce signed for a lost intent",
            )
            if not await self.executor.fill_gap(noop.sender, noop.nonce):
                unsigned.append(noop)
        self.checked.set()  # every such nonce is booked now: the book hands out later ones
        for noop in unsigned:  # booked, the signer could not sign it now: again, later
            self.background.spawn(self._noop_later(noop))
        return plan

    async def _unjournaled_later(self, senders: Sequence[str]) -> None:
        for delay in retry_delays():
            await asyncio.sleep(delay)
            try:
                await self.unjournaled(senders)
                return
            except _UNSURE as exc:
                log.warning("recovery: the enclave's audit log still unread: %s", exc)

    async def _noop_later(self, noop: NoopAt) -> None:
        for delay in retry_delays():
            await asyncio.sleep(delay)
            record = self.book.get(noop.sender, noop.nonce)
            if record is None or record.has_noop or record.block is not None:
                return
            if await self.executor.noop(record, AttemptReason.GAP_FILL):
                return

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

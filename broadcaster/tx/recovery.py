"""Start-up resync and crash recovery for the tx manager (DESIGN.md §5, "Durability").

After a restart (``kill -9`` included) the journal holds every acknowledged intent and a prefix
of later changes. ``start`` asks the chain for each sender's nonces and each open attempt's
receipt, lets ``nonce.recovery.plan_recovery`` decide, and carries the plan out: mark what was
mined, resend identical bytes for what was not, sign what never was, fill gaps, and find at
(sender, nonce) an attempt whose journal entry the crash lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from broadcaster.rpc.chain_reader import ChainReadError
from broadcaster.tx.core import TxCore, _allowed
from nonce import (
    Attempt,
    AttemptReason,
    BlockRef,
    TxRecord,
    TxState,
)
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


class Recovery(TxCore):
    """Nonce resync and crash recovery (see the module docstring)."""

    # -- start-up: nonces and crash recovery -------------------------------------------------

    async def start(self, accounts: Iterable[str]) -> list[Any]:
        """Resync every account's nonce against the chain and reconcile the reloaded book.

        Reads the chain's current block first: intents past ``validUntilBlock`` are judged
        against it even before any head arrives (also after a restart). Returns the recovery
        actions taken (for logs and tests).
        """
        senders = sorted({a.lower() for a in accounts} | set(self.book.senders()))
        try:
            self.base_fee = await self.chain.base_fee()
        except ChainReadError as exc:
            log.warning("could not read the base fee at start: %s", exc)
        if self.tip is None:
            self.head_number = await self.chain.block_number()
        return await self._reconcile(senders, head_number=self.chain_head())

    async def _reconcile(self, senders: Sequence[str], head_number: int | None) -> list[Any]:
        counts = {s: await self._counts(s) for s in senders}
        records = [r for r in self.book.all_records() if not r.settled and not r.released]
        latest = {s: counts[s][0] for s in senders}
        for record in records:
            if record.sender not in latest:
                counts[record.sender] = await self._counts(record.sender)
                latest[record.sender] = counts[record.sender][0]
        check = hashes_to_check(records, latest)
        receipts = await self.chain.receipts(check) if check else {}
        refs = {
            h: BlockRef(r.block_number, r.block_hash)
            for h, r in receipts.items()
            if self._canonical(r.block_number, r.block_hash)
        }
        head = head_number if head_number is not None else self.chain_head()
        actions = plan_recovery(records, ChainFacts(latest, refs, head))
        now = self._clock()
        for action in actions:
            await self._apply_recovery(action, now)
        for sender in sorted(counts):
            await self._apply_counts(sender, *counts[sender])
        return actions

    async def _apply_recovery(self, action: Any, now: float) -> None:
        if isinstance(action, MarkIncluded):
            self._mark_included(action.tx_hash, action.block, now)
        elif isinstance(action, Resend):
            record = action.record
            if action.was_included and record.state is _S.INCLUDED:
                self.book.transition(record, _S.REORGED, reason="recovery: not mined", now=now)
            self._send(record, action.attempt, reason="recovery")
        elif isinstance(action, Sign):
            await self._sign_and_send(action.record)
        elif isinstance(action, ReplaceExpired):
            record = action.record
            if record.state is _S.PENDING and not record.attempts:
                self._give_up(record, _S.EXPIRED, "validUntilBlock passed before it was signed")
                return
            if record.state is _S.INCLUDED:
                self.book.transition(record, _S.REORGED, reason="recovery: not mined", now=now)
            await self._replace_with_noop(record, _S.EXPIRED, AttemptReason.EXPIRED_REPLACEMENT)
        elif isinstance(action, FillGap):
            await self._fill_gap(action.sender, action.nonce)
        elif isinstance(action, NonceTaken):
            await self._nonce_taken(action.record, now)

    async def _nonce_taken(self, record: TxRecord, now: float) -> None:
        """The chain used ``record``'s nonce with a hash the journal does not hold.

        Usually our own attempt whose journal entry was still queued when the process died (the
        reaction path does not wait on disk). Find the mined transaction at (sender, nonce): if it
        carries the intent's payload (or our noop), it is ours and the intent is included;
        otherwise another holder of the key used the nonce: a *foreign* transaction (DESIGN.md
        §5): the intent fails, the ``foreign_transaction`` alert fires, and it is never resent.
        """
        try:
            mined = await self.chain.mined_at(record.sender, record.nonce)
        except ChainReadError as exc:
            log.warning("%s/%d: cannot look up the mined tx: %s", record.sender, record.nonce, exc)
            return  # asked again at the next recheck
        intent = record.intent
        if mined is not None:
            ours = (mined.to, mined.value, mined.data) == (intent.to, intent.value, intent.data)
            noop = mined.to == record.sender and mined.value == 0 and not mined.data
            if ours or noop:
                attempt = Attempt(
                    raw=mined.raw,
                    hash=mined.hash,
                    nonce=record.nonce,
                    max_fee_per_gas=mined.max_fee_per_gas,
                    max_priority_fee_per_gas=mined.max_priority_fee_per_gas,
                    signed_at=now,
                    reason=(
                        AttemptReason.CANCEL
                        if noop and not ours
                        else AttemptReason.REORG
                        if record.attempts
                        else AttemptReason.INITIAL
                    ),
                    replaces=record.latest.hash if record.latest is not None else None,
                )
                if self.book.by_hash(mined.hash) is None:
                    self.book.add_attempt(record, attempt)
                self._mark_included(mined.hash, BlockRef(mined.block_number, mined.block_hash), now)
                log.warning(
                    "%s/%d: recovered a mined attempt the journal had not written yet (0x%s)",
                    record.sender,
                    record.nonce,
                    mined.hash.hex(),
                )
                return
        log.error(
            "%s/%d: the chain used this nonce with a transaction that is not ours",
            record.sender,
            record.nonce,
        )
        self.observer.alert("foreign_transaction", f"{record.sender}/{record.nonce}")
        self.observer.foreign(record.sender)
        if _S.FAILED in _allowed(record):
            self.book.transition(record, _S.FAILED, reason="nonce used elsewhere", now=now)
        if record.state is _S.FAILED:
            self._settle(record)

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

        Returns the recovery actions taken (for logs and tests).
        """
        senders = sorted({a.lower() for a in accounts} | set(self.book.senders()))
        try:
            self.base_fee = await self.chain.base_fee()
        except ChainReadError as exc:
            log.warning("could not read the base fee at start: %s", exc)
        return await self._reconcile(senders, head_number=None)

    async def _reconcile(self, senders: Sequence[str], head_number: int | None) -> list[Any]:
        counts = {s: await self.chain.transaction_counts(s) for s in senders}
        records = [r for r in self.book.all_records() if not r.settled and not r.released]
        latest = {s: counts[s][0] for s in senders}
        for record in records:
            if record.sender not in latest:
                latest[record.sender] = (await self.chain.transaction_counts(record.sender))[0]
        check = hashes_to_check(records, latest)
        receipts = await self.chain.receipts(check) if check else {}
        refs = {h: BlockRef(r.block_number, r.block_hash) for h, r in receipts.items()}
        head = head_number if head_number is not None else (self.tip.number if self.tip else None)
        actions = plan_recovery(records, ChainFacts(latest, refs, head))
        now = self._clock()
        for action in actions:
            await self._apply_recovery(action, now)
        for sender in senders:
            chain_latest, chain_pending = counts[sender]
            result = self.book.resync(
                sender, chain_latest=chain_latest, chain_pending=chain_pending, now=now
            )
            for nonce in result.gaps:
                await self._fill_gap(sender, nonce)
        self.observer.pending(self.book.pending_counts())
        return actions

    async def _apply_recovery(self, action: Any, now: float) -> None:
        if isinstance(action, MarkIncluded):
            self.book.mark_included(action.tx_hash, action.block, now=now)
            self.observer.status(action.record, "included")
        elif isinstance(action, Resend):
            record = action.record
            if action.was_included and record.state is _S.INCLUDED:
                self.book.transition(record, _S.REORGED, reason="recovery: not mined", now=now)
            self._send(record, action.attempt, reason="recovery")
        elif isinstance(action, Sign):
            await self._sign_and_send(action.record, self._initial_fees(action.record.intent))
        elif isinstance(action, ReplaceExpired):
            await self._replace_with_noop(
                action.record, _S.EXPIRED, AttemptReason.EXPIRED_REPLACEMENT
            )
        elif isinstance(action, FillGap):
            await self._fill_gap(action.sender, action.nonce)
        elif isinstance(action, NonceTaken):
            await self._nonce_taken(action.record, now)

    async def _nonce_taken(self, record: TxRecord, now: float) -> None:
        """The chain used ``record``'s nonce with a hash the journal does not hold.

        Usually our own attempt whose journal entry was still queued when the process died (the
        reaction path does not wait on disk). Find the mined transaction at (sender, nonce): if it
        carries the intent's payload (or our noop), it is ours and the intent is included;
        otherwise another holder of the key used the nonce and the intent failed.
        """
        mined = await self.chain.mined_at(record.sender, record.nonce)
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
                    reason=AttemptReason.REORG if record.attempts else AttemptReason.INITIAL,
                    replaces=record.latest.hash if record.latest is not None else None,
                )
                if self.book.by_hash(mined.hash) is None:
                    self.book.add_attempt(record, attempt)
                block = BlockRef(mined.block_number, mined.block_hash)
                self.book.mark_included(mined.hash, block, now=now)
                self.observer.status(record, "included")
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
        self.observer.alert("nonce_taken", f"{record.sender}/{record.nonce}")
        if _S.FAILED in _allowed(record):
            self.book.transition(record, _S.FAILED, reason="nonce used elsewhere", now=now)
            self.observer.status(record, "failed")

"""What the chain holds of ours: inclusion scans, receipts, and nonces taken by others.

DESIGN.md §5 ("Inclusion"): for each canonical block, learn its transaction hashes (one
``eth_getBlockByHash(h, false)`` per block, batched). A hash list is an RPC's word and cannot be
checked against the header (issue 18): a block whose list names one of ours is read in full
(``true``) and proven (``ChainState.proven_blocks``: the header hashes to the hash the tracker
verified, the transactions to its ``transactionsRoot``, senders recovered) before anything of
ours in it is marked ``included``, and then from the proven body (which also finds one of ours
the list left out). An answer refused is counted (``inclusion_bad_blocks_total{reason}``) and the
block asked of every other read endpoint; a block none proves is asked again
(``PROOF_RETRIES`` times), then left to the stall's receipt recheck. Blocks naming nothing of
ours cost only the hash list: the hot path keeps one cheap read per block. A receipt is an
RPC's word too: it counts only if its block is canonical in our window (a lagging RPC answers
from an abandoned branch) *and* the block's proven body holds the transaction
(:meth:`InclusionTracker.proven_receipts`; the rechecks and the start-up recovery use it).

What a lying read endpoint can still do: leave one of ours out of a hash list (nothing of ours
is then proven there; the stall's receipt recheck finds it, proven, when another endpoint or the
liar's own receipt names the block), or, as the *only* read endpoint, answer every block
unprovably: then nothing is ever proven, the intent stays ``broadcast`` (never ``included`` on
its word, never ``failed``), and ``inclusion_bad_blocks_total{reason="unverified"}`` climbs:
the operator adds an honest endpoint. Once included, the replacement a reorg would need is signed
ahead (``presign``), so the reaction needs no signer round trip.

A nonce the chain used while none of our attempts there is mined, for ``foreign_blocks`` blocks
in a row, is looked up at ``(sender, nonce)`` (``ChainReader.mined_at``): our own attempt whose
journal entry a crash lost (then it is ``included``), or a *foreign* transaction, which ends the
intent ``failed`` with the ``foreign_transaction`` alert; it is never resent forever. Only a
transaction proven in a canonical block counts (``mined_at`` checks the block's header and body and
recovers the sender from the signature): a lookup that finds nothing, or cannot prove what it
finds, gives nothing up and is asked again at the next recheck (a lying RPC must not get an
intent reported ``failed``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from broadcaster.rpc.chain_reader import ChainReadError, Receipt
from broadcaster.tx.executor import Executor, SignRefused, holding
from broadcaster.tx.ledger import AttemptLedger, Presigned
from broadcaster.tx.nonces import NonceSync, Retention
from broadcaster.tx.reasons import NOT_IN_BODY, ResendReason
from broadcaster.tx.seams import ChainState, TxObserver
from broadcaster.tx.view import ChainView
from heads.events import Head
from nonce import Attempt, AttemptReason, BlockRef, NonceBook, TxRecord, TxState
from nonce.fees import BASE_FEE_HEADROOM
from nonce.state import GIVEN_UP_STATES

__all__ = ["InclusionTracker", "noop_reason"]

log = logging.getLogger(__name__)

_S = TxState
SCAN_RETRIES = 400
"""Times a queued canonical block is asked for again (every 50 ms, all queued blocks in one
batch) while the RPC does not have it yet: 20 s for a reader that lags the head clients."""

PROOF_RETRIES = 20
"""Times a block whose hash list names one of ours is read in full again while no endpoint
proves its body (about 1 s at the scan's 50 ms; a reader behind a load balancer may answer the
list from one node and the body from another that lags). Not ``SCAN_RETRIES``: an unprovable
answer (the only read endpoint lying, or a header this version cannot hash) costs a sender
recovery of every transaction in the block per read, and 400 of them per block pinned a core.
Past it the stall's receipt recheck proves it (:meth:`InclusionTracker.recheck`)."""

PRESIGNS_IN_FLIGHT = 4
"""Presignatures asked of the signer at once. A block holding many of ours asks for one each;
all at once they filled the signer's urgent lane (and the loop pass that built them), and a
reaction's own re-sign queued behind them. Served newest block first (the one the next reorg
most likely drops), within a block in the order asked (a sender's nonces in order: a reorg of
the block needs the lowest first)."""

PRESIGN_DEPTH = 4
"""A transaction whose block is this many blocks below the tip when its presignature's turn
comes is not presigned (a reorg that deep re-signs, as without presign): the backlog of a big
block must not delay the next block's."""

PRESIGN_PRUNE_MIN = 256
"""Queued presignatures past which the deep ones are dropped
(:meth:`InclusionTracker._prune_presigns`)."""


def _too_deep(number: int, tip: int) -> bool:
    """A transaction in block ``number`` is no longer presigned (:data:`PRESIGN_DEPTH`)."""
    return tip - number >= PRESIGN_DEPTH


def noop_reason(record: TxRecord) -> AttemptReason:
    """The reason a record's earlier noop was signed (what a new noop there repeats)."""
    for attempt in reversed(record.attempts):
        if attempt.is_noop:
            return attempt.reason
    return AttemptReason.CANCEL


class InclusionTracker:
    """Finds our transactions on the canonical chain (see the module docstring)."""

    def __init__(
        self,
        *,
        book: NonceBook,
        chain: ChainState,
        view: ChainView,
        ledger: AttemptLedger,
        executor: Executor,
        nonces: NonceSync,
        retention: Retention,
        observer: TxObserver,
        endpoints: int,
        presign: bool = True,
        foreign_blocks: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.chain = chain
        self.view = view
        self.ledger = ledger
        self.executor = executor
        self.nonces = nonces
        self.retention = retention
        self.observer = observer
        self.endpoints = endpoints
        self.presign = presign
        self.foreign_blocks = foreign_blocks
        self.clock = clock
        self.queue: dict[str, int] = {}
        self.wakeup = asyncio.Event()
        self._retries: dict[str, int] = {}
        self._proofs: dict[str, int] = {}  # block -> full reads no endpoint proved (PROOF_RETRIES)
        # (sender, nonce) the chain used with none of our hashes -> tip number first seen so.
        self._taken_since: dict[tuple[str, int], int] = {}
        # Given-up intents until they settle: their noop (or the payload that won the race) is
        # still to be found on chain, resent when it stalls, and followed to finality, also
        # when nothing else of the sender is open.
        self._given_up: dict[tuple[str, int], TxRecord] = {}
        # Presignatures to make: (-block number, order asked, record, attempt), newest block first.
        self._presigns: list[tuple[int, int, TxRecord, Attempt]] = []
        self._presign_order = itertools.count()
        self._presign_workers = 0
        self._presign_prune_at = PRESIGN_PRUNE_MIN  # queue length that prunes the deep entries
        retention.also_forget(self._forget)
        book.listen(self._on_transition)

    def _on_transition(self, record: TxRecord, old: TxState, new: TxState) -> None:
        if new in GIVEN_UP_STATES and not record.settled:
            self._given_up[(record.sender, record.nonce)] = record

    def watch(self, record: TxRecord) -> None:
        """Follow a given-up record reloaded from the journal (the listener saw no transition)."""
        if record.state in GIVEN_UP_STATES and not record.settled and not record.released:
            self._given_up[(record.sender, record.nonce)] = record

    def _forget(self, record: TxRecord) -> None:
        key = (record.sender, record.nonce)
        self._taken_since.pop(key, None)
        if self._given_up.get(key) is record:
            del self._given_up[key]

    def open_records(self) -> list[TxRecord]:
        """Records with something to watch on chain: active ones, and given-up ones until they
        settle (each once)."""
        counts = self.book.pending_counts()
        retired = self.retention.retired
        active = [r for s, n in counts.items() if n for r in self.book.records(s) if not retired(r)]
        if not self._given_up:
            return active
        seen = {id(r) for r in active}
        return active + [
            r
            for r in self._given_up.values()
            if id(r) not in seen and not r.settled and not r.released and not retired(r)
        ]

    def anything_sent(self) -> bool:
        return any(r.attempts for r in self.open_records())

    # -- scans of canonical blocks ---------------------------------------------------------------

    def enqueue(self, blocks: Iterable[Head]) -> None:
        if not self.anything_sent():
            return
        for block in blocks:
            self.queue[block.hash] = block.number
        if self.queue:
            self.wakeup.set()

    async def scan_queued(self) -> None:
        """Fetch the queued blocks' tx hashes (one batch); a block whose list names one of ours
        is read in full and proven (:meth:`proven`) before any of ours is marked included."""
        batch = dict(self.queue)
        self.queue.clear()
        if not batch:
            return
        try:
            found = await self.chain.blocks(list(batch))
        except ChainReadError as exc:
            log.warning("inclusion scan failed: %s", exc)
            found = {}
        window = self.view.window
        naming: dict[str, int] = {}  # blocks whose hash list names one of ours -> number
        for block_hash, number in batch.items():
            block = found.get(block_hash)
            if block is None:
                self._again(block_hash, number)  # the RPC does not have it yet (it lags)
                continue
            if not window.is_canonical(block_hash):
                self._retries.pop(block_hash, None)
                self._proofs.pop(block_hash, None)
                continue  # reorged out while we fetched it
            by_hash = self.book.by_hash
            if any(by_hash(tx_hash) is not None for tx_hash in block.tx_hashes):
                naming[block_hash] = number
            else:
                # Nothing of ours listed: nothing to prove (the hot path stays one cheap read).
                # A list that hides one of ours is caught by the rechecks (module docstring).
                self._retries.pop(block_hash, None)
                window.mark_scanned(block_hash)
        if not naming:
            return
        bodies = await self.proven(list(naming))
        now = self.clock()
        # Newest block first: its transactions are the ones the next reorg drops (their
        # status, and their presignatures, must not wait for an older block's many).
        for block_hash, number in sorted(naming.items(), key=lambda item: -item[1]):
            body = bodies.get(block_hash)
            if body is None:
                proofs = self._proofs.get(block_hash, 0) + 1
                if proofs < PROOF_RETRIES:
                    self._proofs[block_hash] = proofs
                    self._again(block_hash, number)  # no endpoint proved it (yet): asked again
                else:  # left to the stall's receipt recheck (PROOF_RETRIES)
                    self._proofs.pop(block_hash, None)
                    self._retries.pop(block_hash, None)
                    log.warning("block %s: no endpoint proves its body: left to the rechecks",
                                block_hash)  # fmt: skip
                continue
            self._proofs.pop(block_hash, None)
            self._retries.pop(block_hash, None)
            if not window.is_canonical(block_hash):
                continue
            held = {tx.hash for tx in body.txs}
            for tx_hash in found[block_hash].tx_hashes:
                if tx_hash not in held and self.book.by_hash(tx_hash) is not None:
                    # The hash list named ours, the proven body does not hold it: a lie.
                    log.warning(
                        "block %s: the hash list names 0x%s, its proven body does not: ignored",
                        block_hash, tx_hash.hex(),
                    )  # fmt: skip
                    self.observer.bad_block(NOT_IN_BODY)
            ref = BlockRef(number, block_hash)
            for tx in body.txs:  # the proven body, also for one of ours the list left out
                if self.book.by_hash(tx.hash) is not None:
                    self.mark_included(tx.hash, ref, now)
            window.mark_scanned(block_hash)

    def _again(self, block_hash: str, number: int) -> None:
        """Queue ``block_hash`` again (up to ``SCAN_RETRIES`` times) while it is canonical."""
        tries = self._retries.get(block_hash, 0)
        if tries < SCAN_RETRIES and self.view.window.is_canonical(block_hash):
            self._retries[block_hash] = tries + 1
            self.queue[block_hash] = number
        else:
            self._retries.pop(block_hash, None)
            self._proofs.pop(block_hash, None)

    async def proven(self, hashes: list[str]) -> Mapping[str, Any]:
        """The bodies of ``hashes`` some read endpoint proved (``ChainState.proven_blocks``:
        the header hashes to the block's hash, which the tracker verified, the transactions to
        its ``transactionsRoot``, senders recovered); an answer refused is counted
        (``observer.bad_block``) and the block asked of the other endpoints. ``{}`` when no
        endpoint answers (the caller asks again)."""
        try:
            return await self.chain.proven_blocks(
                hashes, lambda url, why: self.observer.bad_block(why)
            )
        except ChainReadError as exc:
            log.warning("proving blocks failed: %s", exc)
            return {}

    async def proven_receipts(self, receipts: Mapping[bytes, Receipt]) -> dict[bytes, Receipt]:
        """The receipts whose block is canonical in our window and whose proven body holds
        their transaction: an RPC's receipt is its word, the body is the block's (a receipt
        naming a block that does not hold the tx is counted ``not_in_body``). Canonical is
        judged again once the bodies are in: a reorg during the read must not make the caller
        mark ours included in a block the reaction has already dropped."""
        canonical = {
            h: r for h, r in receipts.items() if self.canonical(r.block_number, r.block_hash)
        }
        if not canonical:
            return {}
        bodies = await self.proven(sorted({r.block_hash for r in canonical.values()}))
        out: dict[bytes, Receipt] = {}
        for tx_hash, receipt in canonical.items():
            body = bodies.get(receipt.block_hash)
            if body is None:
                continue  # not proven now: asked again at the next recheck
            if not self.canonical(receipt.block_number, receipt.block_hash):
                continue  # reorged out while its body was read: the caller marks nothing there
            if body.number == receipt.block_number and any(t.hash == tx_hash for t in body.txs):
                out[tx_hash] = receipt
            else:
                log.warning(
                    "receipt of 0x%s names block %s, whose proven body does not hold it",
                    tx_hash.hex(), receipt.block_hash,
                )  # fmt: skip
                self.observer.bad_block(NOT_IN_BODY)
        return out

    def mark_included(self, tx_hash: bytes, block: BlockRef, now: float) -> None:
        """Our ``tx_hash`` is in canonical ``block``: the book, finality and the presign."""
        record = self.book.mark_included(tx_hash, block, now=now)
        if record is None:
            return
        self.view.window.hold(block.hash, block.number)
        self._taken_since.pop((record.sender, record.nonce), None)
        if record.span < record.intent.nonce_span:
            self.nonces.want(record.sender)  # a noop, not the delegation: n + 1 is a hole
        if record.block is not None and not record.settled:
            self._presign_replacement(record)

    def canonical(self, number: int, block_hash: str) -> bool:
        """A receipt's block is a fact only if canonical in our window (or older than what we
        have followed, where there is nothing to compare with: finality covers those)."""
        verdict = self.view.is_canonical(number, block_hash)
        return verdict if verdict is not None else True

    # -- replacements signed ahead -----------------------------------------------------------------

    def _presign_replacement(self, record: TxRecord) -> None:
        latest = record.latest
        if (
            self.presign
            and latest is not None
            and self.ledger.presigned(latest.hash) is None
            and not record.intent.external
        ):
            block = record.block
            assert block is not None  # (the caller's check)
            heapq.heappush(
                self._presigns, (-block.number, next(self._presign_order), record, latest)
            )
            if len(self._presigns) >= self._presign_prune_at:
                self._prune_presigns()
            if self._presign_workers < PRESIGNS_IN_FLIGHT:
                self._presign_workers += 1
                self.executor.background.spawn(self._presign_worker())

    def _prune_presigns(self) -> None:
        """Drop the queued presignatures already :data:`PRESIGN_DEPTH` deep. Newest first, a
        stream of blocks that outruns the workers never lets them reach (and skip) an older
        block's entries: the queue grew with the stream, holding every record. In place (the
        workers hold the list); amortized O(1) per entry (pruned again at twice what is kept)."""
        queue = self._presigns
        tip = self.view.head()
        if tip is not None:
            queue[:] = [e for e in queue if not _too_deep(-e[0], tip)]  # e[0]: -block number
            heapq.heapify(queue)
        self._presign_prune_at = max(PRESIGN_PRUNE_MIN, 2 * len(queue))

    async def _presign_worker(self) -> None:
        """Make the queued presignatures, newest first (:data:`PRESIGNS_IN_FLIGHT` workers)."""
        try:
            queue = self._presigns
            while queue:
                _, _, record, latest = heapq.heappop(queue)
                block = record.block
                if block is None or record.latest is not latest or record.settled:
                    continue
                tip = self.view.head()
                if tip is not None and _too_deep(block.number, tip):
                    continue
                await self._presign(record, latest)
        finally:
            self._presign_workers -= 1

    async def _presign(self, record: TxRecord, latest: Attempt) -> None:
        """Sign what a reorg dropping ``latest`` would send (a noop for a given-up record)."""
        noop = (record.has_noop or record.state in GIVEN_UP_STATES) and not record.intent.noop
        executor = self.executor
        lock = executor.lock(record)
        async with lock:
            if record.latest is not latest or self.ledger.presigned(latest.hash) is not None:
                return
            try:
                # Urgent at the signer (signer_client.priority: level 2, ahead of the intents'):
                # a presignature queued behind the intents' is one a reorg meanwhile lacks. Its
                # ticket is the lock's: a reaction that needs this nonce meanwhile promotes it
                # to the reaction's level instead of waiting behind the other presignatures.
                with holding(lock):
                    priced = await executor.sign_priced(record, noop=noop)
            except SignRefused:
                return
        if priced is None or record.latest is not latest:
            return  # its fees stay the floor of the next signature (AttemptLedger.floor)
        # Kept also when a reorg dropped ``latest`` while it was signed: the reaction's re-sign
        # then waits for this lock (and promoted this request), and sends this one instead
        # (Executor.sign_and_send) of asking the signer again.
        signed, fees = priced
        reason = noop_reason(record) if noop else AttemptReason.REORG
        attempt = executor.attempt_of(record, signed, fees, reason)
        # Good while maxFeePerGas >= 2 * baseFee + tip still holds (nonce.fees' floor); a
        # legacy gasPrice while it covers the base fee.
        if record.intent.tx_type in (0, 1) and not noop:
            max_base_fee = fees.max_fee_per_gas
        else:
            max_base_fee = (
                fees.max_fee_per_gas - fees.max_priority_fee_per_gas
            ) // BASE_FEE_HEADROOM
        self.ledger.presign(latest.hash, Presigned(attempt, fees, max_base_fee))

    # -- rechecks of what stalls -------------------------------------------------------------------

    def live_attempt(self, record: TxRecord) -> Attempt | None:
        """The attempt worth resending: the newest not refused for good by every endpoint."""
        for attempt in reversed(record.attempts):
            if not self.ledger.refused_by_all(attempt.hash, self.endpoints):
                return attempt
        return None

    async def recheck(self, records: list[TxRecord], *, resend: bool) -> None:
        """Ask for receipts of ``records``' attempts; resend what is not mined, unchanged.

        Inclusion tracking can miss a block (mined while we were down, or an RPC that lagged
        past our retries); receipts in canonical blocks settle it. What is not mined may have
        been dropped by a node, so the same bytes go out again (never a given-up or expired
        payload).
        """
        hashes = [a.hash for r in records for a in r.attempts]
        try:
            receipts = await self.chain.receipts(hashes)
        except ChainReadError as exc:
            log.warning("receipt check failed: %s", exc)
            receipts = {}
        receipts = await self.proven_receipts(receipts)
        now = self.clock()
        unmined: list[TxRecord] = []
        for record in records:
            found = None
            for attempt in record.attempts:
                receipt = receipts.get(attempt.hash)
                if receipt is not None:
                    found = receipt
                    break
            if found is not None:
                if record.block is None:
                    ref = BlockRef(found.block_number, found.block_hash)
                    self.mark_included(found.tx_hash, ref, now)
            elif record.block is None:
                unmined.append(record)
        if unmined:
            await self._check_taken(unmined)
        if not resend:
            return
        head = self.view.head() or 0
        for record in unmined:
            if record.block is not None or record.state is _S.FAILED:
                continue
            live = self.live_attempt(record)
            if live is None:
                continue
            if not live.is_noop and (
                record.state in GIVEN_UP_STATES or record.intent.expired_at(head + 1)
            ):
                continue
            self.executor.send(record, live, reason=ResendReason.REBROADCAST)

    async def _check_taken(self, records: list[TxRecord]) -> None:
        tip = self.view.head()
        if tip is None:
            return
        mined_counts: dict[str, int] = {}
        for sender in {r.sender for r in records}:
            try:
                mined_counts[sender] = (await self.nonces.counts(sender))[0]
            except ChainReadError:
                continue
        for record in records:
            mined = mined_counts.get(record.sender)
            key = (record.sender, record.nonce)
            if mined is None or record.nonce >= mined:
                self._taken_since.pop(key, None)
                continue
            first = self._taken_since.setdefault(key, tip)
            if tip - first >= self.foreign_blocks:
                await self.resolve_taken(record)

    async def resolve_taken(self, record: TxRecord) -> None:
        """The chain used ``record``'s nonce with a hash we do not hold (see the module doc)."""
        now = self.clock()
        below = self.book.get(record.sender, record.nonce - 1)
        if below is not None and below.block is not None and below.span > 1:
            # Our own delegation at n - 1 was mined with its self-sponsored authorization,
            # which consumed this nonce: no transaction has it (a lookup finds none). Seen
            # after a reorg swapped the cancel's noop for the payload once n was burned.
            log.warning(
                "%s/%d: taken by the authorization of intent %s", record.sender, record.nonce,
                below.intent.id,
            )  # fmt: skip
            self.executor.give_up(
                record, _S.FAILED, f"nonce used by the authorization of intent {below.intent.id}"
            )
            self.retention.settle(record)
            return
        try:
            mined = await self.chain.mined_at(record.sender, record.nonce)
        except ChainReadError as exc:
            log.warning("%s/%d: cannot look up the mined tx: %s", record.sender, record.nonce, exc)
            return  # asked again at the next recheck
        intent = record.intent
        if mined is None:
            # The count says used, the lookup says not mined: one of them is wrong (a lagging
            # or lying RPC). Only a transaction proven in a canonical block (its sender
            # recovered from its signature, ChainReader.mined_at) gives the intent up.
            log.warning(
                "%s/%d: the nonce count says used, the lookup finds nothing: asked again",
                record.sender,
                record.nonce,
            )
            return
        if not self.canonical(mined.block_number, mined.block_hash):
            return  # an answer from a branch we do not follow (a lagging RPC): ask again later
        ours = (mined.to, mined.value, mined.data) == (intent.to, intent.value, intent.data)
        # A 0-value self-transfer is ours only where we signed a noop at this nonce (its
        # journal entry may be what the crash lost): anyone holding the key can send one.
        noop = (
            mined.to == record.sender
            and mined.value == 0
            and not mined.data
            and (record.has_noop or intent.noop)
        )
        if ours or noop:
            if self.book.by_hash(mined.hash) is None:
                if ours:
                    reason = AttemptReason.REORG if record.attempts else AttemptReason.INITIAL
                else:
                    reason = noop_reason(record)
                attempt = Attempt(
                    raw=mined.raw,
                    hash=mined.hash,
                    nonce=record.nonce,
                    max_fee_per_gas=mined.max_fee_per_gas,
                    max_priority_fee_per_gas=mined.max_priority_fee_per_gas,
                    signed_at=now,
                    reason=reason,
                    replaces=record.latest.hash if record.latest is not None else None,
                )
                self.book.add_attempt(record, attempt)
            if noop and not ours and record.state not in GIVEN_UP_STATES:
                # Our noop took the nonce, not the payload: "included" would be untrue.
                self.executor.give_up(record, _S.CANCELLED, "a noop of ours took the nonce")
            self.mark_included(mined.hash, BlockRef(mined.block_number, mined.block_hash), now)
            log.warning(
                "%s/%d: found a mined attempt of ours the journal did not hold (0x%s)",
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
        self.observer.foreign(record.sender, record.nonce)
        # Active: failed. Given up already (a cancel or an expiry whose noop lost to the foreign
        # tx): it keeps its state, which stays true. Either way the nonce is gone: nothing of
        # ours is sent there again, and it is counted once.
        self.executor.give_up(record, _S.FAILED, "nonce used by a foreign transaction")
        self.retention.settle(record)

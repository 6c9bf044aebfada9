"""Property test: any sequence of book operations keeps every index consistent, and the SQLite
journal reloads exactly the book's final state."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from nonce.book import NonceBook
from nonce.journal import SqliteJournal, load
from nonce.state import ACTIVE_STATES, TRANSITIONS, AttemptReason, BlockRef, TxRecord, TxState
from tests.nonce.factories import ALICE, BOB, attempt, intent

BLOCKS = [BlockRef(n, f"0x{n:064x}") for n in range(4)]
senders = st.sampled_from([ALICE, BOB])
picks = st.integers(min_value=0, max_value=10**6)
blocks = st.sampled_from(BLOCKS)


class BookMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "j.db"
        self.journal = SqliteJournal(self.path)
        self.book = NonceBook(self.journal)
        for sender in (ALICE, BOB):
            self.book.resync(sender, chain_latest=0, chain_pending=0, now=0.0)
        self.now = 0.0

    def teardown(self) -> None:
        self.journal.close()
        self.dir.cleanup()

    def _pick(self, i: int) -> TxRecord | None:
        records = sorted(
            (r for r in self.book.all_records() if not r.released), key=lambda r: r.intent.id
        )
        return records[i % len(records)] if records else None

    def _tick(self) -> float:
        self.now += 1.0
        return self.now

    @rule(sender=senders)
    def accept(self, sender: str) -> None:
        self.book.accept(intent(sender), now=self._tick())

    @rule(i=picks)
    def sign(self, i: int) -> None:
        r = self._pick(i)
        if r is not None and TxState.SIGNED in TRANSITIONS[r.state]:
            self.book.add_attempt(r, attempt(r, reason=AttemptReason.REORG))
            self.book.transition(r, TxState.SIGNED, reason="signed", now=self._tick())

    @rule(i=picks)
    def broadcast(self, i: int) -> None:
        r = self._pick(i)
        if r is not None and r.state is TxState.SIGNED:
            self.book.transition(r, TxState.BROADCAST, reason="sent", now=self._tick())

    @rule(i=picks, block=blocks)
    def include(self, i: int, block: BlockRef) -> None:
        r = self._pick(i)
        if r is not None and r.latest is not None and r.state is not TxState.PENDING:
            self.book.mark_included(r.latest.hash, block, now=self._tick())

    @rule(block=blocks)
    def reorg(self, block: BlockRef) -> None:
        self.book.on_reorg([block.hash], now=self._tick())

    @rule(block=blocks)
    def finalize(self, block: BlockRef) -> None:
        self.book.finalize(block.hash, now=self._tick())

    @rule(i=picks, state=st.sampled_from([TxState.CANCELLED, TxState.EXPIRED, TxState.FAILED]))
    def give_up(self, i: int, state: TxState) -> None:
        r = self._pick(i)
        if r is not None and state in TRANSITIONS[r.state]:
            self.book.transition(r, state, reason="given up", now=self._tick())

    @rule(i=picks)
    def noop(self, i: int) -> None:
        r = self._pick(i)
        if r is not None and not r.covers_nonce:
            self.book.add_attempt(r, attempt(r, reason=AttemptReason.GAP_FILL))

    @rule(sender=senders, latest=st.integers(0, 3), extra=st.integers(0, 2))
    def resync(self, sender: str, latest: int, extra: int) -> None:
        self.book.resync(sender, chain_latest=latest, chain_pending=latest + extra, now=0.0)

    @invariant()
    def indexes_agree(self) -> None:
        book = self.book
        active: dict[str, int] = {}
        for r in book.all_records():
            assert book.find_intent(r.intent.id) is r
            for a in r.attempts:
                assert book.by_hash(a.hash) is r
                assert a.nonce == r.nonce
            if not r.released:
                assert book.get(r.sender, r.nonce) is r
                next_nonce = book.peek_next(r.sender)
                assert next_nonce is not None and r.nonce < next_nonce
            if r.state in ACTIVE_STATES:
                active[r.sender] = active.get(r.sender, 0) + 1
            if r.block is not None and not r.settled:
                assert r in book.in_block(r.block.hash)
            if r.state in (TxState.INCLUDED, TxState.FINALIZED):
                assert r.block is not None and r.included_hash is not None
        for sender in (ALICE, BOB):
            assert book.pending_count(sender) == active.get(sender, 0)
        for block in BLOCKS:
            for r in book.in_block(block.hash):
                assert r.block == block and not r.settled

    @invariant()
    def journal_reloads_the_same_book(self) -> None:
        self.journal.commit_now(timeout=30)
        loaded = {r.intent.id: r for r in load(self.path)}
        for r in self.book.all_records():
            x = loaded[r.intent.id]
            assert (x.nonce, x.state, x.attempts, x.block, x.included_hash) == (
                r.nonce,
                r.state,
                r.attempts,
                r.block,
                r.included_hash,
            )
            assert (x.settled, x.released, x.state_reason) == (
                r.settled,
                r.released,
                r.state_reason,
            )
        assert len(loaded) == len(list(self.book.all_records()))


BookMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
test_book_machine = BookMachine.TestCase

"""The tx manager's seams: what it signs with, sends through, reads the chain from, and
reports to. Protocols (with the real implementations named), so tests and the simulator
(``broadcaster.tx.testing``) hand it fakes; ``TxObserver`` is a no-op base for the hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Protocol

from broadcaster.rpc.chain_reader import MinedTx
from broadcaster.rpc.fanout import BroadcastResult, Submitted, Written
from nonce import TxRecord
from signer_client import SignedTx

__all__ = ["FRAME_READ_NS", "ChainState", "Durable", "Signer", "Submitter", "TxObserver"]

FRAME_READ_NS: ContextVar[int] = ContextVar("FRAME_READ_NS", default=0)
"""When the API read the frame carrying the intent being handled (``perf_counter_ns``; 0: not
known). The API's transport sets it where a message arrives, before the task that answers it is
created (a task copies the context it is created in), so ``TxManager.complete`` can start
``broadcaster_intent_seconds`` there without the stamp threading through every method handler."""


class Submitter(Protocol):
    """The fan-out seam: ``FanOut.submit`` and ``FanOut.submit_many``."""

    def submit(self, raw: bytes, tx_hash: bytes, context: object = None) -> Submitted: ...

    def submit_many(self, items: Sequence[tuple[bytes, bytes, object]]) -> Submitted: ...

    def listen(
        self,
        on_result: Callable[[BroadcastResult], None],
        on_written: Callable[[Written], None] | None = None,
    ) -> None: ...


class Signer(Protocol):
    async def sign_transaction(self, tx: Mapping[str, Any], sender: str) -> SignedTx: ...


class ChainState(Protocol):
    """The chain-reading seam: ``broadcaster.rpc.chain_reader.ChainReader``."""

    async def transaction_counts(self, sender: str) -> tuple[int, int]: ...

    async def blocks(self, hashes: Sequence[str]) -> Mapping[str, Any]: ...

    async def receipts(self, tx_hashes: Sequence[bytes]) -> Mapping[bytes, Any]: ...

    async def proven_blocks(
        self, hashes: Sequence[str], on_refused: Callable[[str, str], object]
    ) -> Mapping[str, Any]:
        """Bodies proven against their headers (``broadcaster.audit.chain.proven_blocks``)."""
        ...

    async def base_fee(self) -> int | None: ...

    async def block_number(self) -> int: ...

    async def mined_at(self, sender: str, nonce: int) -> MinedTx | None: ...


class Durable(Protocol):
    """The journal's durability barrier: ``SqliteJournal.flush``."""

    async def flush(self) -> None: ...


class TxObserver:
    """Hooks for metrics and ``broadcaster_subscribe`` notifications; no-ops here.

    Called synchronously, on the hot path too: keep them cheap.
    """

    def status(self, record: TxRecord, event: str) -> None:
        """``event``: a state the record just entered (``TxState`` value: signed, broadcast,
        included, reorged, finalized, cancelled, expired, failed; the book's transition listener
        calls this, never the manager by hand) or ``resent``."""

    def reaction(self, seconds: float, dropped: int) -> None:
        """A reorg reaction finished: head frame read -> last RPC write of the last re-sign."""

    def intent_to_wire(self, seconds: float) -> None:
        """An intent's first attempt is on the wire: its frame read -> the last RPC write of
        that attempt (``intent_seconds``). Not called when no endpoint took the attempt."""

    def resend(self, reason: str) -> None:
        """One transaction went out again (``resends_total{reason}``)."""

    def signed(self, seconds: float) -> None:
        """One signer round trip, verification included (``sign_seconds``)."""

    def signer_error(self, kind: str) -> None: ...

    def broadcast(self, result: BroadcastResult) -> None:
        """An RPC answered (or failed) one attempt."""

    def pending(self, counts: Mapping[str, int]) -> None:
        """Pending transactions per sender changed."""

    def alert(self, kind: str, detail: str) -> None:
        """Something an operator must look at (insufficient funds, deep reorg...)."""

    def bad_block(self, reason: str) -> None:
        """A block answer the inclusion scan refused (``inclusion_bad_blocks_total{reason}``,
        one of ``broadcaster.tx.reasons.INCLUSION_REFUSALS``)."""

    def foreign(self, sender: str, nonce: int | None = None) -> None:
        """A transaction we never signed took one of ``sender``'s nonces (``nonce``, when known:
        the service reports each ``(sender, nonce)`` once, whoever finds it)."""

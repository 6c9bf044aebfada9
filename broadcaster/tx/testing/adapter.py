"""The one place the simulator touches the tx manager (re-point it here when the manager changes).

Everything else in ``broadcaster.tx.testing`` talks to the manager only through
:class:`ManagerAdapter`. What it uses of ``broadcaster.tx``:

- ``TxManager(chain_id=, book=, journal=, signer=, fanout=, endpoints=, chain=, finality_depth=,
  fees=FeePolicy(...), observer=, clock=, clock_ns=, presign=, retain_settled=, lookup=,
  evicted_on_disk=)``, built the way ``broadcaster/service.py`` builds it;
- ``await start(accounts)`` (retried on ``ChainReadError`` as ``Service._start_manager`` does),
  ``run()`` (a task of the host), ``on_chain(events, client, recv_ns, header)``,
  ``on_result(result)``, ``on_written(written)``, ``await submit(intent)``,
  ``await submit_raw(intent, nonce, signed)``, ``await cancel(record)``;
- reads: ``book`` (``find_intent``, ``all_records``), ``base_fee``;
- the ``TxObserver`` hooks ``status(record, event)`` and ``alert(kind, detail)`` (and the rest as
  no-ops);
- ``FeePolicy(bump_percent, fee_cap, priority_fee, max_gap_fill)``, as the service fills it;
- for the memory-bound check only, the sizes of what grows with traffic: the book, the attempt
  ledger (``manager.ledger``), the per-nonce signing locks and the retention queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from broadcaster.rpc.chain_reader import ChainReadError
from broadcaster.rpc.fanout import BroadcastResult, Written
from broadcaster.tx.manager import FeePolicy, TxManager, TxObserver
from heads.events import Event, Head
from nonce import Intent, NonceBook, TxRecord
from signer_client import SignedTx

__all__ = ["FeeSettings", "Hooks", "ManagerAdapter"]


class Hooks(Protocol):
    def status(self, record: TxRecord, event: str) -> None: ...

    def alert(self, kind: str, detail: str) -> None: ...


@dataclass(frozen=True, slots=True)
class FeeSettings:
    """``[fees]`` as the service reads it (``broadcaster.settings.model``)."""

    bump_percent: int = 10
    fee_cap: int | None = None  # max_fee_cap_wei
    priority_fee_wei: int = 1_000_000_000
    max_gap_fill: int = 4


class _Observer(TxObserver):
    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks
        self.listeners: list[Callable[[TxRecord, str], None]] = []  # e.g. Router.on_status
        self.reactions: list[tuple[float, int]] = []  # (seconds, dropped) of each reaction
        self.bad_blocks: list[str] = []  # the reason of each block answer the scan refused

    def reaction(self, seconds: float, dropped: int) -> None:
        self.reactions.append((seconds, dropped))

    def bad_block(self, reason: str) -> None:
        self.bad_blocks.append(reason)

    def status(self, record: TxRecord, event: str) -> None:
        self.hooks.status(record, event)
        for listener in self.listeners:
            listener(record, event)

    def alert(self, kind: str, detail: str) -> None:
        self.hooks.alert(kind, detail)


class ManagerAdapter:
    """A ``TxManager`` assembled for the simulator."""

    def __init__(
        self,
        *,
        chain_id: int,
        book: NonceBook,
        journal: Any,
        signer: Any,
        fanout: Any,
        endpoints: int,
        chain: Any,
        finality_depth: int,
        fees: FeeSettings,
        hooks: Hooks,
        clock: Callable[[], float],
        clock_ns: Callable[[], int],
        presign: bool = True,
        retain_settled: int = 10_000,
        lookup: Callable[[str | None, str | None], TxRecord | None] | None = None,
        canonical_chain: Callable[[], Iterable[Head]] | None = None,
        signed_nonces: Any = None,
    ) -> None:
        policy = FeePolicy(
            bump_percent=fees.bump_percent,
            fee_cap=fees.fee_cap,
            priority_fee=fees.priority_fee_wei,
            max_gap_fill=fees.max_gap_fill,
        )
        self.observer = _Observer(hooks)
        self.manager = TxManager(
            chain_id=chain_id,
            book=book,
            journal=journal,
            signer=signer,
            fanout=fanout,
            endpoints=endpoints,
            chain=chain,
            finality_depth=finality_depth,
            fees=policy,
            observer=self.observer,
            clock=clock,
            clock_ns=clock_ns,
            presign=presign,
            retain_settled=retain_settled,
            lookup=lookup,
            evicted_on_disk=lookup is not None,
            canonical_chain=canonical_chain,
            signed_nonces=signed_nonces,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, accounts: Sequence[str], *, attempts: int = 50) -> list[Any]:
        delay = 0.2
        for _ in range(attempts):
            try:
                return await self.manager.start(accounts)
            except ChainReadError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise ChainReadError("the chain never answered at start-up")

    async def run(self) -> None:
        await self.manager.run()

    # -- inputs ----------------------------------------------------------------------------------

    def on_chain(
        self, events: list[Event], client: str, recv_ns: int, header: Mapping[str, Any]
    ) -> None:
        self.manager.on_chain(events, client, recv_ns, header)

    def on_result(self, result: BroadcastResult) -> None:
        self.manager.on_result(result)

    def on_written(self, written: Written) -> None:
        self.manager.on_written(written)

    async def submit(self, intent: Intent) -> TxRecord:
        return await self.manager.submit(intent)

    async def submit_raw(self, intent: Intent, nonce: int, signed: SignedTx) -> TxRecord:
        return await self.manager.submit_raw(intent, nonce, signed)

    async def cancel(self, record: TxRecord) -> TxRecord:
        return await self.manager.cancel(record)

    # -- reads -----------------------------------------------------------------------------------

    def find(self, intent_id: str) -> TxRecord | None:
        return self.manager.book.find_intent(intent_id)

    def records(self) -> list[TxRecord]:
        return list(self.manager.book.all_records())

    @property
    def base_fee(self) -> int | None:
        return self.manager.base_fee

    def sizes(self) -> dict[str, int]:
        """Sizes of what grows with traffic: the book's records and the manager's notes."""
        manager = self.manager
        return {
            "records": sum(1 for _ in manager.book.all_records()),
            "ledger": len(manager.ledger),
            "locks": len(manager.executor._locks),
            "settled": len(manager.retention._settled),
        }

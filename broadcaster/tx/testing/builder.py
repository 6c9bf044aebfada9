"""A simulated block builder (DESIGN.md section 5a): the ``OrderflowPort`` the router sends to.

It holds bundles by ``replacementUuid`` (a later bundle under the same uuid replaces the held
one), drops them on ``eth_cancelBundle``, and records every request with the virtual clock's
time. :meth:`SimBuilder.for_block` is what the block producer forces into block ``number``:
the simulation's builder *is* the producer (``SimConfig.builder``), so the bundles held for a
block land in it unless the step says otherwise (``Sim.mine(bundles=False)``: a head passes
without them). Private transactions (``eth_sendPrivateTransaction``) are only recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broadcaster.tx.testing.chain import SimTx, decode_tx

__all__ = ["BundleSeen", "SimBuilder"]


@dataclass(frozen=True, slots=True)
class BundleSeen:
    method: str
    params: dict[str, Any]
    at_ns: int


@dataclass(eq=False)
class SimBuilder:
    clock_ns: Callable[[], int]
    seen: list[BundleSeen] = field(default_factory=list)
    held: dict[str, tuple[int, tuple[SimTx, ...]]] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)

    def to_builders(self, method: str, params: dict[str, Any]) -> int:
        self.seen.append(BundleSeen(method, params, self.clock_ns()))
        if method == "eth_sendBundle":
            txs = tuple(decode_tx(bytes.fromhex(raw[2:])) for raw in params["txs"])
            self.held[params["replacementUuid"]] = (int(params["blockNumber"], 16), txs)
        elif method == "eth_cancelBundle":
            self.held.pop(params["replacementUuid"], None)
            self.cancelled.append(params["replacementUuid"])
        return 1

    def to_private(self, method: str, params: dict[str, Any]) -> int:
        self.seen.append(BundleSeen(method, params, self.clock_ns()))
        return 1

    def bundles(self, uuid: str | None = None) -> list[BundleSeen]:
        return [
            s
            for s in self.seen
            if s.method == "eth_sendBundle"
            and (uuid is None or s.params["replacementUuid"] == uuid)
        ]

    def for_block(self, number: int) -> list[SimTx]:
        """The held bundles' txs for block ``number``; bundles for it or earlier are spent."""
        txs = [tx for block, held in self.held.values() if block == number for tx in held]
        for uuid, (block, _) in list(self.held.items()):
            if block <= number:
                del self.held[uuid]
        return txs

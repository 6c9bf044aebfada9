"""Helpers for the fan-out tests: a result collector that tests await, signed test txs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from eth_account import Account

from broadcaster.rpc.fanout import BroadcastResult, Endpoint, FanOut, Written
from broadcaster.rpc.transport.base import FakeTransport, OnReply
from tests.anvil import DEV_ADDRESS, DEV_KEY, Anvil, running_anvil

CHAIN_ID = 31337


@dataclass
class Collector:
    """Collects results and writes; tests await conditions instead of sleeping."""

    results: list[BroadcastResult] = field(default_factory=list)
    writes: list[Written] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_result(self, result: BroadcastResult) -> None:
        self.results.append(result)
        self._changed.set()

    def on_written(self, written: Written) -> None:
        self.writes.append(written)
        self._changed.set()

    def finals(self, endpoint: str | None = None) -> list[BroadcastResult]:
        return [r for r in self.results if r.final and (endpoint is None or r.endpoint == endpoint)]

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds (bounded by the test's own timeout)."""
        async with asyncio.timeout(30):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


def fake_fanout(
    names: list[str], seen: Collector, **kwargs: object
) -> tuple[FanOut, dict[str, FakeTransport]]:
    """A FanOut over FakeTransports (one per name, returned by name) reporting to ``seen``."""
    fakes: dict[str, FakeTransport] = {}

    def factory(endpoint: Endpoint, on_reply: OnReply) -> FakeTransport:
        fakes[endpoint.name] = FakeTransport(endpoint.name, on_reply)
        return fakes[endpoint.name]

    fanout = FanOut(
        [Endpoint(name, f"http://{name}") for name in names],
        on_result=seen.on_result,
        on_written=seen.on_written,
        transport_factory=factory,
        **kwargs,  # type: ignore[arg-type]
    )
    return fanout, fakes


def signed_transfer(
    nonce: int, *, max_fee: int = 3 * 10**9, tip: int = 10**9, value: int = 1
) -> tuple[bytes, bytes]:
    """An EIP-1559 transfer from anvil's dev account to itself: (raw bytes, hash)."""
    tx = {
        "type": 2,
        "chainId": CHAIN_ID,
        "nonce": nonce,
        "to": DEV_ADDRESS,
        "value": value,
        "gas": 21000,
        "maxFeePerGas": max_fee,
        "maxPriorityFeePerGas": tip,
        "data": b"",
    }
    signed = Account.from_key(DEV_KEY).sign_transaction(tx)
    return bytes(signed.raw_transaction), bytes(signed.hash)


@contextlib.contextmanager
def quiet_anvil(*extra: str) -> Iterator[Anvil]:
    """``running_anvil`` that also closes anvil's stderr pipe (pytest treats the leak as an
    error: ``tests/anvil.py`` ``Anvil.stop`` leaves it open)."""
    with running_anvil(*extra) as node:
        try:
            yield node
        finally:
            node.stop()
            if node.process.stderr is not None:
                node.process.stderr.close()

"""Helpers for the fan-out tests: a result collector that tests await, signed test txs.

The fake transport itself ships with the package: :mod:`broadcaster.rpc.transport.fake`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from eth_account import Account

from broadcaster.rpc.fanout import BroadcastResult, Endpoint, FanOut, Written
from broadcaster.rpc.transport.fake import FakeNetwork, FakeTransport
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


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait, one short sleep at a time, until ``condition()`` holds: for state that no callback
    announces (an endpoint going down while nothing is queued for it)."""
    async with asyncio.timeout(30):
        while not condition():  # noqa: ASYNC110 (no event to wait for: polling is the point)
            await asyncio.sleep(0.001)


def fake_fanout(
    names: list[str], seen: Collector, network: FakeNetwork | None = None, **kwargs: object
) -> tuple[FanOut, dict[str, FakeTransport]]:
    """A FanOut over FakeTransports (one per name, returned by name) reporting to ``seen``.

    The fakes answer nothing by themselves unless ``network`` says otherwise: a test answers by
    hand (``fake.reply``), or scripts one (``fake.script``, ``fake.handler``, ``fake.default``).
    """
    network = network or FakeNetwork()
    fanout = FanOut(
        [Endpoint(name, f"http://{name}") for name in names],
        on_result=seen.on_result,
        on_written=seen.on_written,
        transport_factory=network,
        **kwargs,  # type: ignore[arg-type]
    )
    return fanout, network.transports


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

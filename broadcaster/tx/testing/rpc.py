"""The manager's RPC seams over simulated nodes: ``Submitter`` (fan-out) and ``ChainState``.

:class:`SimFanOut` behaves like ``broadcaster.rpc.fanout.FanOut`` as the manager sees it: every
``submit`` goes to every endpoint and returns a ``Submitted`` (the writes done inside the call,
and the endpoints that refused the job because they are down: a final ``DROPPED`` for each on
the next turn); a retry's write is reported later as ``Written``; an endpoint's answer comes
back ``latency`` later as a ``BroadcastResult`` classified by the project's own table
(``broadcaster.rpc.error_table.classify_response`` on the JSON-RPC error the node gives); answers
the table says to retry (timeouts, refused connections, full pools) are retried with backoff, up
to ``max_attempts``, with ``final`` set on the last. A crash ``detach``es it: bytes already
written still reach the nodes, nobody hears the answers.

:class:`SimChainState` answers ``transaction_counts``, ``blocks``, ``receipts``, ``base_fee``
and ``mined_at`` from the reader nodes' own views, failing over like ``ChainReader`` (start with
the endpoint that answered last; a down endpoint is skipped, a hung one costs its timeout), so a
lagging node answers from its older or abandoned branch.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from broadcaster.audit.reconcile import FullBlock
from broadcaster.rpc.chain_reader import BlockTxs, ChainReadError, MinedTx, Receipt
from broadcaster.rpc.error_table import REACTIONS, ErrorKind, Reaction, classify_response
from broadcaster.rpc.fanout import BroadcastResult, Submitted, Written
from broadcaster.tx.testing.chain import SimTx, decode_tx
from broadcaster.tx.testing.nodes import Network, Node

__all__ = ["SimChainState", "SimFanOut"]

_T = TypeVar("_T")


@dataclass(slots=True)
class _Job:
    raw: bytes
    tx_hash: bytes
    context: object
    tx: SimTx
    attempt: int = 1
    writes: int = 0


class SimFanOut:
    """``Submitter`` over the network's RPC nodes (see the module docstring)."""

    def __init__(
        self,
        network: Network,
        endpoints: Sequence[str],
        *,
        loop: asyncio.AbstractEventLoop,
        clock_ns: Callable[[], int],
        on_result: Callable[[BroadcastResult], None] | None = None,
        on_written: Callable[[Written], None] | None = None,
        on_send: Callable[[SimTx], None] = lambda tx: None,
        max_attempts: int = 4,
        timeout: float = 2.0,
    ) -> None:
        self.network = network
        self.endpoints = list(endpoints)
        self.loop = loop
        self._clock_ns = clock_ns
        self._on_result = on_result or (lambda result: None)
        self._on_written = on_written or (lambda written: None)
        self._on_send = on_send
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.attached = True
        self.sent: list[SimTx] = []  # every submit, in order (one entry per transaction)
        self._timers: set[asyncio.TimerHandle] = set()

    # -- the Submitter seam ----------------------------------------------------------------------

    def listen(
        self,
        on_result: Callable[[BroadcastResult], None],
        on_written: Callable[[Written], None] | None = None,
    ) -> None:
        self._on_result = on_result
        self._on_written = on_written or (lambda written: None)

    def submit(self, raw: bytes, tx_hash: bytes, context: object = None) -> Submitted:
        return self.submit_many([(raw, tx_hash, context)])

    def submit_many(self, items: Sequence[tuple[bytes, bytes, object]]) -> Submitted:
        if not self.attached:
            raise RuntimeError("FanOut is closed")
        jobs = []
        for raw, tx_hash, context in items:
            tx = decode_tx(raw)
            assert tx.hash == tx_hash, "the manager's hash is not keccak256(raw)"
            self.sent.append(tx)
            self._on_send(tx)
            jobs.append((raw, tx_hash, context, tx))
        done = Submitted()
        reached = [False] * len(jobs)
        for name in self.endpoints:
            node = self.network[name]
            for index, (raw, tx_hash, context, tx) in enumerate(jobs):
                job = _Job(raw, tx_hash, context, tx)
                if node.down:  # the real lane refuses a job for a down endpoint at once
                    done.refused += 1
                    self._later(0.0, self._refused, node, job)
                    continue
                written_ns = self._offer(node, job, inline=True)
                done.written += 1
                done.last_ns = max(done.last_ns, written_ns)
                reached[index] = True
        while done.written_items < len(jobs) and reached[done.written_items]:
            done.written_items += 1
        return done

    def _refused(self, node: Node, job: _Job) -> None:
        if not self.attached:
            return
        result = BroadcastResult(
            node.name, job.tx_hash, ErrorKind.DROPPED, "endpoint down", None, None, None, 0,
            True, False, job.context,
        )  # fmt: skip
        self._on_result(result)

    # -- lanes -----------------------------------------------------------------------------------

    def detach(self) -> None:
        """The host process died: stop retrying and reporting (written bytes still land)."""
        self.attached = False
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _later(self, delay: float, fn: Callable[..., object], *args: Any) -> None:
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._timers.discard(handle)
            fn(*args)

        handle = self.loop.call_later(delay, fire)
        self._timers.add(handle)

    def _offer(self, node: Node, job: _Job, *, inline: bool = False) -> int:
        """Write ``job`` to ``node`` (a retry: reported as ``Written``); returns the stamp."""
        if node.down:  # connection refused: nothing written
            self._later(
                0.001,
                self._report,
                node,
                job,
                ErrorKind.TRANSIENT,
                "connection refused",
                None,
                None,
            )
            return 0
        written_ns = self._clock_ns()
        job.writes += 1
        if not inline:
            self._written(
                Written(
                    node.name, job.tx_hash, written_ns, job.attempt, job.writes == 1, job.context
                )
            )
        if node.timeout:
            self._later(
                self.timeout,
                self._report,
                node,
                job,
                ErrorKind.TIMEOUT,
                "timed out",
                None,
                written_ns,
            )
            return written_ns
        # The node gets the bytes after half the round trip, whoever is still listening.
        self.loop.call_later(node.latency / 2, self._deliver, node, job, written_ns)
        return written_ns

    def _deliver(self, node: Node, job: _Job, written_ns: int) -> None:
        message = node.send(job.tx)
        if message is None:
            self.network.gossip(node, job.tx)
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "result": "0x" + job.tx_hash.hex()}
        else:
            reply = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": message}}
        verdict = classify_response(reply, expected_hash=job.tx_hash)
        if self.attached:
            self._later(
                node.latency / 2,
                self._report,
                node,
                job,
                verdict.kind,
                verdict.message,
                verdict.code,
                written_ns,
            )

    def _report(
        self,
        node: Node,
        job: _Job,
        kind: ErrorKind,
        message: str | None,
        code: int | None,
        written_ns: int | None,
    ) -> None:
        if not self.attached:
            return
        retry = REACTIONS[kind] is Reaction.RETRY and job.attempt < self.max_attempts
        latency = None if written_ns is None else (self._clock_ns() - written_ns) / 1e9
        result = BroadcastResult(
            node.name,
            job.tx_hash,
            kind,
            message,
            code,
            latency,
            written_ns,
            job.attempt,
            not retry,
            job.writes > 0,
            job.context,
        )
        self._on_result(result)
        if retry:
            delay = 0.05 * 2 ** (job.attempt - 1)
            job.attempt += 1
            self._later(delay, self._offer, node, job)

    def _written(self, item: Written) -> None:
        if self.attached:
            self._on_written(item)


class SimChainState:
    """``ChainState`` over the reader nodes, with ``ChainReader``'s failover."""

    def __init__(self, network: Network, readers: Sequence[str], *, timeout: float = 5.0) -> None:
        self.network = network
        self.readers = list(readers)
        self.timeout = timeout
        self._first = 0
        self.calls = itertools.count()

    async def _ask(self, what: str, answer: Callable[[Node], _T]) -> _T:
        next(self.calls)
        for k in range(len(self.readers)):
            index = (self._first + k) % len(self.readers)
            node = self.network[self.readers[index]]
            if node.down:
                await asyncio.sleep(0.001)
                continue
            if node.timeout:
                await asyncio.sleep(self.timeout)
                continue
            await asyncio.sleep(node.latency)
            self._first = index
            return answer(node)
        raise ChainReadError(f"no endpoint answered: {what}")

    async def transaction_counts(self, sender: str) -> tuple[int, int]:
        return await self._ask("eth_getTransactionCount", lambda n: n.counts(sender))

    async def blocks(self, hashes: Sequence[str]) -> dict[str, BlockTxs]:
        return await self._ask("eth_getBlockByHash", lambda n: n.block_txs(hashes))

    async def proven_blocks(
        self, hashes: Sequence[str], on_refused: Callable[[str, str], object]
    ) -> dict[str, FullBlock]:
        return await self._ask("eth_getBlockByHash(true)", lambda n: n.full_blocks(hashes))

    async def receipts(self, tx_hashes: Sequence[bytes]) -> dict[bytes, Receipt]:
        return await self._ask("eth_getTransactionReceipt", lambda n: n.receipts(tx_hashes))

    async def base_fee(self) -> int | None:
        return await self._ask("eth_getBlockByNumber", lambda n: n.view.head.base_fee)

    async def block_number(self) -> int:
        return await self._ask("eth_blockNumber", lambda n: n.view.head.number)

    async def mined_at(self, sender: str, nonce: int) -> MinedTx | None:
        """Like ``ChainReader.mined_at``: the direct lookup, else the search by block (a few
        more round trips), which ``tests/broadcaster/rpc`` pins against anvil behind a
        geth-like proxy."""
        return await self._ask(
            "eth_getTransactionBySenderAndNonce",
            lambda n: (
                n.mined_at(sender, nonce)
                if n.sender_nonce_lookup
                else n.search_mined(sender, nonce)
            ),
        )

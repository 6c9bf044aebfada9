"""The simulation: a chain, its nodes, the enclave, and the broadcaster process, with step actions.

::

    sim = Sim(tmp_path)                 # a virtual-time loop, 3 nodes, 2 head clients, the enclave
    sim.run(sim.boot())                 # a few blocks of history, then the process starts
    rec = sim.run(sim.submit())         # an intent: booked, journaled, signed, sent
    sim.run(sim.mine())                 # a block: from the nodes' pools, announced with skew
    sim.run(sim.reorg(2))               # the last 2 blocks replaced by 3 new ones
    sim.run(sim.crash()); sim.run(sim.restart())
    sim.run(sim.finish())               # faults off, blocks until everything is final
    sim.check()                         # every invariant (``checker.Checker``) held

Every action is a coroutine run on the simulation's :class:`~.vloop.VirtualTimeLoop`; actions that
move the chain return after ``block_time`` virtual seconds (or ``wait``) so the manager has
reacted. Nothing sleeps in real time and every run with the same script is the same run.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from broadcaster.tx.testing.builder import SimBuilder
from broadcaster.tx.testing.chain import Block, SimChain, SimTx, decode_tx
from broadcaster.tx.testing.checker import Checker
from broadcaster.tx.testing.config import CHAIN_ID, FOREIGN_TO, GWEI, KEYS, RECIPIENTS, SimConfig
from broadcaster.tx.testing.host import Host, HostPlan, boot
from broadcaster.tx.testing.nodes import Network, Node
from broadcaster.tx.testing.signer import SimEnclave
from broadcaster.tx.testing.vloop import VirtualClock, VirtualTimeLoop, _cancel_all
from nonce import Intent, TxRecord
from signer_client.signing import LocalKey, SignedTx
from signer_client.txcodec import tx_from_dict

__all__ = ["Sim", "SimFactory"]

_T = TypeVar("_T")


class Sim:
    """See the module docstring."""

    def __init__(self, workdir: Path, config: SimConfig | None = None) -> None:
        self.config = cfg = config or SimConfig()
        self.workdir = workdir
        self.loop = VirtualTimeLoop()
        self.clock = VirtualClock(self.loop)
        self.chain = SimChain(base_fee=cfg.base_fee, genesis_time=int(self.clock.wall()))
        self.network = Network(self.chain, cfg.nodes)
        for name, delay in cfg.delays.items():
            if name in self.network.nodes:
                self.network[name].delay = delay
        self.keys = [LocalKey(k) for k in KEYS[: cfg.senders]]
        self.accounts = ["0x" + k.address_bytes.hex() for k in self.keys]
        self.enclave = SimEnclave(
            KEYS[: cfg.senders], cfg.policy, workdir / "audit.jsonl", self.clock.wall
        )
        self.checker = Checker(self)
        self.enclave.listeners.append(self.checker.on_sign)
        self.intents: dict[str, Intent] = {}
        self.alerts: list[tuple[float, str, str]] = []
        self.host: Host | None = None
        self.lives = 0
        self.next_base_fee: int | None = None
        self._ids = itertools.count(1)
        # Section 5a: a builder endpoint whose bundles the block producer builds into its blocks.
        self.builder = SimBuilder(self.clock.ns) if cfg.builder else None

    # -- running ---------------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        if self.host is not None and self.host.alive:
            self.run(self.host.shutdown())
        self.enclave.close()
        _cancel_all(self.loop)
        self.loop.close()

    @property
    def now(self) -> float:
        return self.clock.now()

    @property
    def adapter(self) -> Any:
        assert self.host is not None and self.host.alive, "the broadcaster is not running"
        return self.host.adapter

    def plan(self) -> HostPlan:
        cfg = self.config
        return HostPlan(
            CHAIN_ID,
            self.accounts,
            cfg.head_clients,
            cfg.rpcs,
            cfg.readers,
            cfg.finality_depth,
            cfg.fees,
            cfg.presign,
            cfg.retain_settled,
            self.workdir / "journal.db",
            cfg.linger,
            self.builder,
            cfg.overlap,
        )

    async def boot(self) -> None:
        for _ in range(self.config.history):
            await self.mine()
        await self.restart()

    async def restart(self) -> None:
        """Start the broadcaster process (again, after a crash or a shutdown)."""
        assert self.host is None or not self.host.alive
        self.lives += 1
        self.host = await boot(
            self.plan(),
            network=self.network,
            enclave=self.enclave,
            clock=self.clock,
            hooks=self.checker,
            on_send=self.checker.on_send,
        )
        await self.advance(0.5)

    async def crash(self, keep: int = 0) -> int:
        """``kill -9`` of the broadcaster (the enclave and the nodes live on)."""
        assert self.host is not None
        return await self.host.kill(keep)

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    # -- the chain -------------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        return self.network[name]

    @property
    def tip(self) -> Block:
        return self.chain.tip

    def _fee(self, base_fee: int | None) -> int:
        if base_fee is not None:
            return base_fee
        return self.next_base_fee if self.next_base_fee is not None else self.chain.tip.base_fee

    def set_base_fee(self, fee: int) -> None:
        """Every following block has this base fee (a jump or a drop)."""
        self.next_base_fee = fee

    def _propagate(self, block: Block, *, reinject: bool = True) -> None:
        for node in self.network.nodes.values():
            self.loop.call_later(node.delay, self._node_adopts, node, block, reinject)

    def _node_adopts(self, node: Node, block: Block, reinject: bool) -> None:
        if node.frozen or node.view.head is block:
            return
        node.adopt(block, reinject=reinject)
        if self.host is not None and self.host.alive:
            self.host.feed.announce(node.name, block)

    async def mine(
        self,
        count: int = 1,
        *,
        base_fee: int | None = None,
        txs: Iterable[SimTx] = (),
        exclude: Callable[[SimTx], bool] | None = None,
        wait: float | None = None,
        bundles: bool = True,
    ) -> list[Block]:
        """``count`` blocks on the producer's tip from the nodes' pools (``txs`` forced first,
        then the builder's bundles for the block unless ``bundles`` is false)."""
        made = []
        forced = list(txs)
        for _ in range(count):
            if self.builder is not None:
                held = self.builder.for_block(self.chain.tip.number + 1)
                forced += held if bundles else []
            block = self.chain.build(
                self.chain.tip,
                self.network.candidates(),
                base_fee=self._fee(base_fee),
                timestamp=int(self.clock.wall()),
                forced=forced,
                exclude=exclude,
            )
            forced = []
            self.chain.adopt(block)
            self._propagate(block)
            made.append(block)
            await self.advance(self.config.block_time if wait is None else wait)
        self.checker.after_step()
        return made

    async def reorg(
        self,
        depth: int,
        *,
        length: int | None = None,
        reinclude: bool = True,
        txs: Iterable[SimTx] = (),
        base_fee: int | None = None,
        wait: float | None = None,
    ) -> list[Block]:
        """Replace the last ``depth`` blocks by ``length`` (default ``depth + 1``) new ones.

        ``reinclude``: the new branch holds the dropped transactions again (and nodes re-inject
        them); otherwise they are lost from the new branch and the pools. ``txs`` go first
        (e.g. a foreign transaction at one of our nonces)."""
        tip = self.chain.tip
        ancestor = self.chain.truth.at(tip.number - depth)
        assert ancestor is not None
        dropped = [tx for b in self.chain.truth.blocks()[ancestor.number + 1 :] for tx in b.txs]
        gone = {tx.hash for tx in dropped}
        parent, forced, made = ancestor, list(txs), []
        for _ in range(depth + 1 if length is None else length):
            extra = dropped if reinclude else []
            block = self.chain.build(
                parent,
                [*self.network.candidates(), *extra],
                base_fee=self._fee(base_fee),
                timestamp=parent.timestamp + 1,
                forced=forced,
                exclude=None if reinclude else (lambda t: t.hash in gone),
            )
            forced, parent = [], block
            made.append(block)
        self.chain.adopt(parent)
        self._propagate(parent, reinject=reinclude)
        await self.advance(self.config.block_time if wait is None else wait)
        self.checker.after_step()
        return made

    def signed_elsewhere(
        self, nonce: int, *, sender: int = 0, to: str, value: int, fee: int, tip: int
    ) -> SignedTx:
        """A 1559 transfer signed with our key outside our enclave (a bot, or a leaked key)."""
        tx = {
            "type": 2,
            "chainId": CHAIN_ID,
            "nonce": nonce,
            "to": to,
            "value": value,
            "data": b"",
            "gas": 21_000,
            "maxFeePerGas": fee,
            "maxPriorityFeePerGas": tip,
        }
        return self.keys[sender].sign(tx_from_dict(tx))

    def foreign_tx(self, nonce: int, *, sender: int = 0, tip: int = 3 * GWEI) -> SimTx:
        """A transaction someone else made with our key at ``nonce`` (to ``FOREIGN_TO``)."""
        fee = 4 * self.chain.tip.base_fee + tip
        signed = self.signed_elsewhere(
            nonce, sender=sender, to=FOREIGN_TO, value=7, fee=fee, tip=tip
        )
        return decode_tx(signed.raw)

    # -- the bot ---------------------------------------------------------------------------------

    def intent(
        self,
        *,
        value: int | None = None,
        to: str = RECIPIENTS[0],
        tx_type: int = 2,
        max_fee: int | None = None,
        tip: int = 2 * GWEI,
        gas_price: int | None = None,
        valid_until: int | None = None,
        sender: int = 0,
        private: bool = False,
    ) -> Intent:
        n = next(self._ids)
        if tx_type == 2:
            fee = max_fee if max_fee is not None else 3 * self.chain.tip.base_fee
            fees = (fee, tip)
        else:
            price = gas_price if gas_price is not None else self.chain.tip.base_fee + tip
            fees = (price, price)
        intent = Intent(
            id=f"intent-{n}",
            sender=self.accounts[sender],
            to=to,
            value=value if value is not None else 1_000 + n,
            data=b"",
            gas=21_000,
            max_fee_per_gas=fees[0],
            max_priority_fee_per_gas=fees[1],
            chain_id=CHAIN_ID,
            valid_until_block=valid_until,
            tx_type=tx_type,
            private=private,
        )
        self.intents[intent.id] = intent
        return intent

    async def submit(
        self, intent: Intent | None = None, *, wait: float = 0.01, **kwargs: Any
    ) -> TxRecord:
        """``broadcaster_sendIntent``: returns once the manager has signed and sent it (and
        ``wait`` more seconds, so the bytes reach the nodes' pools)."""
        if intent is None:
            intent = self.intent(**kwargs)
        self.intents[intent.id] = intent
        record: TxRecord = await self.adapter.submit(intent)
        await self.advance(wait)
        return record

    async def submit_raw(self, nonce: int, *, sender: int = 0, wait: float = 0.01) -> TxRecord:
        """``eth_sendRawTransaction`` of bytes a bot signed with our key at ``nonce``."""
        n, tip, fee = next(self._ids), 2 * GWEI, 3 * self.chain.tip.base_fee
        signed = self.signed_elsewhere(
            nonce, sender=sender, to=RECIPIENTS[0], value=1_000 + n, fee=fee, tip=tip
        )
        intent = Intent(
            id=f"raw-{n}",
            sender=self.accounts[sender],
            to=RECIPIENTS[0],
            value=1_000 + n,
            data=b"",
            gas=21_000,
            max_fee_per_gas=fee,
            max_priority_fee_per_gas=tip,
            chain_id=CHAIN_ID,
            external=True,
        )
        self.intents[intent.id] = intent
        record: TxRecord = await self.adapter.submit_raw(intent, nonce, signed)
        await self.advance(wait)
        return record

    async def cancel(self, intent_id: str, *, wait: float = 0.01) -> TxRecord:
        """``broadcaster_cancelIntent`` (then ``wait`` seconds, as for :meth:`submit`)."""
        record = self.adapter.find(intent_id)
        assert record is not None, intent_id
        cancelled: TxRecord = await self.adapter.cancel(record)
        await self.advance(wait)
        return cancelled

    def record(self, intent_id: str) -> TxRecord:
        record = self.adapter.find(intent_id)
        assert record is not None, f"{intent_id} is not in the book"
        return record  # type: ignore[no-any-return]

    # -- endings ---------------------------------------------------------------------------------

    def heal(self) -> None:
        """Every fault off: signer up, nodes honest and following the chain, the base fee back to
        the lowest it has been (so whatever a bot priced for the chain can be mined)."""
        self.enclave.down = self.enclave.hang = False
        self.next_base_fee = min(b.base_fee for b in self.chain.blocks.values())
        for node in self.network.nodes.values():
            node.down = node.timeout = node.drop_sends = False
            node.answer, node.pending_offset = None, 0
            node.rules.clear()
            if node.frozen:
                node.frozen = False
                self._node_adopts(node, self.chain.tip, True)

    async def finish(self, blocks: int | None = None) -> None:
        """Heal, then mine until everything booked had time to end (and be final)."""
        self.heal()
        await self.mine(blocks if blocks is not None else self.config.finality_depth + 6)
        self.checker.final()

    def check(self) -> None:
        self.checker.raise_if_violated()


class SimFactory:
    """Booted simulations under one directory, closed together (a test fixture's body)::

    @pytest.fixture
    def sims(tmp_path):
        factory = SimFactory(tmp_path)
        yield factory
        factory.close()
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[Sim] = []

    def __call__(self, **config: Any) -> Sim:
        workdir = self.root / f"sim{len(self.made)}"
        workdir.mkdir(parents=True)
        sim = Sim(workdir, SimConfig(**config))
        self.made.append(sim)
        sim.run(sim.boot())
        return sim

    def close(self) -> None:
        for sim in self.made:
            sim.close()
        self.made.clear()

"""The loopback execution client every reaction figure is measured against (one process).

It plays ONE node: a websocket server speaking JSON-RPC (``eth_subscribe ["newHeads"]``,
``eth_getBlockByHash``, ``eth_getBlockByNumber``, ``eth_getTransactionCount``,
``eth_getTransactionReceipt``, ...) and THREE HTTP/1.1 keep-alive RPC endpoints (raw asyncio
protocols, batch requests supported) that timestamp every ``eth_sendRawTransaction`` on arrival
with ``time.perf_counter_ns()`` (CLOCK_MONOTONIC: comparable across processes) and answer with
the transaction hash, ``keccak256(raw)``.

The chain is a tree of blocks with whole London headers (each hash its header's keccak, each
``transactionsRoot`` its transactions' trie: verified by the tracker, DESIGN.md §3, and the
bodies proven by the inclusion scan, issue 18) that the driver grows with :meth:`Chain.child`
and makes canonical with :meth:`Chain.set_tip`; every read answers from the canonical chain.

Timing rules (what makes the figure mean what it says):

* :meth:`Harness.announce` writes a pre-built, unmasked RFC 6455 text frame straight to the
  subscriber's transport and returns ``perf_counter_ns()`` taken just before that write;
* an RPC connection takes its timestamp first thing in ``data_received`` and defers parsing and
  answering to ``call_soon``, so three requests that arrive in one event-loop wake-up are all
  stamped before any of them is processed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sha3
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from broadcaster.audit.body import EMPTY_TRIE_ROOT, ordered_trie_root
from broadcaster.dev.rpc_objects import tx_object
from broadcaster.tx.blobs import canonical_form
from heads.header import compute_header_hash, header_plan
from signer_client.errors import TxDecodeError
from signer_client.txcodec import decode_raw

__all__ = ["BASE_FEE", "CHAIN_ID", "Block", "Chain", "Harness", "RawArrival", "TxWaiter"]

CHAIN_ID = 31337
BASE_FEE = 10**9
_clock = time.perf_counter_ns


def _keccak_hex(data: bytes) -> str:
    digest: str = sha3.keccak_256(data).hexdigest()
    return "0x" + digest


@dataclass(slots=True)
class Block:
    """A block with a whole London header: its ``hash`` is ``keccak256(rlp(header))`` and its
    ``transactionsRoot`` the trie of its transactions' encodings, so the service proves its body
    as it proves a real node's (issue 18: inclusion is taken from a proven body only)."""

    number: int
    hash: str
    parent_hash: str
    timestamp: int
    txs: list[str] = field(default_factory=list)
    extra: str = "0x"
    tx_root: str = "0x" + EMPTY_TRIE_ROOT.hex()

    def header(self) -> dict[str, Any]:
        fields = london_fields(
            self.number, self.parent_hash, self.timestamp, self.extra, self.tx_root, len(self.txs)
        )
        return {**fields, "hash": self.hash}

    def body(self, full: bool = False, raws: dict[str, bytes] | None = None) -> dict[str, Any]:
        if not full:
            return {**self.header(), "transactions": list(self.txs)}
        return {
            **self.header(),
            "transactions": [_tx_object(h, (raws or {}).get(h), self) for h in self.txs],
        }


def london_fields(
    number: int, parent_hash: str, timestamp: int, extra: str, tx_root: str, tx_count: int
) -> dict[str, str]:
    """The 16 consensus fields of a London header (EIP-1559); ``gasUsed`` 21,000 a transaction
    (the body checker bounds a block's transactions by it)."""
    zero32 = "0x" + "00" * 32
    return {
        "parentHash": parent_hash,
        "sha3Uncles": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
        "miner": "0x" + "00" * 20, "stateRoot": zero32, "transactionsRoot": tx_root,
        "receiptsRoot": zero32, "logsBloom": "0x" + "00" * 256, "difficulty": "0x0",
        "number": hex(number), "gasLimit": hex(30_000_000), "gasUsed": hex(21_000 * tx_count),
        "timestamp": hex(timestamp), "extraData": extra, "mixHash": zero32,
        "nonce": "0x0000000000000000", "baseFeePerGas": hex(BASE_FEE),
    }  # fmt: skip


def _tx_object(tx_hash: str, raw: bytes | None, block: Block) -> dict[str, Any]:
    """``eth_getBlockByHash(h, true)``'s transaction object, as geth lists it: every signed field
    (the reader re-encodes it, checks the hash and recovers the sender from the signature; a
    raw the harness never received is listed by hash alone, which the reader refuses)."""
    if raw is None:
        return {"hash": tx_hash}
    try:
        decoded = decode_raw(_canonical_encoding(raw))
    except TxDecodeError:
        return {"hash": tx_hash}
    return tx_object(decoded, tx_hash) | {"blockHash": block.hash, "blockNumber": hex(block.number)}


def _canonical_encoding(raw: bytes) -> bytes:
    """A transaction's trie value: its canonical encoding (a blob tx without its sidecar)."""
    try:
        return canonical_form(raw)
    except Exception:  # not a transaction at all: hashed as given (a test's placeholder bytes)
        return raw


class Chain:
    """A block tree with one canonical tip; the answers of every read method."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.raws: dict[str, bytes] = {}  # tx hash -> raw bytes, for full blocks
        genesis = self._block(0, "0x" + "00" * 32, 1_700_000_000, [])
        self.blocks: dict[str, Block] = {genesis.hash: genesis}
        self.tip = genesis
        self.pending_nonce = 0  # the driver raises it as the implementation sends

    def _block(self, number: int, parent_hash: str, timestamp: int, txs: list[str]) -> Block:
        """A block whose header hashes to its ``hash`` (a counter in ``extraData`` tells
        siblings apart); its transactions' raws must have arrived (``raws``)."""
        extra = "0x" + next(self._ids).to_bytes(8, "big").hex()
        root = ordered_trie_root(
            [_canonical_encoding(self.raws.get(h, bytes.fromhex(h[2:]))) for h in txs]
        )
        fields = london_fields(number, parent_hash, timestamp, extra, "0x" + root.hex(), len(txs))
        plan = header_plan(fields)
        assert plan is not None, "a London header is verifiable"
        block_hash = compute_header_hash(fields, plan)
        return Block(number, block_hash, parent_hash, timestamp, txs, extra, "0x" + root.hex())

    def child(self, parent: Block, txs: Sequence[str] = ()) -> Block:
        block = self._block(parent.number + 1, parent.hash, parent.timestamp + 12, list(txs))
        self.blocks[block.hash] = block
        return block

    def set_tip(self, block: Block) -> None:
        self.tip = block

    def canonical(self) -> list[Block]:
        """Tip first, back to genesis."""
        out = []
        block: Block | None = self.tip
        while block is not None:
            out.append(block)
            block = self.blocks.get(block.parent_hash)
        return out

    def by_number(self, number: int) -> Block | None:
        for block in self.canonical():
            if block.number == number:
                return block
        return None

    def mined_count(self) -> int:
        return sum(len(b.txs) for b in self.canonical())

    # -- JSON-RPC reads ------------------------------------------------------------------------

    def call(self, method: str, params: list[Any]) -> Any:
        if method == "eth_getBlockByHash":
            block = self.blocks.get(str(params[0]).lower())
            full = len(params) > 1 and params[1] is True
            return block.body(full, self.raws) if block is not None else None
        if method == "eth_getBlockByNumber":
            tag = params[0] if params else "latest"
            if tag in ("latest", "pending", "safe", "finalized"):
                return self.tip.body()
            if tag == "earliest":
                return self.canonical()[-1].body()
            block = self.by_number(int(tag, 16))
            full = len(params) > 1 and params[1] is True
            return block.body(full, self.raws) if block is not None else None
        if method == "eth_getTransactionCount":
            mined = self.mined_count()
            tag = params[1] if len(params) > 1 else "latest"
            return hex(max(mined, self.pending_nonce) if tag == "pending" else mined)
        if method == "eth_getTransactionReceipt":
            wanted = str(params[0]).lower()
            for block in self.canonical():
                if wanted in block.txs:
                    return {
                        "transactionHash": wanted,
                        "blockHash": block.hash,
                        "blockNumber": hex(block.number),
                        "status": "0x1",
                    }
            return None
        if method == "eth_chainId":
            return hex(CHAIN_ID)
        if method == "net_version":
            return str(CHAIN_ID)
        if method == "eth_blockNumber":
            return hex(self.tip.number)
        if method in ("eth_gasPrice", "eth_maxPriorityFeePerGas"):
            return hex(BASE_FEE)
        if method == "eth_estimateGas":
            return hex(21_000)
        if method == "eth_getBalance":
            return hex(10**24)
        raise LookupError(method)


@dataclass(frozen=True, slots=True)
class RawArrival:
    t_ns: int
    rpc: int
    tx_hash: str


class TxWaiter:
    """Done once every RPC has received ``k`` distinct transaction hashes not in ``exclude``."""

    def __init__(self, rpcs: int, k: int, exclude: set[str]) -> None:
        self.k = k
        self.exclude = exclude
        self.per_rpc: list[dict[str, int]] = [{} for _ in range(rpcs)]
        self.done = asyncio.Event()

    def offer(self, arrival: RawArrival) -> None:
        if arrival.tx_hash in self.exclude:
            return
        got = self.per_rpc[arrival.rpc]
        if len(got) < self.k and arrival.tx_hash not in got:
            got[arrival.tx_hash] = arrival.t_ns
            if all(len(g) >= self.k for g in self.per_rpc):
                self.done.set()

    def last_ns(self) -> int:
        """When the last RPC received the last of the ``k`` transactions."""
        return max(max(g.values()) for g in self.per_rpc)

    def hashes(self) -> list[str]:
        seen: dict[str, int] = {}
        for got in self.per_rpc:
            for tx_hash, t in got.items():
                seen[tx_hash] = min(t, seen.get(tx_hash, t))
        return sorted(seen, key=seen.__getitem__)


_HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "


class _RpcConnection(asyncio.Protocol):
    __slots__ = ("buf", "harness", "index", "scheduled", "t_ns", "transport")

    def __init__(self, harness: Harness, index: int) -> None:
        self.harness = harness
        self.index = index
        self.buf = bytearray()
        self.scheduled = False
        self.t_ns = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.t_ns = _clock()  # first: this is the arrival time
        self.buf += data
        if not self.scheduled:
            self.scheduled = True
            self.harness.loop.call_soon(self._process)

    def _process(self) -> None:
        self.scheduled = False
        buf = self.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            close = False
            for line in bytes(buf[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if len(buf) < end + 4 + length:
                return
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            reply = self.harness.handle_http(self.index, body, self.t_ns)
            assert self.transport is not None
            self.transport.write(b"".join((_HTTP_OK, str(len(reply)).encode(), b"\r\n\r\n", reply)))
            if close:
                self.transport.close()
                return


def _ws_text_frame(payload: bytes) -> bytes:
    """An unmasked FIN text frame (RFC 6455 §5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 1 << 16:
        head = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return head + payload


class Harness:
    """One node: ``ws_url`` for heads and reads, ``rpc_urls`` (3) for broadcasts."""

    def __init__(self, rpcs: int = 3, *, builders: bool = False) -> None:
        """``builders``: the RPCs play block builders (``eth_sendBundle``: each bundle's txs
        arrive like raw transactions) and one more endpoint, ``reader_url``, answers the
        chain reads a builder never serves (DESIGN.md 5a)."""
        self.builders = builders
        self.reader_url = ""
        self.chain = Chain()
        self.n_rpcs = rpcs
        self.arrivals: list[RawArrival] = []
        self.seen: set[str] = set()
        self.received: list[set[str]] = [set() for _ in range(rpcs)]
        self.raw_counts = [0] * rpcs
        self.read_counts: dict[str, int] = {}
        self.keep_arrivals = True
        self.waiters: list[TxWaiter] = []
        self.subscribers: dict[ServerConnection, str] = {}
        self.subscribed = asyncio.Event()
        self._sub_ids = itertools.count(1)
        self._ws_server: Server | None = None
        self._rpc_servers: list[asyncio.Server] = []
        self.ws_url = ""
        self.rpc_urls: list[str] = []
        self.loop: asyncio.AbstractEventLoop

    async def __aenter__(self) -> Harness:
        self.loop = asyncio.get_running_loop()
        self._ws_server = await serve(
            self._ws_handler, "127.0.0.1", 0, compression=None, max_size=16 << 20
        )
        port = next(iter(self._ws_server.sockets)).getsockname()[1]
        self.ws_url = f"ws://127.0.0.1:{port}"
        for index in range(self.n_rpcs):

            def factory(i: int = index) -> _RpcConnection:
                return _RpcConnection(self, i)

            server = await self.loop.create_server(factory, "127.0.0.1", 0)
            self._rpc_servers.append(server)
            self.rpc_urls.append(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        if self.builders:
            server = await self.loop.create_server(lambda: _RpcConnection(self, -1), "127.0.0.1", 0)
            self._rpc_servers.append(server)
            self.reader_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for server in self._rpc_servers:
            server.close()
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()

    # -- heads ---------------------------------------------------------------------------------

    def announce(self, block: Block) -> int:
        """Make ``block`` the tip and push it to every subscriber; returns the write time (ns)."""
        self.chain.set_tip(block)
        t0 = 0
        for ws, sub_id in list(self.subscribers.items()):
            frame = _ws_text_frame(
                orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "method": "eth_subscription",
                        "params": {"subscription": sub_id, "result": block.header()},
                    }
                )
            )
            transport = ws.transport
            if transport.is_closing():
                continue
            t = _clock()
            transport.write(frame)
            t0 = t0 or t
        return t0

    async def wait_subscribed(self, within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            await self.subscribed.wait()

    async def _ws_handler(self, ws: ServerConnection) -> None:
        try:
            async for message in ws:
                request = orjson.loads(message)
                replies = [self._ws_call(ws, r) for r in request] if type(request) is list else None
                reply = replies if replies is not None else self._ws_call(ws, request)
                await ws.send(orjson.dumps(reply).decode())
        except ConnectionClosed:
            pass
        finally:
            self.subscribers.pop(ws, None)

    def _ws_call(self, ws: ServerConnection, request: dict[str, Any]) -> dict[str, Any]:
        method = request.get("method")
        if method == "eth_subscribe":
            sub_id = hex(0x1000 + next(self._sub_ids))
            self.subscribers[ws] = sub_id
            self.subscribed.set()
            return {"jsonrpc": "2.0", "id": request.get("id"), "result": sub_id}
        if method == "eth_unsubscribe":
            self.subscribers.pop(ws, None)
            return {"jsonrpc": "2.0", "id": request.get("id"), "result": True}
        return self._call(request, 0, ws=True)

    # -- RPCs ----------------------------------------------------------------------------------

    def handle_http(self, index: int, body: bytes, t_ns: int) -> bytes:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return orjson.dumps(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse"}}
            )
        if type(request) is list:
            return orjson.dumps([self._call(r, t_ns, rpc=index) for r in request])
        return orjson.dumps(self._call(request, t_ns, rpc=index))

    def _call(self, request: Any, t_ns: int, *, rpc: int = -1, ws: bool = False) -> dict[str, Any]:
        if type(request) is not dict:
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid"}}
        rid = request.get("id")
        method = request.get("method")
        params = request.get("params") or []
        if method == "eth_sendBundle" and rpc >= 0 and self.builders:
            bundle = params[0]
            for raw_hex in bundle["txs"]:
                raw = bytes.fromhex(raw_hex[2:])
                tx_hash = _keccak_hex(raw)
                self._raw_arrival(RawArrival(t_ns, rpc, tx_hash))
                self.chain.raws.setdefault(tx_hash, raw)  # full blocks list its fields
            return {"jsonrpc": "2.0", "id": rid, "result": {"bundleHash": "0x" + "00" * 32}}
        if method == "eth_cancelBundle" and rpc >= 0 and self.builders:
            return {"jsonrpc": "2.0", "id": rid, "result": None}
        if method == "eth_sendRawTransaction" and rpc >= 0:
            raw = bytes.fromhex(params[0][2:])
            tx_hash = _keccak_hex(raw)
            self._raw_arrival(RawArrival(t_ns, rpc, tx_hash))
            self.chain.raws.setdefault(tx_hash, raw)
            return {"jsonrpc": "2.0", "id": rid, "result": tx_hash}
        assert type(method) is str
        self.read_counts[method] = self.read_counts.get(method, 0) + 1
        try:
            result = self.chain.call(method, list(params))
        except LookupError:
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"code": -32601, "message": f"the method {method} does not exist"},
            }
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    def _raw_arrival(self, arrival: RawArrival) -> None:
        self.raw_counts[arrival.rpc] += 1
        self.received[arrival.rpc].add(arrival.tx_hash)
        if self.keep_arrivals:
            self.arrivals.append(arrival)
        for waiter in self.waiters:
            waiter.offer(arrival)
        self.seen.add(arrival.tx_hash)

    def expect(self, k: int) -> TxWaiter:
        """Wait for ``k`` transactions the RPCs have never seen to reach every RPC."""
        waiter = TxWaiter(self.n_rpcs, k, set(self.seen))
        self.waiters.append(waiter)
        return waiter

    async def wait(self, waiter: TxWaiter, within: float) -> TxWaiter:
        try:
            async with asyncio.timeout(within):
                await waiter.done.wait()
        finally:
            self.waiters.remove(waiter)
        return waiter

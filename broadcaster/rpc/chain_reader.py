"""Reading chain state over JSON-RPC: nonces, block transaction lists, receipts.

The tx manager asks three kinds of questions, none of them on the reaction's hot path:

- ``eth_getTransactionCount(sender, latest|pending)`` to resync nonces (start, reorgs, errors);
- ``eth_getBlockByHash(hash, false)``, batched, to learn which of our hashes a canonical block
  lists (inclusion tracking), then, for a block that lists one of ours, ``eth_getBlockByHash(
  hash, true)`` proven against its header (:meth:`ChainReader.proven_blocks`) before any of ours
  is taken as included;
- ``eth_getTransactionReceipt(hash)`` to reconcile after a crash, a deep reorg or "nonce too low"
  (each :class:`Receipt` carries its block's number *and* hash, so the caller can check that the
  block is canonical in its window before believing it);
- :meth:`ChainReader.mined_at`: the transaction that used ``(sender, nonce)``, for crash
  recovery (``eth_getTransactionBySenderAndNonce`` where the node has it, else a search of the
  chain, see :func:`_mined_at`).

:meth:`ChainReader.transaction_counts_each` asks every read endpoint at once, so that one RPC
whose pending count jumps far beyond the others is not trusted alone (DESIGN.md section 5).

Answers are checked before use: a block must come back with the hash we asked for, a receipt or
a transaction with the hash it was asked for, raw bytes must hash to their transaction's hash (a
lying or confused RPC is skipped, counted through ``on_lie``, and the next endpoint asked).
Endpoints are tried in order, starting from the one that answered last, failing over on
transport errors; one kept-alive ``aiohttp`` session serves them all.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import sha3  # safe-pysha3

from broadcaster.errors import BroadcasterError

if TYPE_CHECKING:
    from broadcaster.audit.reconcile import FullBlock

__all__ = [
    "MINED_AT_SEARCH_BLOCKS",
    "BlockTxs",
    "ChainReadError",
    "ChainReader",
    "MinedTx",
    "NodeError",
    "Receipt",
    "UnlocatedNonce",
]

MINED_AT_SEARCH_BLOCKS = 100_000
"""How far below the chain's head :meth:`ChainReader.mined_at` searches by default (about two
weeks of mainnet blocks); a caller that knows better passes ``since_block``."""

Post = Callable[[str, Any], Awaitable[Any]]
"""POST one JSON-RPC body (an object or a batch array) to a URL; return the parsed answer."""

log = logging.getLogger(__name__)


class ChainReadError(BroadcasterError, RuntimeError):
    """No endpoint gave a usable answer."""


class UnlocatedNonce(ChainReadError):
    """The chain used ``(sender, nonce)`` but no block searched holds the transaction.

    The nonce count is past ``nonce`` already at ``searched_from - 1`` (the transaction is older
    than the search range), or the node no longer has the state of the blocks the search needs
    (a pruned, non-archive node), or its answers contradict each other. Not "not mined": the
    caller must not conclude that the nonce is free or that the intent failed.
    """

    def __init__(self, sender: str, nonce: int, searched_from: int, why: str) -> None:
        super().__init__(f"{sender}/{nonce}: used on chain, not located: {why}")
        self.sender = sender
        self.nonce = nonce
        self.searched_from = searched_from


class NodeError(ChainReadError):
    """The node answered with a JSON-RPC error (a revert, a bad parameter...): its own words."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True, slots=True)
class BlockTxs:
    """A block's number, hash and transaction hashes (``eth_getBlockByHash(h, false)``)."""

    number: int
    hash: str
    tx_hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Receipt:
    """A receipt and the block it was read from: a fact only if that block is canonical."""

    tx_hash: bytes
    block_number: int
    block_hash: str  # 0x-hex, lower case
    status: int


def _hex_int(value: Any) -> int:
    if type(value) is not str or not value.startswith("0x"):
        raise ValueError(f"not a quantity: {value!r:.60}")
    return int(value, 16)


def _quantity(value: Any) -> int | None:
    try:
        return _hex_int(value)
    except ValueError:
        return None


class ChainReader:
    """JSON-RPC reads with failover across ``urls`` (http(s):// only; ws URLs are skipped)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = 5.0,
        on_lie: Callable[[str, str], None] | None = None,
        post: Post | None = None,
    ) -> None:
        """``post`` replaces the HTTP POST (tests script the node with it)."""
        self.urls = [u for u in urls if u.startswith(("http://", "https://"))]
        if not self.urls:
            raise ValueError("ChainReader needs at least one http(s):// endpoint")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._post_body: Post = post or self._http_post
        self._ids = itertools.count(1)
        self._on_lie = on_lie or (lambda url, what: None)
        # The endpoint that answered last is asked first: a stalled endpoint listed first would
        # otherwise cost a full timeout on every read, forever.
        self._first = 0

    async def __aenter__(self) -> ChainReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers={"content-type": "application/json"}
            )
        return self._session

    async def _http_post(self, url: str, body: Any) -> Any:
        async with self._http().post(url, data=orjson.dumps(body)) as response:
            if response.status >= 400:
                raise ChainReadError(f"{url}: HTTP {response.status}")
            return orjson.loads(await response.read())

    def _lie(self, what: str) -> None:
        # The endpoint that answered last is the one ``replies`` just used.
        self._on_lie(self.urls[self._first], what)

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Results of ``calls`` in order (``None`` where a call answered with an error)."""
        return [reply.get("result") for reply in await self.replies(calls)]

    async def proxy(self, method: str, *params: Any) -> Any:
        """One call whose JSON-RPC error is raised as :class:`NodeError` (for pass-through)."""
        (reply,) = await self.replies([(method, list(params))])
        error = reply.get("error")
        if type(error) is dict:
            code = error.get("code")
            raise NodeError(
                code if type(code) is int else -32603, str(error.get("message")), error.get("data")
            )
        return reply.get("result")

    async def replies(self, calls: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        """The reply objects of ``calls`` in order (``{}`` where the node gave none)."""
        if not calls:
            return []
        last_error: Exception | None = None
        urls = self.urls
        for k in range(len(urls)):
            index = (self._first + k) % len(urls)
            try:
                replies = await self._replies_at(urls[index], calls)
            except ChainReadError as exc:
                last_error = exc
                continue
            self._first = index
            return replies
        raise ChainReadError(f"no endpoint answered: {last_error}") from last_error

    async def _replies_at(
        self, url: str, calls: Sequence[tuple[str, list[Any]]]
    ) -> list[dict[str, Any]]:
        """``calls`` as one batch to ``url`` alone; ChainReadError if it gave no usable answer."""
        ids = [next(self._ids) for _ in calls]
        body = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": p}
            for i, (m, p) in zip(ids, calls, strict=True)
        ]
        try:
            replies = await self._post_body(url, body)
        except ChainReadError:
            raise
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, OSError) as exc:
            raise ChainReadError(f"{url}: {type(exc).__name__}: {exc}") from exc
        if type(replies) is not list:
            raise ChainReadError(f"{url}: batch answer is not a list")
        by_id = {r.get("id"): r for r in replies if type(r) is dict}
        return [by_id.get(i, {}) for i in ids]

    @property
    def last_url(self) -> str:
        """The endpoint :meth:`replies` asked first (the one that answered last)."""
        return self.urls[self._first]

    async def replies_each(
        self, calls: Sequence[tuple[str, list[Any]]], skip: Collection[str] = ()
    ) -> dict[str, list[dict[str, Any]] | ChainReadError]:
        """The reply objects of ``calls`` from every read endpoint but ``skip``, asked
        concurrently, by URL (an endpoint that gave no usable answer maps to its
        :class:`ChainReadError`): for a reader that must not take one endpoint's word (the
        audit reconciler)."""

        async def ask(url: str) -> list[dict[str, Any]] | ChainReadError:
            try:
                return await self._replies_at(url, calls)
            except ChainReadError as exc:
                return exc

        urls = [url for url in self.urls if url not in skip]
        answers = await asyncio.gather(*(ask(url) for url in urls))
        return dict(zip(urls, answers, strict=True))

    async def call(self, method: str, *params: Any) -> Any:
        (result,) = await self.batch([(method, list(params))])
        return result

    async def transaction_counts(self, sender: str) -> tuple[int, int]:
        """``eth_getTransactionCount`` at ``latest`` and ``pending``."""
        latest, pending = await self.batch(
            [
                ("eth_getTransactionCount", [sender, "latest"]),
                ("eth_getTransactionCount", [sender, "pending"]),
            ]
        )
        try:
            return _hex_int(latest), _hex_int(pending)
        except ValueError as exc:
            raise ChainReadError(f"eth_getTransactionCount({sender}): {exc}") from exc

    async def transaction_counts_each(
        self, sender: str
    ) -> dict[str, tuple[int, int] | ChainReadError]:
        """``(latest, pending)`` from every read endpoint, asked concurrently, by URL; an
        endpoint that gave no usable answer maps to its :class:`ChainReadError`.

        For the caller's sanity check: one RPC whose pending count jumps far beyond the others'
        is not to be trusted alone (DESIGN.md section 5).
        """
        calls = [
            ("eth_getTransactionCount", [sender, "latest"]),
            ("eth_getTransactionCount", [sender, "pending"]),
        ]

        async def ask(url: str) -> tuple[int, int] | ChainReadError:
            try:
                latest, pending = await self._replies_at(url, calls)
                return _hex_int(latest.get("result")), _hex_int(pending.get("result"))
            except ChainReadError as exc:
                return exc
            except ValueError as exc:
                return ChainReadError(f"{url}: eth_getTransactionCount({sender}): {exc}")

        answers = await asyncio.gather(*(ask(url) for url in self.urls))
        return dict(zip(self.urls, answers, strict=True))

    async def block_number(self) -> int:
        return _hex_int(await self.call("eth_blockNumber"))

    async def base_fee(self) -> int | None:
        block = await self.call("eth_getBlockByNumber", "latest", False)
        if type(block) is dict and block.get("baseFeePerGas"):
            return _hex_int(block["baseFeePerGas"])
        return None

    async def blocks(self, hashes: Sequence[str]) -> dict[str, BlockTxs]:
        """Transaction hashes of the blocks the endpoint knows, by the (lower-case) hash asked
        for; unknown ones left out, and so is a block answered with another hash (a lie)."""
        results = await self.batch([("eth_getBlockByHash", [h, False]) for h in hashes])
        out: dict[str, BlockTxs] = {}
        for wanted, block in zip(hashes, results, strict=True):
            if type(block) is not dict:
                continue
            try:
                if str(block.get("hash", "")).lower() != wanted:
                    self._lie("block_hash_mismatch")
                    log.warning("RPC answered block %s for %s: ignored", block.get("hash"), wanted)
                    continue
                txs = block.get("transactions") or []
                out[wanted] = BlockTxs(
                    _hex_int(block["number"]),
                    wanted,
                    tuple(bytes.fromhex(t[2:]) for t in txs if type(t) is str),
                )
            except (KeyError, ValueError) as exc:
                self._lie("malformed_block")
                log.warning("malformed block %s: %s", wanted, exc)
        return out

    async def proven_blocks(
        self, hashes: Sequence[str], on_refused: Callable[[str, str], object] | None = None
    ) -> dict[str, FullBlock]:
        """The blocks some read endpoint answered whole and *proven* (``eth_getBlockByHash(h,
        true)``: header hash, ``transactionsRoot``, senders recovered), by the lower-case hash
        asked for; an answer refused is reported to ``on_refused(url, reason)`` and the block
        asked of every other endpoint (:func:`broadcaster.audit.chain.proven_blocks`)."""
        # Imported here: broadcaster.audit imports the tx side, which imports this module.
        from broadcaster.audit.chain import proven_blocks

        if on_refused is None:
            return await proven_blocks(self, hashes)
        return await proven_blocks(self, hashes, on_refused)

    async def mined_at(
        self, sender: str, nonce: int, *, since_block: int | None = None
    ) -> MinedTx | None:
        """The mined transaction at ``(sender, nonce)``; None if the nonce is not used on chain.

        ``since_block``: the lowest block that may hold it (e.g. the tip when the intent was
        accepted), for the search a node without ``eth_getTransactionBySenderAndNonce`` needs;
        default ``latest - MINED_AT_SEARCH_BLOCKS``. Raises :class:`UnlocatedNonce` when the
        nonce is used but the search cannot find the block, and :class:`ChainReadError` when no
        endpoint answers. See :func:`_mined_at`.
        """
        return await _mined_at(self, sender, nonce, since_block)

    async def receipts(self, tx_hashes: Sequence[bytes]) -> dict[bytes, Receipt]:
        """Receipts that exist, by transaction hash, each with its block's number and hash
        (a receipt for another hash than asked is a lie, left out)."""
        results = await self.batch(
            [("eth_getTransactionReceipt", ["0x" + h.hex()]) for h in tx_hashes]
        )
        out: dict[bytes, Receipt] = {}
        for tx_hash, receipt in zip(tx_hashes, results, strict=True):
            if type(receipt) is not dict or receipt.get("blockHash") is None:
                continue
            try:
                if bytes.fromhex(str(receipt["transactionHash"])[2:]) != tx_hash:
                    self._lie("receipt_hash_mismatch")
                    continue
                out[tx_hash] = Receipt(
                    tx_hash,
                    _hex_int(receipt["blockNumber"]),
                    str(receipt["blockHash"]).lower(),
                    _hex_int(receipt.get("status", "0x1")),
                )
            except (KeyError, ValueError) as exc:
                self._lie("malformed_receipt")
                log.warning("malformed receipt for 0x%s: %s", tx_hash.hex(), exc)
        return out


@dataclass(frozen=True, slots=True)
class MinedTx:
    """The transaction the chain holds at ``(sender, nonce)``.

    ``raw`` is its signed bytes from ``eth_getRawTransactionByHash`` (geth, reth, Erigon,
    anvil), checked to hash to ``hash``; ``b""`` when the node does not serve raw bytes or
    served bytes of another hash (then ``on_lie`` heard of it). The other fields come from the
    node's transaction object, ``block_hash`` and ``block_number`` from the block holding it.
    """

    hash: bytes
    to: str | None
    value: int
    data: bytes
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    block_number: int
    block_hash: str
    raw: bytes


_DIRECT = ("eth_getTransactionBySenderAndNonce", "ots_getTransactionBySenderAndNonce")
_PROBES = 15  # eth_getTransactionCount calls per batch of the search (a 16-ary search)


async def _mined_at(
    reader: ChainReader, sender: str, nonce: int, since_block: int | None
) -> MinedTx | None:
    """Find the mined transaction at ``(sender, nonce)`` (crash recovery's last resort).

    1. ``eth_getTransactionBySenderAndNonce`` (anvil, reth, Erigon), then otterscan's
       ``ots_getTransactionBySenderAndNonce`` (a hash, then ``eth_getTransactionByHash``). A
       node that has the method is believed: ``null``, or a transaction not in a block yet,
       means not mined. A JSON-RPC error (geth: ``-32601 ... does not exist/is not available``)
       means it does not have it: next step.
    2. The search, for nodes without either (geth, Nethermind, Besu): the block where the
       sender's nonce count (``eth_getTransactionCount(sender, block)``, monotone along a
       chain) first exceeds ``nonce`` holds the transaction. ``latest``'s count not past
       ``nonce``: not mined, None. Otherwise a galloping search down from ``latest`` (probes at
       latest-1, -2, -4, ... in one batch: a recent transaction, the usual case after a crash,
       costs one or two round trips and touches only recent state, which even a pruned node
       keeps), then a 16-ary search of the bracket, ``_PROBES`` probes per batch. The block
       found is read with ``eth_getBlockByNumber(n, true)`` and its transaction at ``(sender,
       nonce)`` taken.

    Either way the answer is *proven* by its block (:func:`_proven_in`; the direct answer's
    block is read by the hash it names): the header must hash to the block's hash, the
    transactions to its ``transactionsRoot``, and the sender is recovered from the signature,
    never read from the RPC's ``from``. A lying RPC must not make a nonce look taken by a
    transaction nobody mined or signed: the tx side would give the intent up as foreign.
    3. Raw bytes: ``eth_getRawTransactionByHash``, kept only if their keccak256 is the
       transaction's hash; without them the block's word is trusted (``raw = b""``).

    Raises :class:`UnlocatedNonce` when the count is already past ``nonce`` below the search
    range, when the node lacks the state of a block the search needs, or when the block found
    does not prove it holds the transaction (a lie, or a block this code cannot verify).
    """
    tx = await _direct(reader, sender, nonce)
    proven = tx is _MISSING  # the search reads the block and proves the tx in it
    if proven:
        tx = await _search(reader, sender, nonce, since_block)
    if type(tx) is not dict or tx.get("blockHash") is None:
        return None
    try:
        if str(tx.get("from", "")).lower() != sender.lower() or _hex_int(tx["nonce"]) != nonce:
            reader._lie("mined_tx_mismatch")
            log.warning("RPC answered another transaction for %s/%d: ignored", sender, nonce)
            return None
        if not proven:
            tx = await _proven(reader, sender, nonce, tx)
        tx_hash = bytes.fromhex(str(tx["hash"])[2:])
        raw = await _raw(reader, tx_hash)
        fee = tx.get("maxFeePerGas", tx.get("gasPrice"))
        tip = tx.get("maxPriorityFeePerGas", fee)
        return MinedTx(
            hash=tx_hash,
            to=str(tx["to"]).lower() if tx.get("to") else None,
            value=_hex_int(tx["value"]),
            data=bytes.fromhex(str(tx.get("input", "0x"))[2:]),
            max_fee_per_gas=_hex_int(fee),
            max_priority_fee_per_gas=_hex_int(tip),
            block_number=_hex_int(tx["blockNumber"]),
            block_hash=str(tx["blockHash"]).lower(),
            raw=raw,
        )
    except (KeyError, ValueError) as exc:
        reader._lie("malformed_transaction")
        log.warning("could not read the transaction at %s/%d: %s", sender, nonce, exc)
        return None


_MISSING: Any = object()  # the node has neither direct method


async def _direct(reader: ChainReader, sender: str, nonce: int) -> Any:
    """The node's own lookup: its transaction object or None, or _MISSING without one."""
    (direct,) = await reader.replies([(_DIRECT[0], [sender, hex(nonce)])])
    if "error" not in direct and "result" in direct:
        return direct["result"]
    (ots,) = await reader.replies([(_DIRECT[1], [sender, hex(nonce)])])
    if "error" in ots or "result" not in ots:
        return _MISSING
    if type(ots["result"]) is not str:
        return None
    return await reader.call("eth_getTransactionByHash", ots["result"])


async def _counts(reader: ChainReader, sender: str, blocks: Sequence[int]) -> list[int | None]:
    """``eth_getTransactionCount(sender, b)`` for each block, None where the node refused."""
    replies = await reader.replies([("eth_getTransactionCount", [sender, hex(b)]) for b in blocks])
    return [_quantity(reply.get("result")) for reply in replies]


async def _search(
    reader: ChainReader, sender: str, nonce: int, since_block: int | None
) -> dict[str, Any] | None:
    """Step 2 of :func:`_mined_at`: the transaction object from the block that used ``nonce``."""
    latest = await reader.block_number()
    start = max(1, latest - MINED_AT_SEARCH_BLOCKS if since_block is None else since_block)
    (top,) = await _counts(reader, sender, [latest])
    if top is None:
        raise ChainReadError(f"eth_getTransactionCount({sender}, {latest}) was refused")
    if top <= nonce:
        return None  # not used on chain (as of ``latest``)
    if start > latest:
        raise UnlocatedNonce(sender, nonce, start, f"since_block {start} is above latest {latest}")
    # f(b) = count(b) > nonce is false below the block that used the nonce and true from it on.
    # Invariant: f(hi) is true; f(lo) is false once known. lo = start - 1 is the lowest probe.
    hi, lo = latest, start - 1
    gallop = []
    step = 1
    while hi - step > lo:
        gallop.append(hi - step)
        step *= 2
    gallop.append(lo)
    found_lo = False
    for block, count in zip(gallop, await _counts(reader, sender, gallop), strict=True):
        if count is None:
            raise UnlocatedNonce(sender, nonce, start, f"no state for block {block} (pruned?)")
        if count > nonce:
            hi = block
        else:
            lo, found_lo = block, True
            break
    if not found_lo:
        raise UnlocatedNonce(sender, nonce, start, f"count already past it at block {lo}")
    while hi - lo > 1:
        width = hi - lo
        points = sorted({lo + width * (i + 1) // (_PROBES + 1) for i in range(_PROBES)} - {lo, hi})
        if not points:
            points = list(range(lo + 1, hi))
        for block, count in zip(points, await _counts(reader, sender, points), strict=True):
            if count is None:
                raise UnlocatedNonce(sender, nonce, start, f"no state for block {block} (pruned?)")
            if count > nonce:
                hi = block
                break
            lo = block
    block = await reader.call("eth_getBlockByNumber", hex(hi), True)
    if type(block) is dict:
        found = _proven_in(reader, block, str(block.get("hash", "")), sender, nonce)
        if found is not None:
            return found
    raise UnlocatedNonce(sender, nonce, start, f"block {hi} does not prove it holds it")


def _proven_in(
    reader: ChainReader, block: dict[str, Any], block_hash: str, sender: str, nonce: int
) -> dict[str, Any] | None:
    """The transaction object at ``(sender, nonce)`` in ``block`` (an ``eth_get
    BlockByHash/Number(.., true)`` answer) *proven*: the header hashes to ``block_hash``, the
    transactions to its ``transactionsRoot``, and the sender is recovered from the signature
    (:func:`broadcaster.audit.body.check_block`); the RPC's ``from`` is never read. None when
    the block does not prove it (a lie, counted through ``on_lie``, or a block this code cannot
    verify). The caller still checks ``block_hash`` is canonical in its window."""
    # Imported here: broadcaster.audit imports the tx side, which imports this module.
    from broadcaster.audit.body import BodyRefused, check_block

    try:
        checked = check_block(block, block_hash)
    except BodyRefused as exc:
        reader._lie("mined_block_refused")
        log.warning("block %s refused looking up %s/%d: %s", block_hash, sender, nonce, exc)
        return None
    if not checked.verified:
        log.warning("block %s cannot be verified: %s/%d not proven", block_hash, sender, nonce)
        return None
    items = block.get("transactions") or []
    for item, tx in zip(items, checked.block.txs, strict=True):
        if tx.sender == sender.lower() and tx.nonce == nonce:
            return {
                **item,
                "from": tx.sender,
                "blockHash": checked.block.hash,
                "blockNumber": hex(checked.block.number),
            }
    return None


async def _proven(reader: ChainReader, sender: str, nonce: int, tx: dict[str, Any]) -> Any:
    """``tx`` (an RPC's word for ``(sender, nonce)``) proven by its block, read by the hash it
    names and checked (:func:`_proven_in`): a lying RPC must not make a nonce look taken by a
    transaction nobody signed or mined (the tx side would give our intent up as foreign).
    Raises :class:`UnlocatedNonce` when the block does not prove it."""
    block_hash = str(tx.get("blockHash", "")).lower()
    block = await reader.call("eth_getBlockByHash", block_hash, True)
    found = _proven_in(reader, block, block_hash, sender, nonce) if type(block) is dict else None
    if found is None or str(found.get("hash", "")).lower() != str(tx.get("hash", "")).lower():
        raise UnlocatedNonce(sender, nonce, 0, f"block {block_hash:.80} does not prove it")
    return found


async def _raw(reader: ChainReader, tx_hash: bytes) -> bytes:
    """The signed bytes of ``tx_hash`` if the node serves them and they hash to it, else b""."""
    (reply,) = await reader.replies([("eth_getRawTransactionByHash", ["0x" + tx_hash.hex()])])
    raw_hex = reply.get("result")
    if type(raw_hex) is not str or not raw_hex.startswith("0x"):
        return b""
    try:
        raw = bytes.fromhex(raw_hex[2:])
    except ValueError:
        raw = b""
    if raw and sha3.keccak_256(raw).digest() == tx_hash:
        return raw
    reader._lie("raw_hash_mismatch")
    log.warning("raw bytes served for 0x%s do not hash to it: ignored", tx_hash.hex())
    return b""

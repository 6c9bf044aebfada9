"""Blocks with their transactions, for the reconciler (read from head clients and public RPCs).

``eth_getBlockByHash(h, true)`` / ``eth_getBlockByNumber(n, true)`` carry each transaction's
``from``, so no signature is recovered here. A block answered with another hash than asked, or
malformed, is left out (and logged), as ``ChainReader.blocks`` does.

Live (:func:`full_blocks`), one endpoint answers the full blocks and every read endpoint is asked
for the blocks' transaction hashes (``eth_getBlockByHash(h, false)``: a few kB, cheap to parse on
the event loop); a hash another endpoint lists that the full answer lacks is fetched by hash and
checked too, and a block the first endpoint does not have is read in full from the others. One
RPC that omits a transaction of ours from a block (a lie the block hash does not reveal: the
transactions root is not recomputed here) or lags cannot hide it while another answers honestly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from broadcaster.audit.reconcile import BlockTx, FullBlock, parse_full_block
from broadcaster.rpc.chain_reader import ChainReader, ChainReadError

__all__ = ["full_blocks", "full_blocks_by_number"]

log = logging.getLogger(__name__)


def _union(known: FullBlock, other: FullBlock) -> FullBlock:
    seen = {tx.hash for tx in known.txs}
    extra = tuple(tx for tx in other.txs if tx.hash not in seen)
    return FullBlock(known.number, known.hash, known.txs + extra) if extra else known


async def full_blocks(chain: ChainReader, hashes: Sequence[str]) -> dict[str, FullBlock]:
    """The blocks some read endpoint has, by the (lower-case) hash asked for, each with every
    transaction any endpoint lists for it (see the module docstring)."""
    if not hashes:
        return {}
    primary, listed = await asyncio.gather(
        chain.replies([("eth_getBlockByHash", [h, True]) for h in hashes]),
        chain.replies_each([("eth_getBlockByHash", [h, False]) for h in hashes]),
        return_exceptions=True,
    )
    if isinstance(primary, BaseException) and not isinstance(primary, ChainReadError):
        raise primary
    if isinstance(listed, BaseException):
        raise listed
    out: dict[str, FullBlock] = {}
    if not isinstance(primary, BaseException):
        _take_full(out, "the first endpoint", hashes, primary)
    lists = {url: _tx_lists(url, hashes, r) for url, r in listed.items() if type(r) is list}
    if not lists and not out:
        raise ChainReadError(f"no endpoint answered: {primary}")
    absent = [h for h in hashes if h not in out and any(h in found for found in lists.values())]
    if absent:  # the first endpoint lacks (or garbled) blocks others have: read them in full
        for url, replies in (await chain.replies_each(_full_calls(absent))).items():
            if type(replies) is list:
                _take_full(out, url, absent, replies)
    extra: dict[bytes, str] = {}  # tx hash -> block hash: listed elsewhere, not in the full one
    for url, found in lists.items():
        for wanted, tx_hashes in found.items():
            block = out.get(wanted)
            if block is None:
                continue
            have = {tx.hash for tx in block.txs}
            missing = [h for h in tx_hashes if h not in have]
            if missing:
                log.warning(
                    "%s lists %d transactions of block %s the full answer lacks: checked too",
                    url,
                    len(missing),
                    wanted,
                )
                extra.update((h, wanted) for h in missing)
    if extra:
        await _add_by_hash(chain, out, extra)
    return out


def _full_calls(hashes: Sequence[str]) -> list[tuple[str, list[Any]]]:
    return [("eth_getBlockByHash", [h, True]) for h in hashes]


def _take_full(
    out: dict[str, FullBlock], source: str, hashes: Sequence[str], replies: Sequence[Any]
) -> None:
    for wanted, reply in zip(hashes, replies, strict=True):
        raw = reply.get("result") if isinstance(reply, dict) else None
        if type(raw) is not dict:
            continue
        try:
            block = parse_full_block(raw)
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("%s: malformed block %s: %s", source, wanted, exc)
            continue
        if block.hash != wanted.lower():
            log.warning("%s answered block %s for %s: ignored", source, block.hash, wanted)
            continue
        known = out.get(wanted)
        out[wanted] = block if known is None else _union(known, block)


def _tx_lists(url: str, hashes: Sequence[str], replies: Sequence[Any]) -> dict[str, list[bytes]]:
    """The transaction hashes ``url`` lists per block it has (malformed answers left out)."""
    found: dict[str, list[bytes]] = {}
    for wanted, reply in zip(hashes, replies, strict=True):
        raw = reply.get("result") if isinstance(reply, dict) else None
        if type(raw) is not dict or str(raw.get("hash", "")).lower() != wanted.lower():
            continue
        items = raw.get("transactions") or []
        try:
            found[wanted] = [bytes.fromhex(str(t)[2:]) for t in items if len(str(t)) == 66]
        except ValueError:
            log.warning("%s: malformed transaction hashes in block %s", url, wanted)
    return found


async def _add_by_hash(
    chain: ChainReader, out: dict[str, FullBlock], extra: dict[bytes, str]
) -> None:
    """Add the transactions ``extra`` names (``eth_getTransactionByHash`` from every endpoint:
    the first whose answer is that hash in that block) to their blocks."""
    wanted = list(extra)
    calls = [("eth_getTransactionByHash", ["0x" + h.hex()]) for h in wanted]
    answers = await chain.replies_each(calls)
    added: dict[bytes, BlockTx] = {}
    for replies in answers.values():
        if type(replies) is not list:
            continue
        for tx_hash, reply in zip(wanted, replies, strict=True):
            raw = reply.get("result") if isinstance(reply, dict) else None
            if tx_hash in added or type(raw) is not dict:
                continue
            try:
                if str(raw.get("blockHash", "")).lower() != extra[tx_hash].lower():
                    continue
                (parsed,) = parse_full_block(
                    {"number": "0x0", "hash": extra[tx_hash], "transactions": [raw]}
                ).txs
            except (KeyError, ValueError, TypeError):
                continue
            if parsed.hash == tx_hash:
                added[tx_hash] = parsed
    for tx_hash, block_hash in extra.items():
        tx = added.get(tx_hash)
        if tx is None:
            log.error(
                "transaction 0x%s of block %s: no endpoint serves it", tx_hash.hex(), block_hash
            )
            continue
        block = out[block_hash]
        out[block_hash] = _union(block, FullBlock(block.number, block.hash, (tx,)))


async def full_blocks_by_number(chain: ChainReader, numbers: Sequence[int]) -> list[FullBlock]:
    """Blocks ``numbers`` of the reader's canonical chain, in order; raises ``ValueError`` for
    one the reader does not have or answers malformed (history must be complete). The chain is
    the first answering endpoint's; each block's transactions are then merged with what every
    endpoint answers for that block hash (:func:`full_blocks`): one that omits a transaction
    cannot hide it from ``broadcaster audit`` while another has the block."""
    results = await chain.batch([("eth_getBlockByNumber", [hex(n), True]) for n in numbers])
    out: list[FullBlock] = []
    for number, raw in zip(numbers, results, strict=True):
        if type(raw) is not dict:
            raise ValueError(f"block {number}: the RPC does not have it")
        block = parse_full_block(raw)
        if block.number != number:
            raise ValueError(f"block {number}: the RPC answered block {block.number}")
        out.append(block)
    merged = await full_blocks(chain, [b.hash for b in out])
    return [_union(b, merged[b.hash]) if b.hash in merged else b for b in out]

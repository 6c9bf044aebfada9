"""Blocks with their transactions, for the reconciler (read from head clients and public RPCs).

``eth_getBlockByHash(h, true)`` / ``eth_getBlockByNumber(n, true)`` carry each transaction's
``from``, so no signature is recovered here. A block answered with another hash than asked, or
malformed, is left out (and logged), as ``ChainReader.blocks`` does.

Live (:func:`full_blocks`), every read endpoint is asked and the transactions of every answer
with the right hash are merged: one RPC that omits a transaction of ours from a block (a lie
the block hash does not reveal: the transactions root is not recomputed here) or that does not
have the block yet cannot hide it while another endpoint answers honestly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from broadcaster.audit.reconcile import FullBlock, parse_full_block
from broadcaster.rpc.chain_reader import ChainReader, ChainReadError

__all__ = ["full_blocks", "full_blocks_by_number"]

log = logging.getLogger(__name__)


def _union(known: FullBlock, other: FullBlock) -> FullBlock:
    seen = {tx.hash for tx in known.txs}
    extra = tuple(tx for tx in other.txs if tx.hash not in seen)
    return FullBlock(known.number, known.hash, known.txs + extra) if extra else known


async def full_blocks(chain: ChainReader, hashes: Sequence[str]) -> dict[str, FullBlock]:
    """The blocks some read endpoint has, by the (lower-case) hash asked for, each with the
    union of the transactions every endpoint answered for it (see the module docstring)."""
    calls = [("eth_getBlockByHash", [h, True]) for h in hashes]
    answers = await chain.replies_each(calls)
    out: dict[str, FullBlock] = {}
    for url, replies in answers.items():
        if isinstance(replies, Exception):
            continue
        for wanted, reply in zip(hashes, replies, strict=True):
            raw = reply.get("result")
            if type(raw) is not dict:
                continue
            try:
                block = parse_full_block(raw)
            except (KeyError, ValueError, TypeError) as exc:
                log.warning("%s: malformed block %s: %s", url, wanted, exc)
                continue
            if block.hash != wanted.lower():
                log.warning("%s answered block %s for %s: ignored", url, block.hash, wanted)
                continue
            known = out.get(wanted)
            if known is None:
                out[wanted] = block
                continue
            seen = {tx.hash for tx in known.txs}
            extra = tuple(tx for tx in block.txs if tx.hash not in seen)
            if extra or len(block.txs) != len(known.txs):
                log.warning(
                    "%s disagrees on the transactions of block %s (%d vs %d): checked with"
                    " every transaction any endpoint answered",
                    url,
                    wanted,
                    len(block.txs),
                    len(known.txs),
                )
            out[wanted] = _union(known, block)
    if not out and hashes and all(isinstance(r, Exception) for r in answers.values()):
        errors = "; ".join(str(r) for r in answers.values())
        raise ChainReadError(f"no endpoint answered: {errors}")
    return out


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

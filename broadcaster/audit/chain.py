"""Blocks with their transactions, for the reconciler (read from head clients and public RPCs).

``eth_getBlockByHash(h, true)`` / ``eth_getBlockByNumber(n, true)`` carry each transaction's
``from``, so no signature is recovered here. A block answered with another hash than asked, or
malformed, is left out (and logged), as ``ChainReader.blocks`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from broadcaster.audit.reconcile import FullBlock, parse_full_block
from broadcaster.rpc.chain_reader import ChainReader

__all__ = ["full_blocks", "full_blocks_by_number"]

log = logging.getLogger(__name__)


async def full_blocks(chain: ChainReader, hashes: Sequence[str]) -> dict[str, FullBlock]:
    """The blocks a reader has, by the (lower-case) hash asked for."""
    results = await chain.batch([("eth_getBlockByHash", [h, True]) for h in hashes])
    out: dict[str, FullBlock] = {}
    for wanted, raw in zip(hashes, results, strict=True):
        if type(raw) is not dict:
            continue
        try:
            block = parse_full_block(raw)
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("malformed block %s: %s", wanted, exc)
            continue
        if block.hash != wanted.lower():
            log.warning("RPC answered block %s for %s: ignored", block.hash, wanted)
            continue
        out[wanted] = block
    return out


async def full_blocks_by_number(chain: ChainReader, numbers: Sequence[int]) -> list[FullBlock]:
    """Blocks ``numbers`` of the reader's canonical chain, in order; raises ``ValueError`` for
    one the reader does not have or answers malformed (history must be complete)."""
    results = await chain.batch([("eth_getBlockByNumber", [hex(n), True]) for n in numbers])
    out: list[FullBlock] = []
    for number, raw in zip(numbers, results, strict=True):
        if type(raw) is not dict:
            raise ValueError(f"block {number}: the RPC does not have it")
        block = parse_full_block(raw)
        if block.number != number:
            raise ValueError(f"block {number}: the RPC answered block {block.number}")
        out.append(block)
    return out

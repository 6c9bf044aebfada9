"""Blocks with their transactions, for the reconciler (read from head clients and public RPCs).

No answer is taken on its word (:mod:`broadcaster.audit.body`): every transaction's sender is
recovered from its signature (the RPC's ``from`` is ignored), and a block whose header hashes to
the hash asked for (the hash the trusted tracker holds) and whose transactions hash to the
header's ``transactionsRoot`` is *verified*: exactly the block's body. An answer proven wrong
(another hash, a header or body that does not match, a transaction whose fields do not encode to
its hash or whose signature does not recover) is refused, counted (``on_refused``, the
``broadcaster_audit_bad_blocks_total{reason}`` counter) and the block taken from another
endpoint.

Live (:func:`full_blocks`), one endpoint answers the full blocks; only a block it lacks, garbles,
lies about or cannot prove (a header this code cannot hash: a fork after Prague) is asked of
every read endpoint. A verified answer from any of them is the block; failing that, the
unverified answers are merged (every transaction any endpoint lists, each sender recovered), so
one RPC that omits a transaction of ours cannot hide it while another answers honestly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from broadcaster.audit.body import BodyRefused, check_block
from broadcaster.audit.reconcile import FullBlock
from broadcaster.rpc.chain_reader import ChainReader, ChainReadError

__all__ = ["full_blocks", "full_blocks_by_number", "proven_blocks"]

log = logging.getLogger(__name__)

OnRefused = Callable[[str, str], object]
"""``on_refused(url, reason)``: an endpoint's block answer was refused (a BODY_REFUSALS reason)."""


def _union(known: FullBlock, other: FullBlock) -> FullBlock:
    seen = {tx.hash for tx in known.txs}
    extra = tuple(tx for tx in other.txs if tx.hash not in seen)
    if not extra:
        return known
    return FullBlock(known.number, known.hash, known.txs + extra, known.parent_hash)


def _ignore(url: str, reason: str) -> None:
    return None


class _Found:
    """Blocks by the hash asked for: verified ones, and the merge of the unverified answers."""

    def __init__(self, on_refused: OnRefused) -> None:
        self.verified: dict[str, FullBlock] = {}
        self.unverified: dict[str, FullBlock] = {}
        self.unproven: dict[str, list[str]] = {}  # hash -> endpoints whose answer was unverified
        self.on_refused = on_refused

    def take(self, url: str, hashes: Sequence[str], replies: Sequence[Any]) -> None:
        for wanted, reply in zip(hashes, replies, strict=True):
            raw = reply.get("result") if isinstance(reply, dict) else None
            if type(raw) is not dict or wanted in self.verified:
                continue  # no such block there (yet), or already proven
            try:
                checked = check_block(raw, wanted)
            except BodyRefused as exc:
                log.warning("%s: block %s refused: %s", url, wanted, exc)
                self.on_refused(url, exc.reason)
                continue
            if checked.verified:
                self.verified[wanted] = checked.block
                self.unverified.pop(wanted, None)
            else:
                self.unproven.setdefault(wanted, []).append(url)
                known = self.unverified.get(wanted)
                block = checked.block
                self.unverified[wanted] = block if known is None else _union(known, block)

    def result(self) -> dict[str, FullBlock]:
        return {**self.unverified, **self.verified}

    def count_unverified(self) -> None:
        """Every block no endpoint could prove is counted, once per endpoint that answered it
        (``unverified``): the fallback must not let a liar that makes a block unprovable (an
        unknown header key, an item of an unknown type) drop a transaction in silence."""
        for wanted, urls in self.unproven.items():
            if wanted not in self.verified:
                for url in urls:
                    log.warning("%s: block %s could not be verified", url, wanted)
                    self.on_refused(url, "unverified")


async def _read(chain: ChainReader, hashes: Sequence[str], on_refused: OnRefused) -> _Found:
    """Every block of ``hashes`` from the endpoint that answered last, and the ones it could
    not prove from every other read endpoint (see the module docstring)."""
    found = _Found(on_refused)
    first_error: ChainReadError | None = None
    asked: tuple[str, ...] = ()
    try:
        primary = await chain.replies(_full_calls(hashes))
    except ChainReadError as exc:
        first_error = exc
    else:
        asked = (chain.last_url,)
        # Recovering every sender is CPU work (tens of microseconds a transaction): off the
        # event loop, where the reorg reaction runs.
        await asyncio.to_thread(found.take, chain.last_url, hashes, primary)
    rest = [h for h in hashes if h not in found.verified]
    if rest:
        answers = await chain.replies_each(_full_calls(rest), skip=asked)
        usable = {url: r for url, r in answers.items() if type(r) is list}
        if not usable and first_error is not None:
            raise ChainReadError(f"no endpoint answered: {first_error}")
        for url, replies in usable.items():
            await asyncio.to_thread(found.take, url, rest, replies)
    found.count_unverified()
    return found


async def full_blocks(
    chain: ChainReader, hashes: Sequence[str], on_refused: OnRefused = _ignore
) -> dict[str, FullBlock]:
    """The blocks some read endpoint has, by the (lower-case) hash asked for, each checked
    against its header, senders recovered (see the module docstring)."""
    hashes = [h.lower() for h in hashes]
    if not hashes:
        return {}
    return (await _read(chain, hashes, on_refused)).result()


async def proven_blocks(
    chain: ChainReader, hashes: Sequence[str], on_refused: OnRefused = _ignore
) -> dict[str, FullBlock]:
    """Only the blocks some read endpoint answered *verified* (header hash and
    ``transactionsRoot`` proven: exactly the block's body), by the (lower-case) hash asked for.

    For inclusion (DESIGN.md §5, issue 18): a transaction of ours is ``included`` only where a
    proven body holds it. Unlike :func:`full_blocks` there is no merged fallback: a merge of
    unprovable answers is a union of claims, and one liar's claim would make an unmined
    transaction look included. A block no endpoint proves is left out (the caller asks again);
    each unprovable answer is counted ``unverified``."""
    hashes = [h.lower() for h in hashes]
    if not hashes:
        return {}
    return dict((await _read(chain, hashes, on_refused)).verified)


def _full_calls(hashes: Sequence[str]) -> list[tuple[str, list[Any]]]:
    return [("eth_getBlockByHash", [h, True]) for h in hashes]


async def full_blocks_by_number(
    chain: ChainReader, numbers: Sequence[int], on_refused: OnRefused = _ignore
) -> list[FullBlock]:
    """The blocks at heights ``numbers`` of the canonical chain, in height order; raises
    ``ValueError`` for a height no endpoint has, or a block named there that no endpoint
    answers whole (history must be complete). Offline no tracker vouches for a hash: every
    read endpoint is asked which block is at each height, and *every* block any of them names
    there is read by hash and checked as live (:func:`full_blocks`). One endpoint that names a
    self-consistent block of its own making (or adds or omits a transaction) cannot change what
    ``broadcaster audit`` finds: the honest endpoint's block is checked too. A height where
    endpoints disagree (a reorg under way, or a liar) yields several blocks; a foreign
    transaction needs our key's signature, which no liar can forge."""
    calls = [("eth_getBlockByNumber", [hex(n), False]) for n in numbers]
    answers = await chain.replies_each(calls)
    named: dict[int, list[str]] = {n: [] for n in numbers}
    answered = False
    for url, replies in answers.items():
        if type(replies) is not list:
            continue
        answered = True
        for number, reply in zip(numbers, replies, strict=True):
            raw = reply.get("result")
            if type(raw) is not dict:
                continue  # this endpoint does not have it (lagging)
            block_hash = str(raw.get("hash", "")).lower()
            answered_number = raw.get("number")
            try:
                at = int(answered_number, 16) if isinstance(answered_number, str) else -1
            except ValueError:
                at = -1
            if at != number or str(answered_number)[:2] != "0x" or len(block_hash) != 66:
                log.warning("%s: block %d: a malformed or another block's answer", url, number)
                on_refused(url, "malformed")
                continue
            if block_hash not in named[number]:
                named[number].append(block_hash)
    if not answered:
        raise ChainReadError(f"no endpoint answered blocks {numbers[0]}..{numbers[-1]}")
    for number, hashes in named.items():
        if not hashes:
            raise ValueError(f"block {number}: the RPC does not have it")
    found = await full_blocks(chain, [h for n in numbers for h in named[n]], on_refused)
    out: list[FullBlock] = []
    for number in numbers:
        for block_hash in named[number]:
            block = found.get(block_hash)
            if block is None or block.number != number:
                raise ValueError(f"block {number} ({block_hash}): no endpoint answered it whole")
            out.append(block)
    return out

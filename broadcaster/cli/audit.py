"""``broadcaster audit --config FILE --from-block N [--to-block M] [--json]`` (DESIGN.md §6a, §7).

The live reconciler's check over history: every transaction from the config's accounts in blocks
``N..M`` (``M``: the chain's current block) of the canonical chain must be one the verified audit
copy in the journal holds, or a raw transaction the journal accepted as external; anything else
is foreign. Blocks come from the config's public RPCs and the head clients' HTTP endpoints
(``eth_getBlockByNumber(n, true)``). With ``--json``, JSON lines::

    {"event": "foreign", "hash": "0x..", "sender": "0x..", "nonce": 7, "block": 123}
    {"event": "summary", "blocks": 40, "ours": 12, "external": 1, "foreign": 1}

The journal's copy is verified again first (:func:`verify_copy`): the parent instance owns the
disk. Exit status: 0 when every transaction is accounted for, 1 when some are foreign, 2 when the
audit could not run (no journal, a copy that does not verify, no RPC answered, a block missing).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import IO, Any

import orjson

from broadcaster.audit.chain import full_blocks_by_number
from broadcaster.audit.reconcile import Foreign, Totals, ours_in, plan_block
from broadcaster.audit.verify import Anchor, AuditRefused, Head, verify_batch
from broadcaster.rpc.chain_reader import ChainReader, ChainReadError
from broadcaster.settings import Config, ConfigError, load_config
from nonce.audit_copy import AuditCopy
from nonce.errors import JournalError

__all__ = ["add_audit_arguments", "audit_range", "run_audit"]

BATCH = 50
"""Blocks asked for per JSON-RPC batch."""


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the service's TOML file")
    parser.add_argument("--from-block", type=int, required=True, help="first block to check")
    parser.add_argument("--to-block", type=int, help="last block to check (default: latest)")
    parser.add_argument("--json", action="store_true", help="print JSON lines (DESIGN.md §6a)")


def _read_urls(config: Config) -> list[str]:
    from broadcaster.service import _http_of

    return [r.url for r in config.rpcs] + [_http_of(c.url) for c in config.clients]


async def audit_range(
    copy: AuditCopy,
    chain: ChainReader,
    accounts: set[str],
    first: int,
    last: int | None,
) -> Totals:
    """Reconcile blocks ``first..last`` (``None``: the reader's latest); see the module doc."""
    if last is None:
        last = await chain.block_number()
    totals = Totals()
    for start in range(first, last + 1, BATCH):
        numbers = list(range(start, min(start + BATCH, last + 1)))
        for block in await full_blocks_by_number(chain, numbers):
            mine = [tx.hash for tx in ours_in(block, accounts)]
            signed = await asyncio.to_thread(copy.signed, mine) if mine else set()
            rest = [h for h in mine if h not in signed]
            external = await asyncio.to_thread(copy.external, rest) if rest else set()
            totals.add(plan_block(block, accounts, signed, external))
    return totals


def _describe(found: Foreign) -> str:
    return (
        f"FOREIGN 0x{found.hash.hex()} from {found.sender} nonce {found.nonce} in block"
        f" {found.block}: neither the verified audit log nor the journal holds it"
    )


def verify_copy(copy: AuditCopy) -> int:
    """Check the journal's copy again, as the streamer did when it stored it: the whole chain
    from seq 1, each segment opened by a stored (attested) key, up to the last stored signed
    head (the disk is the parent instance's; an edit there is caught here). Returns the seq
    verified; raises :class:`AuditRefused`."""
    heads = copy.heads()
    if not heads:
        return 0
    by_seq = {seq: Head(seq, digest, sig) for seq, digest, sig in heads}
    keys = copy.keys()
    anchor = Anchor()
    pending: list[Any] = []
    while True:
        rows = copy.lines(anchor.seq + len(pending) + 1)
        if not rows:
            break
        for row in rows:
            pending.append(row)
            head = by_seq.get(row.seq)
            if head is None:
                continue
            # A page end: verify up to its signed head, and the indexed columns the reconciler
            # reads (tx_hash, sender, nonce) against what was verified.
            signed = {"seq": head.seq, "hash": head.hash, "signature": head.signature}
            entries = [orjson.loads(r.entry) for r in pending]
            batch = verify_batch(anchor, {"entries": entries, "head": signed}, keys)
            for stored, checked in zip(pending, batch.entries, strict=True):
                indexed = (stored.hash, stored.kind, stored.tx_hash, stored.sender, stored.nonce)
                if indexed != (checked.hash, checked.kind, checked.tx_hash, checked.sender,
                               checked.nonce):  # fmt: skip
                    raise AuditRefused(
                        "tampered", f"seq {stored.seq}: indexed columns differ", stored.seq
                    )
            anchor, pending = batch.anchor, []
    if pending:  # the streamer stores a page's rows with its head: these no head vouches for
        raise AuditRefused(
            "tampered",
            f"seq {pending[0].seq}..{pending[-1].seq}: stored past the last signed head",
            pending[0].seq,
        )
    if anchor.seq != heads[-1][0]:
        raise AuditRefused(
            "not_extending",
            f"the copy verifies to seq {anchor.seq}, its last head is seq {heads[-1][0]}",
        )
    return anchor.seq


async def _reconcile(config: Config, path: Path, first: int, last: int | None) -> Totals:
    accounts = {a.address.lower() for a in config.accounts}
    copy = AuditCopy(path)
    try:
        await asyncio.to_thread(verify_copy, copy)
        async with ChainReader(_read_urls(config)) as chain:
            return await audit_range(copy, chain, accounts, first, last)
    finally:
        copy.close()


def _print(totals: Totals, as_json: bool, out: IO[str]) -> None:
    summary = totals.summary()
    if as_json:
        for found in totals.foreign:
            out.write(orjson.dumps(found.event()).decode() + "\n")
        out.write(orjson.dumps(summary).decode() + "\n")
    else:
        for found in totals.foreign:
            out.write(_describe(found) + "\n")
        verdict = "every transaction accounted for" if not totals.foreign else "FOREIGN FOUND"
        out.write(
            f"audit: {summary['blocks']} blocks, {summary['ours']} signed by the enclave (in the"
            f" verified audit log), {summary['external']} external, {summary['foreign']}"
            f" foreign: {verdict}\n"
        )
    out.flush()


def run_audit(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as exc:
        print(f"broadcaster audit: {exc}", file=sys.stderr)
        return 2
    if config.journal.path is None:
        print(
            "broadcaster audit: the audit copy is kept in a SQLite journal only;"
            " this config's journal is PostgreSQL",
            file=sys.stderr,
        )
        return 2
    path = Path(config.journal.path)
    if not path.exists():
        print(f"broadcaster audit: no journal at {path}", file=sys.stderr)
        return 2
    if args.from_block < 0 or (args.to_block is not None and args.to_block < args.from_block):
        print("broadcaster audit: need 0 <= --from-block <= --to-block", file=sys.stderr)
        return 2
    try:
        totals = asyncio.run(_reconcile(config, path, args.from_block, args.to_block))
    except AuditRefused as exc:
        print(
            f"broadcaster audit: the journal's audit copy does not verify: {exc}", file=sys.stderr
        )
        return 2
    except (ChainReadError, ValueError, JournalError) as exc:
        print(f"broadcaster audit: {exc}", file=sys.stderr)
        return 2
    _print(totals, args.json, out)
    return 1 if totals.foreign else 0

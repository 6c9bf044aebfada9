"""``broadcaster audit --config FILE --from-block N [--to-block M] [--json] [--keys FILE]`` (§6a).

The live reconciler's check over history: every transaction from the config's accounts in blocks
``N..M`` (``M``: the chain's current block) of the canonical chain must be one the verified audit
copy in the journal holds, or a raw transaction the journal accepted as external; anything else
is foreign. Blocks come from the config's public RPCs and the head clients' HTTP endpoints
(``eth_getBlockByNumber(n, true)``). With ``--json``, JSON lines::

    {"event": "foreign", "hash": "0x..", "sender": "0x..", "nonce": 7, "block": 123}
    {"event": "summary", "blocks": 40, "ours": 12, "external": 1, "foreign": 1}

The journal's copy (SQLite or PostgreSQL) is verified again first, every log it holds on its
own rows (:func:`verify_logs`: one log per instance's enclave with ``[ha]``; each one's result is
printed to stderr, and a log that does not verify is named): the parent instance owns the disk.
The log keys the copy trusts sit on that disk too (``audit_keys``): a parent that re-signs
a whole log with a key of its own and writes that key there passes a check against them. An
offline auditor pins the keys instead: ``--keys FILE`` (0x-hex public keys, one per line, ``#``
comments; the format of ``python -m enclave verify-log --keys``: the keys attestation vouched
for, e.g. ``log_public_key`` from the enclave's attested ``hello``) is then the only trust; a
copy with a segment signed by any other key is refused, naming that key. Exit status: 0 when
every transaction is accounted for, 1 when some are foreign, 2 when the audit could not run (no
journal, a copy that does not verify, a bad ``--keys`` file, no RPC answered, a block missing).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import coincurve
import orjson

from broadcaster.audit.chain import full_blocks_by_number
from broadcaster.audit.reconcile import Foreign, Totals, ours_in, plan_block
from broadcaster.audit.verify import Anchor, AuditRefused, Head, verify_batch
from broadcaster.rpc.chain_reader import ChainReader, ChainReadError
from broadcaster.settings import Config, ConfigError, load_config
from nonce.audit_copy import AuditCopyBase, open_audit_copy
from nonce.errors import JournalError

__all__ = [
    "KeysFileError",
    "LogCheck",
    "add_audit_arguments",
    "audit_range",
    "read_keys_file",
    "run_audit",
    "verify_copy",
    "verify_log",
    "verify_logs",
]

BATCH = 50
"""Blocks asked for per JSON-RPC batch."""


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the service's TOML file")
    parser.add_argument("--from-block", type=int, required=True, help="first block to check")
    parser.add_argument("--to-block", type=int, help="last block to check (default: latest)")
    parser.add_argument("--json", action="store_true", help="print JSON lines (DESIGN.md §6a)")
    parser.add_argument(
        "--keys",
        help="pin the audit log's keys: a file of 0x-hex log public keys, one per line (the"
        " attested ones); default: the keys stored in the journal",
    )


class KeysFileError(ValueError):
    """A ``--keys`` file that cannot be used (a clear message, exit 2)."""


def read_keys_file(path: str | Path) -> set[str]:
    """The log public keys of ``path``: 0x-hex, one per line, ``#`` starts a comment (the
    format of ``python -m enclave verify-log --keys``). Lower-case; at least one."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysFileError(f"--keys {path}: cannot read it: {exc}") from exc
    keys: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        key = line.split("#", 1)[0].strip().lower()
        if not key:
            continue
        digits = key[2:]
        if (
            not key.startswith("0x")
            or not digits
            or any(c not in "0123456789abcdef" for c in digits)
        ):
            raise KeysFileError(f"--keys {path} line {number}: not a 0x-hex public key: {key:.40}")
        if len(digits) not in (66, 130):
            raise KeysFileError(
                f"--keys {path} line {number}: a secp256k1 public key is 33 or 65 bytes,"
                f" got {len(digits) // 2}"
            )
        try:
            point = coincurve.PublicKey(bytes.fromhex(digits))
        except (ValueError, TypeError) as exc:
            raise KeysFileError(
                f"--keys {path} line {number}: not a secp256k1 public key: {key:.40}"
            ) from exc
        # The log names its keys uncompressed: a compressed pin is the same key.
        keys.add("0x" + point.format(compressed=False).hex())
    if not keys:
        raise KeysFileError(f"--keys {path}: no keys in it")
    return keys


def _read_urls(config: Config) -> list[str]:
    from broadcaster.service import _http_of

    return [r.url for r in config.rpcs] + [_http_of(c.url) for c in config.clients]


async def audit_range(
    copy: AuditCopyBase,
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


@dataclass(frozen=True, slots=True)
class LogCheck:
    """One log of the copy checked again: verified to ``seq``, or ``refused``."""

    log_id: str
    seq: int
    refused: AuditRefused | None = None


def verify_logs(copy: AuditCopyBase, pinned: set[str] | None = None) -> list[LogCheck]:
    """Every log the copy holds checked by :func:`verify_log`, each on its own rows: a log
    that does not verify is refused alone (the others' results stand)."""
    out: list[LogCheck] = []
    for log_id in copy.logs():
        try:
            out.append(LogCheck(log_id, verify_log(copy, log_id, pinned)))
        except AuditRefused as exc:
            out.append(LogCheck(log_id, 0, exc))
    return out


def verify_copy(copy: AuditCopyBase, pinned: set[str] | None = None) -> int:
    """Every log of the copy checked again (:func:`verify_logs`); the entries verified, all
    logs together, or the first refusal (naming its log) raised as :class:`AuditRefused`."""
    checks = verify_logs(copy, pinned)
    _raise_refused(checks)
    return sum(check.seq for check in checks)


def _raise_refused(checks: list[LogCheck]) -> None:
    for check in checks:
        if check.refused is not None:
            exc = check.refused
            raise AuditRefused(
                exc.reason, f"log {check.log_id[:18]}...: {exc.detail}", exc.seq
            ) from exc


def verify_log(copy: AuditCopyBase, log_id: str, pinned: set[str] | None = None) -> int:
    """Check one log of the journal's copy again, as the streamer did when it stored it: the
    whole chain from seq 1, each segment opened by a trusted key (``pinned``, else the stored
    attested ones), up to the last stored signed head (the disk is the parent instance's; an
    edit there is caught here). Reads only ``log_id``'s rows. Returns the seq verified; raises
    :class:`AuditRefused`."""
    heads = copy.heads(log_id)
    if not heads:
        first = copy.lines(log_id, 1, 1)
        if first:  # the streamer stores a page's rows with its head: no head vouches for these
            raise AuditRefused(
                "tampered", f"seq {first[0].seq}..: rows with no signed head", first[0].seq
            )
        return 0
    by_seq = {seq: Head(seq, digest, sig) for seq, digest, sig in heads}
    keys = copy.keys() if pinned is None else pinned
    anchor = Anchor()
    pending: list[Any] = []
    while True:
        rows = copy.lines(log_id, anchor.seq + len(pending) + 1)
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


async def _reconcile(
    config: Config,
    target: Path | str,
    first: int,
    last: int | None,
    pinned: set[str] | None = None,
    err: IO[str] | None = None,
) -> Totals:
    accounts = {a.address.lower() for a in config.accounts}
    copy = await asyncio.to_thread(open_audit_copy, target)
    try:
        try:
            checks = await asyncio.to_thread(verify_logs, copy, pinned)
            for check in checks:  # every log the journal holds (one per instance's enclave)
                verdict = "verified" if check.refused is None else f"REFUSED: {check.refused}"
                print(
                    f"broadcaster audit: log {check.log_id[:18]}... to seq {check.seq}: {verdict}",
                    file=err or sys.stderr,
                )
            _raise_refused(checks)
        except AuditRefused as exc:
            if pinned is not None and exc.reason == "untrusted_key":
                unpinned = sorted(copy.keys() - pinned)
                raise AuditRefused(
                    exc.reason,
                    f"{exc.detail}: signed by a log key --keys does not list (the journal holds"
                    f" {', '.join(k[:18] + '...' for k in unpinned) or 'no other key'})",
                    exc.seq,
                ) from exc
            raise
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
    target = config.journal.target
    if isinstance(target, Path) and not target.exists():
        print(f"broadcaster audit: no journal at {target}", file=sys.stderr)
        return 2
    if args.from_block < 0 or (args.to_block is not None and args.to_block < args.from_block):
        print("broadcaster audit: need 0 <= --from-block <= --to-block", file=sys.stderr)
        return 2
    pinned = None
    if getattr(args, "keys", None) is not None:
        try:
            pinned = read_keys_file(args.keys)
        except KeysFileError as exc:
            print(f"broadcaster audit: {exc}", file=sys.stderr)
            return 2
    try:
        totals = asyncio.run(_reconcile(config, target, args.from_block, args.to_block, pinned))
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

"""From a header object as a client sent it to the tracker's :class:`~heads.events.Head`.

:func:`parse_head` extracts ``number``, ``hash``, ``parentHash`` and ``timestamp`` and, when asked
to, recomputes ``keccak256(rlp(header))`` (:mod:`heads.header`). A verified header's
``baseFeePerGas`` (EIP-1559) comes along as ``Head.base_fee``; an unverifiable header's base fee is
dropped (a liar can put any base fee into a header nobody can check). Anything it cannot use
comes back as a :class:`~heads.events.Rejected` event, never as an exception.

The structural checks against the parent (DESIGN.md §3: ``number`` is the parent's + 1, the
``timestamp`` is not below the parent's) are :func:`structural_fault`; the tracker applies them
wherever the parent is known, verifiable header or not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from heads.events import Head, Rejected
from heads.header import HeaderError, verify_header_hash

__all__ = ["hash_match", "parse_head", "structural_fault"]

_HASH_TEXT: Final = re.compile(r"0x[0-9a-f]{64}")
_hash_match = _HASH_TEXT.fullmatch
hash_match: Final = _hash_match  # the one check a block hash gets (heads.fast_path uses it)
# The block hash parse_head checked last (a parent equal to it needs no regex).
_last_checked: list[str] = ["0x" + "0" * 64]


def _is_hash(value: object) -> bool:
    return type(value) is str and _hash_match(value) is not None


UINT64_MAX: Final = (1 << 64) - 1
"""A header's number and timestamp are uint64 (the yellow paper, §4.3); above it: malformed."""


def _quantity(value: object) -> int | None:
    if type(value) is str and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            return None
    if type(value) is int and value >= 0:
        return value
    return None


def parse_head(client: str, header: Mapping[str, Any], verify: bool) -> Head | Rejected:
    """Extract the tracker's fields and, when ``verify``, check the hash.

    Hashes are normalised to lowercase. A malformed header or one whose recomputed hash differs
    comes back as a :class:`Rejected` event.
    """
    try:
        block_hash = header["hash"]
        parent_hash = header["parentHash"]
        number_text = header["number"]
    except (KeyError, TypeError):
        return Rejected(client, None, "malformed", "missing number, hash or parentHash")
    # Clients send lowercase hex; anything else is normalised (or refused) off the fast path.
    if type(block_hash) is not str or _hash_match(block_hash) is None:
        block_hash = block_hash.lower() if type(block_hash) is str else block_hash
        if not _is_hash(block_hash):
            return Rejected(
                client, None, "malformed", f"hash is not 32 bytes of hex: {block_hash!r:.80}"
            )
    # The parent is nearly always the block checked last (the previous head): equal to a hash
    # that matched, it matches; only another string gets the regex.
    if type(parent_hash) is not str or (
        parent_hash != _last_checked[0] and _hash_match(parent_hash) is None
    ):
        parent_hash = parent_hash.lower() if type(parent_hash) is str else parent_hash
        if not _is_hash(parent_hash):
            return Rejected(client, block_hash, "malformed", f"bad parentHash {parent_hash!r:.80}")
    _last_checked[0] = block_hash
    if parent_hash == block_hash:
        # No block is its own parent (keccak has no such fixed point anyone can find); a walk up
        # the ancestry of one never ends: the fuzzer's anchor 0x00..00 with parent 0x00..00 ran
        # the service out of memory.
        return Rejected(client, block_hash, "malformed", "parentHash is the block's own hash")
    number = _quantity(number_text)
    if number is None or number > UINT64_MAX:
        # A block number is a uint64 in consensus; a bigger one from a hash-consistent liar was
        # a tip, and `broadcaster replay --json` died on it (orjson: beyond 64 bits).
        return Rejected(client, block_hash, "malformed", f"bad number {number_text!r:.80}")
    timestamp_text = header.get("timestamp")
    timestamp = None
    if timestamp_text is not None:
        try:
            timestamp = int(timestamp_text, 16) if timestamp_text[:2] == "0x" else None
        except (ValueError, TypeError):
            timestamp = _quantity(timestamp_text)
        if timestamp is None:
            timestamp = _quantity(timestamp_text)
        if timestamp is None or timestamp < 0 or timestamp > UINT64_MAX:
            return Rejected(
                client, block_hash, "malformed", f"bad timestamp {timestamp_text!r:.80}"
            )
    if verify and len(header) > 3:
        try:
            ok = verify_header_hash(header, block_hash)
        except HeaderError as exc:
            return Rejected(client, block_hash, "malformed", str(exc))
        if ok is False:
            return Rejected(client, block_hash, "hash_mismatch", "keccak256(rlp(header)) != hash")
        if ok:  # the hash covers baseFeePerGas: it is as true as the block (hex, checked above)
            fee = header.get("baseFeePerGas")
            if type(fee) is str:
                # "0x" hashes as zero (RLP's empty string) but is no quantity: int() raised
                # here, and one such header from a client crashed replay and the hub's reader.
                base_fee = _quantity(fee)
                if base_fee is None:
                    return Rejected(
                        client, block_hash, "malformed", f"bad baseFeePerGas {fee!r:.80}"
                    )
                return Head(number, block_hash, parent_hash, base_fee, timestamp)
    return Head(number, block_hash, parent_hash, None, timestamp)


def structural_fault(client: str, block: Head, parent: Head) -> Rejected | None:
    """DESIGN.md §3: a block whose parent is known must be numbered the parent's + 1 and, when
    both carry a timestamp, must not be stamped before the parent (header validity a hash
    check cannot give: a liar computes keccak too).

    The yellow paper (§4.3.4) wants the timestamp strictly above the parent's, and DESIGN.md §3
    says so; but the execution client this project runs, anvil 1.7.1, mints the first block of
    an ``anvil_reorg`` branch with its parent's timestamp (tests/fixtures/recordings/
    anvil-reorg-depth1.jsonl.gz: blocks 11 and 12 both at 1700000132). A strict check would
    refuse every real anvil reorg, so an equal timestamp passes and only an earlier one is
    refused (docs/chain-tracking.md). A liar gains nothing from the one-second difference.
    """
    if block.number != parent.number + 1:
        return Rejected(
            client,
            block.hash,
            "bad_number",
            f"number {block.number} on parent {parent.hash} numbered {parent.number}",
        )
    if (
        block.timestamp is not None
        and parent.timestamp is not None
        and block.timestamp < parent.timestamp
    ):
        return Rejected(
            client,
            block.hash,
            "bad_timestamp",
            f"timestamp {block.timestamp} below the parent's {parent.timestamp}",
        )
    return None

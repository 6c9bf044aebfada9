"""parse_head (heads.parse) accepts and refuses exactly what the two-regex version did.

The parent hash skips the regex when it equals the block hash checked last (heads.parse,
``_last_checked``); the reference below is the code from before that change, copied verbatim.
Sequences of headers (so the one-slot cache holds valid, lowercased and refused hashes in turn)
of random and malformed hex strings must give equal results, parsed values included.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping
from typing import Any, Final

from hypothesis import given, settings
from hypothesis import strategies as st

import heads.parse
from heads.events import Head, Rejected
from heads.header import HeaderError, verify_header_hash
from heads.parse import UINT64_MAX, _quantity, parse_head

_HASH_TEXT: Final = re.compile(r"0x[0-9a-f]{64}")
_hash_match = _HASH_TEXT.fullmatch


def _is_hash(value: object) -> bool:
    return type(value) is str and _hash_match(value) is not None


def reference_parse_head(client: str, header: Mapping[str, Any], verify: bool) -> Head | Rejected:
    """parse_head as it was before the one-slot cache (two regexes per head)."""
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
    if type(parent_hash) is not str or _hash_match(parent_hash) is None:
        parent_hash = parent_hash.lower() if type(parent_hash) is str else parent_hash
        if not _is_hash(parent_hash):
            return Rejected(client, block_hash, "malformed", f"bad parentHash {parent_hash!r:.80}")
    if parent_hash == block_hash:
        # No block is its own parent (keccak has no such fixed point anyone can find); a walk up
        # the ancestry of one never ends: the fuzzer's anchor 0x00..00 with parent 0x00..00 ran
        # the service out of memory.
        return Rejected(client, block_hash, "malformed", "parentHash is the block's own hash")
    number = _quantity(number_text)
    if number is None or number > UINT64_MAX:  # (the uint64 bound came later, to both)
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
                return Head(number, block_hash, parent_hash, int(fee, 16), timestamp)
    return Head(number, block_hash, parent_hash, None, timestamp)


_BASE = "0x" + "ab" * 32
_HASHES = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex()),
    st.sampled_from(
        [_BASE, _BASE.upper(), "0X" + _BASE[2:], _BASE + " ", "", "0x", "0x" + "0" * 64]
    ),
    st.text(alphabet="0123456789abcdefABCDEFx \n_", min_size=60, max_size=68),
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda t: "0x" + t),
    st.integers(),
    st.none(),
    st.lists(st.integers(), max_size=1),
)
_HEADERS = st.fixed_dictionaries(
    {"hash": _HASHES, "parentHash": _HASHES},
    optional={
        "number": st.one_of(st.sampled_from(["0x1", "0x01", "0x", "0x1 ", "1", "0xg"]), _HASHES),
        "timestamp": st.one_of(st.sampled_from(["0x10", "0x", "16", "0x-1"]), st.integers()),
    },
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(_HEADERS, st.booleans()), min_size=1, max_size=6))
def test_parse_head_agrees_with_the_two_regex_version_on_sequences_of_headers(
    headers: list[tuple[dict[str, Any], bool]],
) -> None:
    previous: str | None = None
    for header, chain in headers:
        if chain and previous is not None:
            header = {**header, "parentHash": previous}  # the common case: the last one's child
        header.setdefault("number", "0x1")
        assert parse_head("x", header, True) == reference_parse_head("x", header, True)
        assert _is_hash(heads.parse._last_checked[0])  # the cache only ever holds a valid hash
        block_hash = header.get("hash")
        previous = block_hash if type(block_hash) is str else None


def test_a_parent_equal_to_the_last_refused_hash_is_still_refused() -> None:
    bad = "0x" + "zz" * 32
    assert (
        type(parse_head("x", {"hash": bad, "parentHash": "0x" + "11" * 32, "number": "0x1"}, True))
        is Rejected
    )
    got = parse_head("x", {"hash": "0x" + "22" * 32, "parentHash": bad, "number": "0x1"}, True)
    assert type(got) is Rejected and got.detail.startswith("bad parentHash")
    assert (
        type(
            reference_parse_head(
                "x", {"hash": "0x" + "22" * 32, "parentHash": bad, "number": "0x1"}, True
            )
        )
        is Rejected
    )
    ok = parse_head(
        "x", {"hash": "0x" + "33" * 32, "parentHash": "0x" + "22" * 32, "number": "0x1"}, True
    )
    assert ok == Head(1, "0x" + "33" * 32, "0x" + "22" * 32, None, None)


def test_in_a_fresh_interpreter_the_first_parent_gets_the_full_check() -> None:
    """Before any hash was checked the one-slot cache must hold a valid hash (no empty string)."""
    code = (
        "from heads.parse import parse_head\n"
        "for parent in ('', '0x', '0x' + 'G' * 64):\n"
        "    header = {'hash': '0x' + '11' * 32, 'parentHash': parent, 'number': '0x1'}\n"
        "    got = parse_head('x', header, True)\n"
        "    print(type(got).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["Rejected", "Rejected", "Rejected"]


def test_a_number_or_timestamp_beyond_uint64_is_malformed() -> None:
    """Consensus has them as uint64: a hash-consistent liar's 2**64 head was a tip, and
    `broadcaster replay --json` died printing it (review of replay8)."""
    base = {"hash": "0x" + "11" * 32, "parentHash": "0x" + "22" * 32}
    top = {**base, "number": hex(UINT64_MAX), "timestamp": hex(UINT64_MAX)}
    assert isinstance(parse_head("x", top, False), Head)
    for field in ("number", "timestamp"):
        over = {**top, field: hex(UINT64_MAX + 1)}
        rejected = parse_head("x", over, False)
        assert isinstance(rejected, Rejected) and rejected.reason == "malformed", rejected
        assert field in rejected.detail

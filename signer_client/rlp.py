"""Recursive Length Prefix (RLP) encoding, hand-written for the signing hot path.

Implements the Ethereum Yellow Paper, appendix B, for the shapes a transaction needs: byte
strings and (nested) lists of them. Integers are encoded as big-endian byte strings with no
leading zeros (a zero is the empty string). ``pyrlp`` is ~5x slower per transaction; the property
tests in ``tests/signer_client`` pin these functions to eth-account's output.

Decoding is strict (canonical only): a non-minimal length prefix, a single byte below 0x80
wrapped in a prefix, or trailing bytes are rejected, so one byte string decodes to exactly one
value and re-encodes to itself.
"""

from __future__ import annotations

from typing import TypeAlias

from signer_client.errors import TxDecodeError

__all__ = [
    "Item",
    "decode",
    "encode_bytes",
    "encode_int",
    "encode_list_payload",
    "int_bytes",
    "list_at",
    "string_at",
    "strings_at",
]

Item: TypeAlias = "bytes | list[Item]"


def int_bytes(value: int) -> bytes:
    """Big-endian bytes of a non-negative int, no leading zeros (``0`` -> ``b""``)."""
    return value.to_bytes((value.bit_length() + 7) >> 3, "big")


def _length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes((offset + length,))
    raw = int_bytes(length)
    return bytes((offset + 55 + len(raw),)) + raw


# Precomputed one-byte encodings: building ``bytes((x,))`` per field costs more than the field.
_SHORT_PREFIX = [bytes((0x80 + n,)) for n in range(56)]
_LIST_PREFIX = [bytes((0xC0 + n,)) for n in range(56)]
_SMALL = [b"\x80"] + [bytes((v,)) for v in range(1, 0x80)]


def encode_bytes(data: bytes) -> bytes:
    """RLP of one byte string."""
    n = len(data)
    if n == 1 and data[0] < 0x80:
        return data
    if n < 56:
        return _SHORT_PREFIX[n] + data
    if n < 256:
        return bytes((0xB8, n)) + data
    return _length_prefix(n, 0x80) + data


def encode_int(value: int) -> bytes:
    """RLP of a non-negative integer (as its minimal big-endian byte string)."""
    if 0 <= value < 0x80:
        return _SMALL[value]
    n = (value.bit_length() + 7) >> 3  # a negative value fails in to_bytes (OverflowError)
    if n < 56:  # always, for the 256-bit quantities of a transaction
        return _SHORT_PREFIX[n] + value.to_bytes(n, "big")
    return encode_bytes(int_bytes(value))


def encode_list_payload(payload: bytes) -> bytes:
    """Wrap already-encoded, concatenated items in a list prefix."""
    n = len(payload)
    if n < 56:
        return _LIST_PREFIX[n] + payload
    if n < 256:  # a typical signed transaction
        return bytes((0xF8, n)) + payload
    return _length_prefix(n, 0xC0) + payload


def _decode_at(data: bytes, pos: int, end: int) -> tuple[Item, int]:
    """Decode one item starting at ``pos``; return it and the position after it."""
    if pos >= end:
        raise TxDecodeError("rlp: unexpected end of input")
    b0 = data[pos]
    if b0 < 0x80:
        return data[pos : pos + 1], pos + 1
    if b0 < 0xB8:
        n = b0 - 0x80
        start = pos + 1
        if start + n > end:
            raise TxDecodeError("rlp: string runs past the end")
        if n == 1 and data[start] < 0x80:
            raise TxDecodeError("rlp: non-canonical single byte")
        return data[start : start + n], start + n
    if b0 < 0xC0:
        n, start = _long_length(data, pos, b0 - 0xB7, end)
        if start + n > end:
            raise TxDecodeError("rlp: string runs past the end")
        return data[start : start + n], start + n
    if b0 < 0xF8:
        n = b0 - 0xC0
        start = pos + 1
    else:
        n, start = _long_length(data, pos, b0 - 0xF7, end)
    stop = start + n
    if stop > end:
        raise TxDecodeError("rlp: list runs past the end")
    items: list[Item] = []
    while start < stop:
        item, start = _decode_at(data, start, stop)
        items.append(item)
    return items, stop


def _long_length(data: bytes, pos: int, size: int, end: int) -> tuple[int, int]:
    start = pos + 1 + size
    if start > end:
        raise TxDecodeError("rlp: length runs past the end")
    raw = data[pos + 1 : start]
    if raw[0] == 0:
        raise TxDecodeError("rlp: length with leading zero")
    n = int.from_bytes(raw, "big")
    if n < 56:
        raise TxDecodeError("rlp: long form used for a short length")
    return n, start


def decode(data: bytes) -> Item:
    """Decode exactly one RLP item spanning all of ``data``."""
    item, pos = _decode_at(data, 0, len(data))
    if pos != len(data):
        raise TxDecodeError("rlp: trailing bytes")
    return item


# ---------------------------------------------------------------- flat readers
#
# The transaction decoders on the hot paths know the shape they expect (a list of byte strings,
# maybe one nested list at the end), so they walk it with these two instead of building the
# generic nested ``Item``. Both are as strict as ``decode``: canonical prefixes only.


def string_at(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    """The byte string whose RLP starts at ``pos`` (before ``end``), and the position after it."""
    if pos >= end:
        raise TxDecodeError("rlp: unexpected end of input")
    b0 = data[pos]
    if b0 < 0x80:
        return data[pos : pos + 1], pos + 1
    if b0 < 0xB8:
        stop = pos + 1 + b0 - 0x80
        if stop > end:
            raise TxDecodeError("rlp: string runs past the end")
        if b0 == 0x81 and data[pos + 1] < 0x80:
            raise TxDecodeError("rlp: non-canonical single byte")
        return data[pos + 1 : stop], stop
    if b0 < 0xC0:
        n, start = _long_length(data, pos, b0 - 0xB7, end)
        if start + n > end:
            raise TxDecodeError("rlp: string runs past the end")
        return data[start : start + n], start + n
    raise TxDecodeError("rlp: expected a byte string, found a list")


def list_at(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """``(start, stop)`` of the payload of the list whose RLP starts at ``pos`` (before ``end``)."""
    if pos >= end:
        raise TxDecodeError("rlp: unexpected end of input")
    b0 = data[pos]
    if b0 < 0xC0:
        raise TxDecodeError("rlp: expected a list, found a byte string")
    if b0 < 0xF8:
        start = pos + 1
        stop = start + b0 - 0xC0
    else:
        n, start = _long_length(data, pos, b0 - 0xF7, end)
        stop = start + n
    if stop > end:
        raise TxDecodeError("rlp: list runs past the end")
    return start, stop


def strings_at(data: bytes, pos: int, end: int) -> tuple[list[bytes], int]:
    """Consecutive byte strings from ``pos``: stops at ``end`` or at the first list item.

    Returns the strings and the position where it stopped. One flat loop: a transaction's
    fields are mostly short strings, and a call per field costs more than reading it.
    """
    out: list[bytes] = []
    append = out.append
    while pos < end:
        b0 = data[pos]
        if b0 < 0x80:
            append(data[pos : pos + 1])
            pos += 1
        elif b0 < 0xB8:
            start = pos + 1
            pos = start + b0 - 0x80
            if pos > end:
                raise TxDecodeError("rlp: string runs past the end")
            if b0 == 0x81 and data[start] < 0x80:
                raise TxDecodeError("rlp: non-canonical single byte")
            append(data[start:pos])
        elif b0 < 0xC0:
            n, start = _long_length(data, pos, b0 - 0xB7, end)
            pos = start + n
            if pos > end:
                raise TxDecodeError("rlp: string runs past the end")
            append(data[start:pos])
        else:
            break
    return out, pos

"""The two byte checks on the signing round trip, written flat for speed (DESIGN.md section 6).

* :func:`decode_payload` is what the enclave reads (protocol 2): the unsigned signing payload,
  decoded into the fields its policy checks.
* :func:`split_signed` is the client's cheap reply check: the returned raw transaction must be our
  own encoding of the request followed by a canonical signature.

Both know exactly what shape to expect, so they walk the bytes flat instead of building the
generic nested RLP items (``txcodec.decode_raw`` remains the general, obvious decoder). Each is
strict in the only sense that matters for safety: it accepts ``data`` only when ``data`` is the one
canonical encoding of what it returns. ``tests/signer_client/test_wire_codec.py`` pins that against
``signing_payload`` / ``encode_signed`` over random and mutated inputs.
"""

from __future__ import annotations

from typing import Any

from signer_client.errors import TxDecodeError
from signer_client.rlp import decode, list_at, string_at, strings_at
from signer_client.txcodec import TxFields, decode_access_list, typed_fields

__all__ = ["decode_payload", "split_signed"]


def _uint_at(data: bytes, pos: int, end: int, name: str, max_bytes: int) -> tuple[int, int]:
    try:
        item, pos = string_at(data, pos, end)
    except TxDecodeError as exc:
        raise TxDecodeError(f"{name}: {exc.reason}") from None
    if item[:1] == b"\x00":
        raise TxDecodeError(f"{name}: integer with leading zero")
    if len(item) > max_bytes:
        raise TxDecodeError(f"{name}: more than {max_bytes * 8} bits")
    return int.from_bytes(item, "big"), pos


_LEGACY = (("nonce", 8), ("gasPrice", 32), ("gas", 8), ("to", 0), ("value", 32), ("data", 0),
           ("chainId", 8), ("", 0), ("", 0))  # fmt: skip
_TYPE1 = (("chainId", 8), ("nonce", 8), ("gasPrice", 32), ("gas", 8), ("to", 0), ("value", 32),
          ("data", 0))  # fmt: skip
_TYPE2 = (("chainId", 8), ("nonce", 8), ("maxPriorityFeePerGas", 32), ("maxFeePerGas", 32),
          ("gas", 8), ("to", 0), ("value", 32), ("data", 0))  # fmt: skip
_from_bytes = int.from_bytes


def _bad_item(items: list[bytes], shape: tuple[tuple[str, int], ...]) -> TxDecodeError:
    """Name the first field of a decoded payload that is not a canonical value (slow path)."""
    for item, (name, max_bytes) in zip(items, shape, strict=False):
        if name == "to" and len(item) not in (0, 20):
            return TxDecodeError("to: expected 0 or 20 bytes")
        if max_bytes and item[:1] == b"\x00":
            return TxDecodeError(f"{name}: integer with leading zero")
        if max_bytes and len(item) > max_bytes:
            return TxDecodeError(f"{name}: more than {max_bytes * 8} bits")
    return TxDecodeError("legacy payload: expected chainId, 0, 0 after data")


def decode_payload(payload: bytes) -> tuple[TxFields, bytes]:
    """Inverse of :func:`signing_payload`: ``(fields, body)`` with ``body == body_items(fields)``.

    Strict: accepted only if ``signing_payload(fields) == payload`` exactly (canonical RLP, no
    trailing bytes, integers without leading zeros, nonce / gas / chain id within 64 bits and the
    other quantities within 256, ``to`` of 0 or 20 bytes, EIP-155's two trailing zeros). So the
    fields a policy checks are exactly the ones whose hash, ``keccak256(payload)``, gets signed.
    """
    n = len(payload)
    if n == 0:
        raise TxDecodeError("empty signing payload")
    tx_type = payload[0]
    if tx_type >= 0xC0:  # legacy: [nonce, gasPrice, gas, to, value, data(, chainId, 0, 0)]
        start, end = list_at(payload, 0, n)
        if end != n:
            raise TxDecodeError("rlp: trailing bytes")
        items, pos = strings_at(payload, start, end)
        if pos != end or len(items) not in (6, 9):
            raise TxDecodeError("legacy payload: expected 6 or 9 byte strings")
        nonce, price, gas, to, value, data = items[:6]
        chain: bytes | None = items[6] if len(items) == 9 else None
        if (
            len(nonce) > 8 or len(gas) > 8 or len(price) > 32 or len(value) > 32
            or b"\x00" in (nonce[:1], price[:1], gas[:1], value[:1])
            or (len(to) != 20 and to)
            or (chain is not None and (
                len(chain) > 8 or chain[:1] == b"\x00" or items[7] or items[8]
            ))
        ):  # fmt: skip
            raise _bad_item(items, _LEGACY)
        fields = TxFields(
            0, None if chain is None else _from_bytes(chain), _from_bytes(nonce),
            _from_bytes(gas), to, _from_bytes(value), data, _from_bytes(price), None, None, (),
        )  # fmt: skip
        if chain is None:
            return fields, payload[start:end]
        chain_rlp = 1 if len(chain) == 1 and chain[0] < 0x80 else 1 + len(chain)
        return fields, payload[start : end - chain_rlp - 2]  # minus rlp(chainId), 0x80, 0x80
    if tx_type not in (1, 2, 3, 4):
        raise TxDecodeError(f"unsupported transaction type {tx_type}")
    start, end = list_at(payload, 1, n)
    if end != n:
        raise TxDecodeError("rlp: trailing bytes")
    if tx_type >= 3:
        # Blob and set-code transactions: the generic strict decoder (canonical RLP), then the
        # shared field checks. Rarer than 1559 by far; the flat walk is not worth a third copy.
        typed = decode(payload[1:])
        if not isinstance(typed, list):
            raise TxDecodeError(f"type-{tx_type} payload: expected a list")
        return typed_fields(tx_type, typed), payload[start:end]
    items, pos = strings_at(payload, start, end)
    head: tuple[Any, ...]
    if tx_type == 2:
        if len(items) != 8:
            raise TxDecodeError("type-2 payload: expected 8 byte strings, then the access list")
        chain, nonce, tip, fee, gas, to, value, data = items
        if (
            len(chain) > 8 or len(nonce) > 8 or len(gas) > 8
            or len(tip) > 32 or len(fee) > 32 or len(value) > 32
            or b"\x00" in (chain[:1], nonce[:1], tip[:1], fee[:1], gas[:1], value[:1])
            or (len(to) != 20 and to)
        ):  # fmt: skip
            raise _bad_item(items, _TYPE2)
        head = (2, _from_bytes(chain), _from_bytes(nonce), _from_bytes(gas), to,
                _from_bytes(value), data, None, _from_bytes(fee), _from_bytes(tip))  # fmt: skip
    else:
        if len(items) != 7:
            raise TxDecodeError("type-1 payload: expected 7 byte strings, then the access list")
        chain, nonce, price, gas, to, value, data = items
        if (
            len(chain) > 8 or len(nonce) > 8 or len(gas) > 8 or len(price) > 32 or len(value) > 32
            or b"\x00" in (chain[:1], nonce[:1], price[:1], gas[:1], value[:1])
            or (len(to) != 20 and to)
        ):  # fmt: skip
            raise _bad_item(items, _TYPE1)
        head = (1, _from_bytes(chain), _from_bytes(nonce), _from_bytes(gas), to,
                _from_bytes(value), data, _from_bytes(price), None, None)  # fmt: skip
    rest = payload[pos:end]
    # The access list is the last item: ``decode`` refuses anything after it.
    access_list = () if rest == b"\xc0" else decode_access_list(decode(rest))
    return TxFields(*head, access_list), payload[start:end]  # type: ignore[call-arg]


_ANY = 1 << 16  # signature integers: any length here, the range checks come after


def split_signed(raw: bytes, f: TxFields, body: bytes) -> tuple[int, int, int] | None:
    """``(y_parity, r, s)`` if ``raw == encode_signed(f, y_parity, r, s, body)``, else ``None``.

    The cheap half of reply verification: instead of decoding ``raw`` into fields and comparing
    them one by one, check that it is our own encoding of the request (``body`` is
    ``body_items(f)``) followed by a canonical signature. Every field then matches by construction.
    Never raises; the caller explains a ``None`` with the slow path (``decode_raw`` + compare).
    """
    n = len(raw)
    tx_type = f.type
    try:
        if tx_type == 0:
            start, stop = list_at(raw, 0, n)
        else:
            if raw[0] != tx_type:
                return None
            start, stop = list_at(raw, 1, n)
        pos = start + len(body)
        if stop != n or raw[start:pos] != body:
            return None
        if (
            tx_type
            and stop - pos == 67
            and (raw[pos] == 0x80 or raw[pos] == 0x01)
            and raw[pos + 1] == 0xA0
            and raw[pos + 2]
            and raw[pos + 34] == 0xA0
            and raw[pos + 35]
        ):
            # The shape of all but ~1 in 85 signatures: yParity as one byte (0x80 is 0, 0x01 is
            # 1), then r and s as 32-byte strings without a leading zero byte, which is their one
            # canonical encoding. Read in place: half the cost of three item parses. Any other
            # shape (a short r or s, a legacy v) takes the general path below.
            return (
                raw[pos] & 1,
                _from_bytes(raw[pos + 2 : pos + 34], "big"),
                _from_bytes(raw[pos + 35 : stop], "big"),
            )
        v, pos = _uint_at(raw, pos, stop, "v", _ANY)
        r, pos = _uint_at(raw, pos, stop, "r", _ANY)
        s, pos = _uint_at(raw, pos, stop, "s", _ANY)
    except (TxDecodeError, IndexError):
        return None
    if pos != stop:
        return None
    if tx_type == 0:
        v -= 27 if f.chain_id is None else f.chain_id * 2 + 35
    if v != 0 and v != 1:
        return None
    return v, r, s

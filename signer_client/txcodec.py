"""Transaction encoding: legacy (EIP-155), EIP-2930, EIP-1559, EIP-4844, EIP-7702; byte-exact.

* Legacy, EIP-155: signing payload ``rlp([nonce, gasPrice, gas, to, value, data, chainId, 0, 0])``,
  raw ``rlp([nonce, gasPrice, gas, to, value, data, v, r, s])`` with ``v = chainId*2 + 35 + y``
  (``27 + y`` without a chain id, pre-EIP-155).
* EIP-4844 (type 3) in its canonical form (what is signed and hashed): the 1559 fields, then
  ``maxFeePerBlobGas`` and ``blobVersionedHashes``; ``to`` may not be empty. The network form
  with the blob sidecar is built by the service around these bytes, never signed.
* EIP-7702 (type 4): the 1559 fields, then ``authorizationList`` (``signer_client.authorization``);
  ``to`` may not be empty, the list not either.
* EIP-2930 (type 1) and the types above, enveloped per EIP-2718: payload
  ``type || rlp(fields)``, raw ``type || rlp(fields + [yParity, r, s])``; the transaction hash is
  ``keccak256(raw)``.

This module is pure (no key, no I/O). :class:`TxFields` is the normalised value both sides compare;
:func:`tx_from_dict` accepts eth-account style dicts with ints or 0x-hex quantities (the wire uses
hex, since JSON integers stop at 64 bits) and :func:`tx_to_wire` produces that form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import sha3

from signer_client.authorization import (
    Authorization,
    authorization_to_wire,
    decode_authorizations,
    decode_blob_hashes,
    encode_authorizations,
    encode_blob_hashes,
    parse_authorizations,
    parse_blob_hashes,
    raw_bytes,
)
from signer_client.errors import TxDecodeError, TxFieldError
from signer_client.rlp import Item, decode, encode_bytes, encode_int, encode_list_payload

__all__ = [
    "SECP256K1_HALF_N",
    "SECP256K1_N",
    "AccessList",
    "DecodedTx",
    "TxFields",
    "body_items",
    "decode_access_list",
    "decode_raw",
    "encode_signed",
    "keccak",
    "parse_address",
    "signing_hash",
    "signing_payload",
    "tx_from_dict",
    "tx_to_wire",
    "typed_fields",
]

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2
_UINT256 = 1 << 256
_UINT64 = 1 << 64

AccessList = tuple[tuple[bytes, tuple[bytes, ...]], ...]

_keccak = sha3.keccak_256


def keccak(data: bytes) -> bytes:
    """Keccak-256 (the pre-NIST padding Ethereum uses)."""
    return _keccak(data).digest()  # type: ignore[no-any-return]


class TxFields(NamedTuple):
    """One unsigned transaction. ``gas_price`` is set for types 0 and 1, the 1559 fees for 2-4;
    ``max_fee_per_blob_gas`` and ``blob_hashes`` for type 3, ``authorizations`` for type 4.

    A ``NamedTuple`` rather than a frozen dataclass: immutable and compared field by field all the
    same, but built in 0.3 us instead of 1.6 us (a frozen dataclass's ``__init__`` goes through
    ``object.__setattr__`` once per field), and it is built on every sign, decode and verify.
    """

    type: int
    chain_id: int | None
    nonce: int
    gas: int
    to: bytes  # 20 bytes, or b"" for contract creation
    value: int
    data: bytes
    gas_price: int | None = None
    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    access_list: AccessList = ()
    max_fee_per_blob_gas: int | None = None
    blob_hashes: tuple[bytes, ...] = ()
    authorizations: tuple[Authorization, ...] = ()

    @property
    def fee_cap(self) -> int:
        """The most the sender may pay per gas (``gasPrice`` or ``maxFeePerGas``)."""
        return self.gas_price if self.max_fee_per_gas is None else self.max_fee_per_gas  # type: ignore[return-value]

    @property
    def tip_cap(self) -> int:
        """The tip per gas (``gasPrice`` or ``maxPriorityFeePerGas``), as geth's txpool reads it."""
        if self.max_priority_fee_per_gas is None:
            return self.gas_price  # type: ignore[return-value]
        return self.max_priority_fee_per_gas


class DecodedTx(NamedTuple):
    """A signed transaction read back from raw bytes."""

    fields: TxFields
    y_parity: int
    r: int
    s: int


# ---------------------------------------------------------------- dict -> TxFields


_KNOWN_KEYS = frozenset(
    {
        "type",
        "chainId",
        "nonce",
        "gas",
        "to",
        "value",
        "data",
        "input",
        "gasPrice",
        "maxFeePerGas",
        "maxPriorityFeePerGas",
        "accessList",
        "maxFeePerBlobGas",
        "blobVersionedHashes",
        "authorizationList",
        "from",
    }
)


def _quantity(tx: Mapping[str, Any], key: str, limit: int = _UINT256) -> int:
    raw = tx.get(key)
    if type(raw) is int:  # what the service passes: checked first, it is the hot path
        value = raw
    elif type(raw) is str and raw[:2] == "0x":  # the JSON form
        try:
            value = int(raw, 16)
        except ValueError:
            raise TxFieldError(key, f"not a hex quantity: {raw!r}") from None
    elif raw is None:
        raise TxFieldError(key, "missing")
    else:
        raise TxFieldError(key, f"expected an int or 0x-hex string, got {raw!r}")
    if value < 0 or value >= limit:
        raise TxFieldError(key, f"out of range: {value}")
    return value


# One parser for 0x-hex or bytes fields, the authorization module's (it sits below this one:
# importing from here would be circular).
_hex_bytes = raw_bytes


def parse_address(raw: object, key: str = "address") -> bytes:
    """A 20-byte address from a 0x-hex string (any case) or bytes."""
    out = _hex_bytes(raw, key)
    if len(out) != 20:
        raise TxFieldError(key, f"an address is 20 bytes, got {len(out)}")
    return out


def _access_list(raw: object) -> AccessList:
    if raw is None or raw == []:
        return ()
    if not isinstance(raw, list | tuple):
        raise TxFieldError("accessList", "expected a list")
    out = []
    for i, entry in enumerate(raw):
        if isinstance(entry, Mapping):
            address, keys = entry.get("address"), entry.get("storageKeys", ())
        elif isinstance(entry, list | tuple) and len(entry) == 2:
            address, keys = entry
        else:
            raise TxFieldError(f"accessList[{i}]", "expected {address, storageKeys}")
        slots = []
        for j, key in enumerate(keys):
            slot = _hex_bytes(key, f"accessList[{i}].storageKeys[{j}]")
            if len(slot) != 32:
                raise TxFieldError(f"accessList[{i}].storageKeys[{j}]", "a storage key is 32 bytes")
            slots.append(slot)
        out.append((parse_address(address, f"accessList[{i}].address"), tuple(slots)))
    return tuple(out)


def _u(tx: Mapping[str, Any], key: str, limit: int = _UINT256) -> int:
    """``_quantity`` with the common case (a plain in-range int) answered without a call."""
    value = tx.get(key)
    if type(value) is int and 0 <= value < limit:
        return value
    return _quantity(tx, key, limit)


_address_cache: dict[str, bytes] = {}


def _to_address(raw: object) -> bytes:
    if raw in (None, "", b"", "0x"):
        return b""
    if type(raw) is str:  # a service sends to a handful of contracts: parse each spelling once
        known = _address_cache.get(raw)
        if known is None:
            known = parse_address(raw, "to")
            if len(_address_cache) < 4096:
                _address_cache[raw] = known
        return known
    return parse_address(raw, "to")


def tx_from_dict(tx: Mapping[str, Any]) -> TxFields:
    """Normalise an eth-account style transaction dict (ints or 0x-hex quantities)."""
    if not _KNOWN_KEYS.issuperset(tx):
        raise TxFieldError(sorted(tx.keys() - _KNOWN_KEYS)[0], "unknown transaction field")
    get = tx.get
    raw_type = get("type")
    if raw_type is None:
        tx_type = (
            4 if "authorizationList" in tx
            else 3 if "blobVersionedHashes" in tx or "maxFeePerBlobGas" in tx
            else 2 if "maxFeePerGas" in tx
            else 1 if "accessList" in tx
            else 0
        )  # fmt: skip
    elif raw_type == 2 and type(raw_type) is int:
        tx_type = 2
    else:
        tx_type = _quantity(tx, "type", 5)
    if tx_type != 3 and ("maxFeePerBlobGas" in tx or "blobVersionedHashes" in tx):
        key = "maxFeePerBlobGas" if "maxFeePerBlobGas" in tx else "blobVersionedHashes"
        raise TxFieldError(key, f"only a type-3 transaction carries {key}")
    if tx_type != 4 and "authorizationList" in tx:
        raise TxFieldError("authorizationList", "only a type-4 transaction carries it")
    to = _to_address(get("to"))
    data_raw = get("data", get("input", b""))
    data = _hex_bytes(data_raw, "data") if data_raw else b""
    nonce = _u(tx, "nonce", _UINT64)
    gas = _u(tx, "gas", _UINT64)
    value = _u(tx, "value") if "value" in tx else 0
    if tx_type == 0:
        if get("accessList"):
            raise TxFieldError("accessList", "legacy transactions have no access list")
        chain_id = _u(tx, "chainId", _UINT64) if get("chainId") is not None else None
    else:
        chain_id = _u(tx, "chainId", _UINT64)
    access = get("accessList")
    if tx_type >= 2:
        if "gasPrice" in tx:
            raise TxFieldError("gasPrice", "an EIP-1559 transaction takes maxFeePerGas instead")
        if tx_type == 2:
            return TxFields(
                2, chain_id, nonce, gas, to, value, data, None, _u(tx, "maxFeePerGas"),
                _u(tx, "maxPriorityFeePerGas"), _access_list(access),
            )  # fmt: skip
        if not to:
            raise TxFieldError("to", f"a type-{tx_type} transaction cannot create a contract")
        head = (tx_type, chain_id, nonce, gas, to, value, data, None, _u(tx, "maxFeePerGas"),
                _u(tx, "maxPriorityFeePerGas"), _access_list(access))  # fmt: skip
        if tx_type == 3:
            return TxFields(
                *head, _u(tx, "maxFeePerBlobGas"), parse_blob_hashes(get("blobVersionedHashes"))
            )
        return TxFields(*head, None, (), parse_authorizations(get("authorizationList")))
    if "maxFeePerGas" in tx or "maxPriorityFeePerGas" in tx:
        raise TxFieldError("maxFeePerGas", f"a type-{tx_type} transaction takes gasPrice")
    gas_price = _u(tx, "gasPrice")
    return TxFields(
        tx_type, chain_id, nonce, gas, to, value, data, gas_price, None, None,
        _access_list(access) if tx_type == 1 else (),
    )  # fmt: skip


def tx_to_wire(f: TxFields) -> dict[str, Any]:
    """The JSON form sent to the signer: eth-account keys, 0x-hex quantities and bytes."""
    out: dict[str, Any] = {
        "type": hex(f.type),
        "nonce": hex(f.nonce),
        "gas": hex(f.gas),
        "to": "0x" + f.to.hex() if f.to else None,
        "value": hex(f.value),
        "data": "0x" + f.data.hex(),
    }
    if f.chain_id is not None:
        out["chainId"] = hex(f.chain_id)
    if f.type >= 2:
        out["maxFeePerGas"] = hex(f.max_fee_per_gas)  # type: ignore[arg-type]
        out["maxPriorityFeePerGas"] = hex(f.max_priority_fee_per_gas)  # type: ignore[arg-type]
        if f.type == 3:
            out["maxFeePerBlobGas"] = hex(f.max_fee_per_blob_gas)  # type: ignore[arg-type]
            out["blobVersionedHashes"] = ["0x" + h.hex() for h in f.blob_hashes]
        elif f.type == 4:
            out["authorizationList"] = [authorization_to_wire(a) for a in f.authorizations]
    else:
        out["gasPrice"] = hex(f.gas_price)  # type: ignore[arg-type]
    if f.type != 0:
        out["accessList"] = [
            {"address": "0x" + a.hex(), "storageKeys": ["0x" + k.hex() for k in keys]}
            for a, keys in f.access_list
        ]
    return out


# ---------------------------------------------------------------- encoding


def _encode_access_list(access_list: AccessList) -> bytes:
    if not access_list:  # the usual case: no call to make
        return b"\xc0"
    parts = []
    for address, keys in access_list:
        slots = encode_list_payload(b"".join([b"\xa0" + k for k in keys]))
        parts.append(encode_list_payload(b"\x94" + address + slots))
    return encode_list_payload(b"".join(parts))


def body_items(f: TxFields) -> bytes:
    """The encoded list items every signing payload and raw encoding share."""
    # One tuple unpack instead of a property call per field, one join of a flat tuple: this runs
    # on every sign request and every reply check.
    (tx_type, chain_id, nonce, gas, to, value, data, gas_price, max_fee, tip, access_list,
     blob_fee, blob_hashes, auths) = f  # fmt: skip
    to_item = b"\x94" + to if to else b"\x80"
    access = b"\xc0" if not access_list else _encode_access_list(access_list)
    if tx_type >= 2:
        if tx_type == 3:
            access += encode_int(blob_fee) + encode_blob_hashes(blob_hashes)  # type: ignore[arg-type]
        elif tx_type == 4:
            access += encode_authorizations(auths)
        return b"".join(
            (
                encode_int(chain_id),  # type: ignore[arg-type]
                encode_int(nonce),
                encode_int(tip),  # type: ignore[arg-type]
                encode_int(max_fee),  # type: ignore[arg-type]
                encode_int(gas),
                to_item,
                encode_int(value),
                encode_bytes(data),
                access,
            )
        )
    head = (
        encode_int(nonce),
        encode_int(gas_price),  # type: ignore[arg-type]
        encode_int(gas),
        to_item,
        encode_int(value),
        encode_bytes(data),
    )
    if tx_type == 1:
        return encode_int(chain_id) + b"".join(head) + access  # type: ignore[arg-type]
    return b"".join(head)


def signing_payload(f: TxFields, body: bytes | None = None) -> bytes:
    """The bytes whose keccak256 the sender signs (EIP-155 / EIP-2718 envelopes, types 1-4)."""
    if body is None:
        body = body_items(f)
    if f.type == 0:
        if f.chain_id is None:
            return encode_list_payload(body)
        return encode_list_payload(body + encode_int(f.chain_id) + b"\x80\x80")
    return bytes((f.type,)) + encode_list_payload(body)


def signing_hash(f: TxFields) -> bytes:
    return keccak(signing_payload(f))


def encode_signed(
    f: TxFields, y_parity: int, r: bytes, s: bytes, body: bytes | None = None
) -> bytes:
    """Raw signed transaction. ``r``/``s`` are big-endian bytes (leading zeros allowed)."""
    if body is None:
        body = body_items(f)
    r = r.lstrip(b"\x00")
    s = s.lstrip(b"\x00")
    if f.type == 0:
        v = y_parity + (27 if f.chain_id is None else f.chain_id * 2 + 35)
        return encode_list_payload(body + encode_int(v) + encode_bytes(r) + encode_bytes(s))
    sig = (b"\x01" if y_parity else b"\x80") + encode_bytes(r) + encode_bytes(s)
    return bytes((f.type,)) + encode_list_payload(body + sig)


# ---------------------------------------------------------------- decoding


def _int(item: Item, name: str) -> int:
    if not isinstance(item, bytes):
        raise TxDecodeError(f"{name}: expected a byte string")
    if item[:1] == b"\x00":
        raise TxDecodeError(f"{name}: integer with leading zero")
    return int.from_bytes(item, "big")


def _bytes(item: Item, name: str) -> bytes:
    if not isinstance(item, bytes):
        raise TxDecodeError(f"{name}: expected a byte string")
    return item


def _to(item: Item) -> bytes:
    to = _bytes(item, "to")
    if len(to) not in (0, 20):
        raise TxDecodeError("to: expected 0 or 20 bytes")
    return to


def decode_access_list(item: Item) -> AccessList:
    if not isinstance(item, list):
        raise TxDecodeError("accessList: expected a list")
    out = []
    for entry in item:
        if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], list):
            raise TxDecodeError("accessList: expected [address, [keys]]")
        address = _bytes(entry[0], "accessList.address")
        keys = tuple(_bytes(k, "accessList.storageKey") for k in entry[1])
        if len(address) != 20 or any(len(k) != 32 for k in keys):
            raise TxDecodeError("accessList: bad address or storage key length")
        out.append((address, keys))
    return tuple(out)


def decode_raw(raw: bytes) -> DecodedTx:
    """Decode a signed legacy or type 1-4 transaction (strict, canonical RLP; type 3 in its
    canonical form, without the sidecar)."""
    if not raw:
        raise TxDecodeError("empty transaction")
    if raw[0] >= 0xC0:
        items = decode(raw)
        if not isinstance(items, list) or len(items) != 9:
            raise TxDecodeError("legacy transaction: expected 9 fields")
        v = _int(items[6], "v")
        if v in (27, 28):
            chain_id, y = None, v - 27
        elif v >= 37:
            chain_id, y = (v - 35) >> 1, (v - 35) & 1
        else:
            raise TxDecodeError(f"legacy transaction: bad v {v}")
        fields = TxFields(
            type=0,
            chain_id=chain_id,
            nonce=_int(items[0], "nonce"),
            gas=_int(items[2], "gas"),
            to=_to(items[3]),
            value=_int(items[4], "value"),
            data=_bytes(items[5], "data"),
            gas_price=_int(items[1], "gasPrice"),
        )
        return DecodedTx(fields, y, _int(items[7], "r"), _int(items[8], "s"))
    tx_type = raw[0]
    if tx_type not in _TYPED_FIELDS:
        raise TxDecodeError(f"unsupported transaction type {tx_type}")
    items = decode(raw[1:])
    want = _TYPED_FIELDS[tx_type] + 3
    if not isinstance(items, list) or len(items) != want:
        raise TxDecodeError(f"type-{tx_type} transaction: expected {want} fields")
    fields = typed_fields(tx_type, items[:-3])
    y = _int(items[-3], "yParity")
    if y > 1:
        raise TxDecodeError(f"yParity must be 0 or 1, got {y}")
    return DecodedTx(fields, y, _int(items[-2], "r"), _int(items[-1], "s"))


#: Unsigned item count per EIP-2718 type.
_TYPED_FIELDS = {1: 8, 2: 9, 3: 11, 4: 10}


def _uint(item: Item, name: str, max_bytes: int = 32) -> int:
    value = _int(item, name)
    if len(item) > max_bytes:
        raise TxDecodeError(f"{name}: more than {max_bytes * 8} bits")
    return value


def typed_fields(tx_type: int, items: list[Item]) -> TxFields:
    """The unsigned fields of a type 1-4 transaction from its decoded RLP items (no signature).

    Strict: canonical integers within their widths (chain id, nonce and gas 64 bits, the rest 256),
    ``to`` of 20 bytes for types 3 and 4, the type's own lists well formed."""
    if len(items) != _TYPED_FIELDS.get(tx_type, -1):
        raise TxDecodeError(f"type-{tx_type} payload: expected {_TYPED_FIELDS.get(tx_type)} fields")
    chain_id = _uint(items[0], "chainId", 8)
    nonce = _uint(items[1], "nonce", 8)
    gas_price = tip = max_fee = None
    if tx_type >= 2:
        tip = _uint(items[2], "maxPriorityFeePerGas")
        max_fee = _uint(items[3], "maxFeePerGas")
    else:
        gas_price = _uint(items[2], "gasPrice")
    i = 4 if tx_type >= 2 else 3  # index of gas
    to = _to(items[i + 1])
    if tx_type >= 3 and not to:
        raise TxDecodeError(f"to: a type-{tx_type} transaction cannot create a contract")
    head = (
        tx_type, chain_id, nonce, _uint(items[i], "gas", 8), to, _uint(items[i + 2], "value"),
        _bytes(items[i + 3], "data"), gas_price, max_fee, tip, decode_access_list(items[i + 4]),
    )  # fmt: skip
    if tx_type == 3:
        return TxFields(
            *head, _uint(items[i + 5], "maxFeePerBlobGas"), decode_blob_hashes(items[i + 6])
        )
    if tx_type == 4:
        return TxFields(*head, None, (), decode_authorizations(items[i + 5]))
    return TxFields(*head)

"""EIP-7702 authorizations and EIP-4844 blob versioned hashes: the list items of types 3 and 4.

* An authorization is ``[chain_id, address, nonce, y_parity, r, s]`` in a type-4 transaction's
  ``authorization_list``; its signer (the *authority*) signs
  ``keccak256(0x05 || rlp([chain_id, address, nonce]))`` (EIP-7702's ``MAGIC``), byte-identical
  to eth-account's ``Account.sign_authorization``. ``chain_id`` 0 means "any chain".
* A blob versioned hash is 32 bytes whose first byte is the KZG version, ``0x01`` (EIP-4844's
  ``VERSIONED_HASH_VERSION_KZG``).

Pure (no key, no I/O). Requests take eth-account's forms: a dict ``{chainId, address, nonce,
yParity, r, s}`` (ints or 0x-hex) or its ``SignedSetCodeAuthorization`` (attributes ``chain_id,
address, nonce, y_parity, r, s``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from signer_client.errors import TxDecodeError, TxFieldError
from signer_client.rlp import Item, encode_bytes, encode_int, encode_list_payload

__all__ = [
    "AUTH_MAGIC",
    "BLOB_HASH_VERSION",
    "Authorization",
    "SignedAuthorization",
    "authorization_hash",
    "authorization_unsigned",
    "decode_authorizations",
    "decode_blob_hashes",
    "encode_authorizations",
    "encode_blob_hashes",
    "parse_authorizations",
    "parse_blob_hashes",
    "parse_unsigned_authorization",
]

AUTH_MAGIC = b"\x05"
BLOB_HASH_VERSION = 0x01
_UINT256 = 1 << 256
_UINT64 = 1 << 64


class Authorization(NamedTuple):
    """One signed EIP-7702 authorization (``address`` is the delegate, 20 bytes)."""

    chain_id: int
    address: bytes
    nonce: int
    y_parity: int
    r: int
    s: int


def authorization_unsigned(chain_id: int, address: bytes, nonce: int) -> bytes:
    """``0x05 || rlp([chain_id, address, nonce])``: what the authority signs (hashed)."""
    return AUTH_MAGIC + encode_list_payload(
        encode_int(chain_id) + b"\x94" + address + encode_int(nonce)
    )


def authorization_hash(chain_id: int, address: bytes, nonce: int) -> bytes:
    from signer_client.txcodec import keccak

    return keccak(authorization_unsigned(chain_id, address, nonce))


# ---------------------------------------------------------------- request forms


def _uint(raw: object, key: str, limit: int) -> int:
    if type(raw) is int:
        value = raw
    elif isinstance(raw, str) and raw[:2] == "0x":
        try:
            value = int(raw, 16)
        except ValueError:
            raise TxFieldError(key, f"not a hex quantity: {raw!r}") from None
    elif raw is None:
        raise TxFieldError(key, "missing")
    else:
        raise TxFieldError(key, f"expected an int or 0x-hex string, got {raw!r}")
    if not 0 <= value < limit:
        raise TxFieldError(key, f"out of range: {value}")
    return value


def raw_bytes(raw: object, key: str) -> bytes:
    """``raw`` as bytes: bytes as given, or 0x-hex; else :class:`TxFieldError` at ``key``."""
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str) and raw[:2] in ("0x", "0X"):
        try:
            return bytes.fromhex(raw[2:])
        except ValueError:
            raise TxFieldError(key, "not valid hex") from None
    raise TxFieldError(key, f"expected bytes or a 0x-hex string, got {type(raw).__name__}")


def _address(raw: object, key: str) -> bytes:
    out = raw_bytes(raw, key)
    if len(out) != 20:
        raise TxFieldError(key, f"an address is 20 bytes, got {len(out)}")
    return out


_AUTH_KEYS = (("chainId", "chain_id"), ("address", "address"), ("nonce", "nonce"),
              ("yParity", "y_parity"), ("r", "r"), ("s", "s"))  # fmt: skip


def parse_authorizations(raw: object) -> tuple[Authorization, ...]:
    """``authorizationList`` from a request: at least one item, each fully signed."""
    if not isinstance(raw, list | tuple) or not raw:
        raise TxFieldError("authorizationList", "a type-4 transaction needs a non-empty list")
    out = []
    for i, item in enumerate(raw):
        where = f"authorizationList[{i}]"
        if isinstance(item, Mapping):
            values = [item.get(k) for k, _ in _AUTH_KEYS]
        else:  # eth-account's SignedSetCodeAuthorization, or any object with its attributes
            values = [getattr(item, a, None) for _, a in _AUTH_KEYS]
        chain_id = _uint(values[0], f"{where}.chainId", _UINT256)
        address = _address(values[1], f"{where}.address")
        nonce = _uint(values[2], f"{where}.nonce", _UINT64)
        y = _uint(values[3], f"{where}.yParity", 2)
        r = _uint(values[4], f"{where}.r", _UINT256)
        s = _uint(values[5], f"{where}.s", _UINT256)
        out.append(Authorization(chain_id, address, nonce, y, r, s))
    return tuple(out)


def parse_blob_hashes(raw: object) -> tuple[bytes, ...]:
    """``blobVersionedHashes`` from a request: at least one, 32 bytes, version ``0x01``."""
    if not isinstance(raw, list | tuple) or not raw:
        raise TxFieldError("blobVersionedHashes", "a type-3 transaction needs at least one hash")
    out = tuple(raw_bytes(h, f"blobVersionedHashes[{i}]") for i, h in enumerate(raw))
    check_blob_hashes(out, TxFieldError)
    return out


def check_blob_hashes(hashes: tuple[bytes, ...], error: type[Exception]) -> None:
    for i, h in enumerate(hashes):
        if len(h) != 32 or h[0] != BLOB_HASH_VERSION:
            message = "a versioned hash is 32 bytes starting with 0x01"
            if error is TxFieldError:
                raise TxFieldError(f"blobVersionedHashes[{i}]", message)
            raise error(f"blobVersionedHashes[{i}]: {message}")


# ---------------------------------------------------------------- RLP


def encode_authorizations(auths: tuple[Authorization, ...]) -> bytes:
    parts = []
    for chain_id, address, nonce, y, r, s in auths:
        parts.append(
            encode_list_payload(
                encode_int(chain_id) + b"\x94" + address + encode_int(nonce) + encode_int(y)
                + encode_int(r) + encode_int(s)
            )
        )  # fmt: skip
    return encode_list_payload(b"".join(parts))


def encode_blob_hashes(hashes: tuple[bytes, ...]) -> bytes:
    return encode_list_payload(b"".join([encode_bytes(h) for h in hashes]))


def _int(item: Item, name: str, max_bytes: int) -> int:
    if not isinstance(item, bytes):
        raise TxDecodeError(f"{name}: expected a byte string")
    if item[:1] == b"\x00":
        raise TxDecodeError(f"{name}: integer with leading zero")
    if len(item) > max_bytes:
        raise TxDecodeError(f"{name}: more than {max_bytes * 8} bits")
    return int.from_bytes(item, "big")


def decode_authorizations(item: Item) -> tuple[Authorization, ...]:
    if not isinstance(item, list) or not item:
        raise TxDecodeError("authorizationList: expected a non-empty list")
    out = []
    for entry in item:
        if not isinstance(entry, list) or len(entry) != 6:
            raise TxDecodeError("authorizationList: expected [chainId, address, nonce, y, r, s]")
        address = entry[1]
        if not isinstance(address, bytes) or len(address) != 20:
            raise TxDecodeError("authorizationList.address: expected 20 bytes")
        y = _int(entry[3], "authorizationList.yParity", 1)
        if y > 1:
            raise TxDecodeError("authorizationList.yParity: must be 0 or 1")
        out.append(
            Authorization(
                _int(entry[0], "authorizationList.chainId", 32),
                address,
                _int(entry[2], "authorizationList.nonce", 8),
                y,
                _int(entry[4], "authorizationList.r", 32),
                _int(entry[5], "authorizationList.s", 32),
            )
        )
    return tuple(out)


def decode_blob_hashes(item: Item) -> tuple[bytes, ...]:
    if not isinstance(item, list) or not item or not all(isinstance(h, bytes) for h in item):
        raise TxDecodeError("blobVersionedHashes: expected a non-empty list of byte strings")
    hashes: tuple[bytes, ...] = tuple(item)  # type: ignore[arg-type]
    check_blob_hashes(hashes, TxDecodeError)
    return hashes


def authorization_to_wire(a: Authorization) -> dict[str, Any]:
    return {
        "chainId": hex(a.chain_id),
        "address": "0x" + a.address.hex(),
        "nonce": hex(a.nonce),
        "yParity": hex(a.y_parity),
        "r": hex(a.r),
        "s": hex(a.s),
    }


class SignedAuthorization(NamedTuple):
    """A signed EIP-7702 authorization, as eth-account's ``SignedSetCodeAuthorization`` names its
    parts and types (``chain_id, address, nonce, y_parity, r, s``, ``authority``: the signer's
    20-byte address, ``authorization_hash``). Goes into a type-4 ``authorizationList`` as it is,
    or as :meth:`as_dict`."""

    chain_id: int
    address: bytes
    nonce: int
    y_parity: int
    r: int
    s: int
    authority: bytes
    authorization_hash: bytes

    def as_dict(self) -> dict[str, Any]:
        """``{chainId, address, nonce, yParity, r, s}`` with ints, eth-account's dict form."""
        from signer_client.signing import to_checksum_address

        return {
            "chainId": self.chain_id,
            "address": to_checksum_address(self.address),
            "nonce": self.nonce,
            "yParity": self.y_parity,
            "r": self.r,
            "s": self.s,
        }

    def as_authorization(self) -> Authorization:
        return Authorization(self.chain_id, self.address, self.nonce, self.y_parity, self.r, self.s)


def parse_unsigned_authorization(raw: object) -> tuple[int, bytes, int]:
    """``(chain_id, address, nonce)`` of a ``sign_authorization`` request ``{chainId, address,
    nonce}`` (ints or 0x-hex)."""
    if not isinstance(raw, Mapping):
        raise TxFieldError("authorization", "expected {chainId, address, nonce}")
    unknown = set(raw) - {"chainId", "address", "nonce"}
    if unknown:
        raise TxFieldError(sorted(unknown)[0], "unknown authorization field")
    return (
        _uint(raw.get("chainId"), "chainId", _UINT256),
        _address(raw.get("address"), "address"),
        _uint(raw.get("nonce"), "nonce", _UINT64),
    )

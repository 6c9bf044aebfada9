"""The intent fields of blob (EIP-4844, type 3) and set-code (EIP-7702, type 4) transactions:
``blobs``, ``maxFeePerBlobGas`` and ``authorizationList`` (DESIGN.md section 7). Pure.

``blobs``: a list of 1 to :data:`MAX_BLOBS` 0x-hex blobs of exactly 131,072 bytes (4096 field
elements, each below the BLS12-381 modulus), checked here, so a malformed blob is a ``-32602``
naming it; the API server then computes the KZG commitments, proofs and versioned hashes
(``broadcaster.tx.blobs.prepare_sidecar``, ``ckzg``, in a worker process) before it books the
intent. ``maxFeePerBlobGas`` is required.

``authorizationList``: 1 to :data:`MAX_AUTHORIZATIONS` items, each either

* ``{address, chainId?}``: to be signed by the enclave with the sender's key
  (``sign_authorization``), at the transaction's nonce + 1: EIP-7702 increments the sender's
  nonce for the transaction before it processes the list, so a self-sponsored authorization is
  valid only at the next nonce, and the intent consumes two nonces. ``nonce`` is therefore not
  taken (the service assigns it); ``chainId`` defaults to the broadcaster's chain (0, "any
  chain", only when asked for and when the enclave's policy lists it);
* ``{chainId, address, nonce, yParity, r, s, authority?}``: signed elsewhere by another account
  (a sponsored delegation). The authority is recovered from the signature (EIP-7702:
  ``keccak(0x05 || rlp([chain_id, address, nonce]))``, low-s); with ``authority`` given it must
  match. An item signed by any account of this broadcaster is refused (it would consume that
  account's nonce behind the book's back; for a tenant, it may be another tenant's account); one
  signed by the sender itself is refused: its nonce would have to be the tx
  nonce + 1, which the bot cannot know; leave the signature out and the enclave signs it.

The enclave still decides: a delegate outside its ``allowed_delegates`` is refused there
(``policy_denied``), and the intent fails with that reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from broadcaster.api.intents import ParamError, parse_address, parse_quantity
from broadcaster.tx.blobs import BLOB_SIZE, BlobError, check_blob
from nonce import AuthItem
from signer_client.authorization import authorization_hash
from signer_client.signing import recover_pubkey
from signer_client.txcodec import SECP256K1_HALF_N, SECP256K1_N, keccak

__all__ = ["MAX_AUTHORIZATIONS", "MAX_BLOBS", "parse_authorizations", "parse_blobs"]

MAX_BLOBS: Final = 6
"""Blobs per transaction (EIP-7594, Osaka: geth's ``params.BlobTxMaxBlobs``; the enclave's
``MAX_BLOBS_PER_TX``)."""
MAX_AUTHORIZATIONS: Final = 16
_BLOB_HEX: Final = re.compile(r"0x[0-9a-fA-F]*")
_UNSIGNED: Final = frozenset({"address", "chainId"})
_SIGNED: Final = frozenset({"address", "chainId", "nonce", "yParity", "r", "s", "authority"})


def parse_blobs(value: Any) -> tuple[bytes, ...]:
    """``blobs``: 0x-hex strings of exactly ``BLOB_SIZE`` bytes of canonical field elements."""
    if not isinstance(value, list) or not value:
        raise ParamError("blobs", f"expected a list of 1 to {MAX_BLOBS} 0x-hex blobs")
    if len(value) > MAX_BLOBS:
        raise ParamError("blobs", f"{len(value)} blobs: a transaction carries at most {MAX_BLOBS}")
    blobs = []
    for index, blob in enumerate(value):
        where = f"blobs[{index}]"
        if type(blob) is not str or _BLOB_HEX.fullmatch(blob) is None or len(blob) % 2:
            raise ParamError(where, "expected 0x-prefixed hex bytes")
        if len(blob) != 2 + 2 * BLOB_SIZE:
            raise ParamError(
                where, f"a blob is exactly {BLOB_SIZE} bytes, got {(len(blob) - 2) // 2}"
            )
        blobs.append(bytes.fromhex(blob[2:]))
        try:
            check_blob(index, blobs[-1])
        except BlobError as exc:
            raise ParamError(where, str(exc).partition(": ")[2]) from exc
    return tuple(blobs)


def _chain_id(item: dict[str, Any], where: str, chain_id: int, default: int | None) -> int:
    if "chainId" not in item:
        if default is None:
            raise ParamError(f"{where}.chainId", "required for a signed authorization")
        return default
    value = parse_quantity(item["chainId"], f"{where}.chainId")
    if value not in (0, chain_id):
        raise ParamError(
            f"{where}.chainId",
            f"{value}: this broadcaster's chain is {chain_id} (0 means any chain); the "
            "authorization would be skipped on chain",
        )
    return value


def parse_authorizations(
    value: Any, *, sender: str, chain_id: int, managed: Sequence[str] = ()
) -> tuple[AuthItem, ...]:
    """``authorizationList`` (see the module docstring) for an intent from ``sender``;
    ``managed``: every account of this broadcaster's signer (whichever tenant it is)."""
    if not isinstance(value, list) or not value or len(value) > MAX_AUTHORIZATIONS:
        raise ParamError(
            "authorizationList",
            f"expected a list of 1 to {MAX_AUTHORIZATIONS} authorizations {{chainId, address}}"
            " (the enclave signs them) or {chainId, address, nonce, yParity, r, s}",
        )
    out: list[AuthItem] = []
    for index, item in enumerate(value):
        where = f"authorizationList[{index}]"
        if not isinstance(item, dict):
            raise ParamError(where, "expected an object {chainId, address[, nonce, yParity, r, s]}")
        address = parse_address(item.get("address"), f"{where}.address")
        if not {"yParity", "r", "s"} & set(item):
            if "nonce" in item:
                raise ParamError(
                    f"{where}.nonce",
                    "leave it out: the enclave signs this authorization with the sender's key at "
                    "the transaction's nonce + 1 (EIP-7702), which the service assigns",
                )
            unknown = sorted(set(item) - _UNSIGNED)
            if unknown:
                raise ParamError(f"{where}.{unknown[0]}", "unknown field")
            out.append(AuthItem(_chain_id(item, where, chain_id, chain_id), address))
            continue
        unknown = sorted(set(item) - _SIGNED)
        if unknown:
            raise ParamError(f"{where}.{unknown[0]}", "unknown field")
        for name in ("nonce", "yParity", "r", "s"):
            if name not in item:
                raise ParamError(f"{where}.{name}", "required for a signed authorization")
        auth_chain = _chain_id(item, where, chain_id, None)
        nonce = parse_quantity(item["nonce"], f"{where}.nonce", maximum=(1 << 64) - 1)
        y = parse_quantity(item["yParity"], f"{where}.yParity")
        r = parse_quantity(item["r"], f"{where}.r")
        s = parse_quantity(item["s"], f"{where}.s")
        if y > 1:
            raise ParamError(f"{where}.yParity", "must be 0 or 1")
        if not 0 < r < SECP256K1_N:
            raise ParamError(f"{where}.r", "not a valid signature value")
        if not 0 < s <= SECP256K1_HALF_N:
            raise ParamError(f"{where}.s", "must be a low-s value (EIP-2, required by EIP-7702)")
        digest = authorization_hash(auth_chain, bytes.fromhex(address[2:]), nonce)
        try:
            authority = "0x" + keccak(recover_pubkey(digest, y, r, s)[1:])[12:].hex()
        except Exception as exc:  # coincurve raises bare Exception for an unrecoverable one
            raise ParamError(where, f"the signature does not recover an authority: {exc}") from exc
        if "authority" in item:
            claimed = parse_address(item["authority"], f"{where}.authority")
            if claimed != authority:
                raise ParamError(
                    f"{where}.authority",
                    f"authority mismatch: the signature is by {authority}, not {claimed}",
                )
        if authority == sender:
            raise ParamError(
                where,
                "signed by the sender itself: a self-sponsored authorization is valid only at "
                "the transaction's nonce + 1; leave yParity/r/s and nonce out and the enclave "
                "signs it at that nonce",
            )
        if authority in managed:
            raise ParamError(
                where,
                f"signed by {authority}, an account of this broadcaster: delegating it here "
                "would consume its nonce behind its own intents (and another tenant's account "
                "is not this token's to delegate); send it as that account's own intent",
            )
        out.append(AuthItem(auth_chain, address, nonce, (y, r, s)))
    return tuple(out)

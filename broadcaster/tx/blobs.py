"""EIP-4844 blob sidecars: commitments, proofs, versioned hashes and the network form.

The signer signs a blob transaction's canonical form only (``0x03 || rlp([chain_id, ...,
max_fee_per_blob_gas, blob_versioned_hashes, y_parity, r, s])``; its hash is the transaction
hash). What ``eth_sendRawTransaction`` takes is the *network form* with the sidecar:

* version 0, EIP-4844 (Cancun, Prague): ``0x03 || rlp([tx_payload_body, blobs, commitments,
  proofs])``, one blob proof per blob;
* version 1, EIP-7594 (Osaka, PeerDAS): ``0x03 || rlp([tx_payload_body, 1, blobs, commitments,
  cell_proofs])``, 128 cell proofs per blob (what eth-account 0.14 emits);

where ``tx_payload_body`` is the canonical form's RLP list. A commitment is
``blob_to_kzg_commitment(blob)`` (48 bytes), a proof ``compute_blob_kzg_proof(blob, commitment)``
(48 bytes), the versioned hash ``0x01 || sha256(commitment)[1:]``. KZG comes from ``ckzg`` with
the Ethereum mainnet trusted setup (the KZG ceremony's output, the same file for every network),
taken from the copy eth-account ships.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import concurrent.futures.process
import contextlib
import functools
import hashlib
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

from broadcaster.errors import BroadcasterError
from signer_client.rlp import encode_bytes, encode_list_payload, list_at

__all__ = [
    "BLOB_SIZE",
    "MAX_WAITING",
    "BlobError",
    "Sidecar",
    "SidecarBusy",
    "blob_fee_of",
    "canonical_form",
    "check_blob",
    "forget",
    "intent_sidecar",
    "kzg_slot",
    "network_form",
    "prepare_sidecar",
    "remember",
    "sidecar",
    "versioned_hash",
]

BLOB_SIZE = 131_072  # 4096 field elements of 32 bytes (EIP-4844 FIELD_ELEMENTS_PER_BLOB)
MAX_BLOBS = 9  # Prague's MAX_BLOBS_PER_BLOCK (EIP-7691); a tx cannot carry more
_BLS_MODULUS = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001


class BlobError(BroadcasterError, ValueError):
    """A blob is malformed (size, a field element out of range) or KZG failed."""


@dataclass(frozen=True, slots=True)
class Sidecar:
    blobs: tuple[bytes, ...]
    commitments: tuple[bytes, ...]
    proofs: tuple[bytes, ...]
    versioned_hashes: tuple[bytes, ...]


@functools.cache
def _trusted_setup() -> Any:
    import ckzg

    path = resources.files("eth_account").joinpath(
        "typed_transactions/blob_transactions/kzg_trusted_setup.txt"
    )
    with resources.as_file(path) as file:
        return ckzg.load_trusted_setup(str(file), 0)


def versioned_hash(commitment: bytes) -> bytes:
    """EIP-4844 ``kzg_to_versioned_hash``: ``0x01 || sha256(commitment)[1:]``."""
    return b"\x01" + hashlib.sha256(commitment).digest()[1:]


def check_blob(index: int, blob: bytes) -> None:
    """:class:`BlobError` unless ``blob`` is ``BLOB_SIZE`` bytes of canonical field elements."""
    if len(blob) != BLOB_SIZE:
        raise BlobError(f"blobs[{index}]: a blob is {BLOB_SIZE} bytes, got {len(blob)}")
    for at in range(0, BLOB_SIZE, 32):
        if int.from_bytes(blob[at : at + 32], "big") >= _BLS_MODULUS:
            raise BlobError(
                f"blobs[{index}]: field element {at // 32} is not below the BLS modulus"
            )


def sidecar(blobs: tuple[bytes, ...] | list[bytes]) -> Sidecar:
    """Commitments, proofs and versioned hashes of ``blobs`` (each exactly ``BLOB_SIZE`` bytes of
    canonical field elements, big-endian, each below the BLS12-381 modulus)."""
    import ckzg

    if not 0 < len(blobs) <= MAX_BLOBS:
        raise BlobError(f"a blob transaction carries 1 to {MAX_BLOBS} blobs, got {len(blobs)}")
    setup = _trusted_setup()
    commitments, proofs = [], []
    for i, blob in enumerate(blobs):
        check_blob(i, blob)
        try:
            commitment = bytes(ckzg.blob_to_kzg_commitment(blob, setup))
            proofs.append(bytes(ckzg.compute_blob_kzg_proof(blob, commitment, setup)))
        except RuntimeError as exc:  # ckzg's only error type
            raise BlobError(f"blobs[{i}]: KZG failed: {exc}") from exc
        commitments.append(commitment)
    return Sidecar(
        tuple(blobs),
        tuple(commitments),
        tuple(proofs),
        tuple(versioned_hash(c) for c in commitments),
    )


def cell_proofs(car: Sidecar) -> tuple[bytes, ...]:
    """EIP-7594's 128 cell proofs per blob, in blob order (version-1 sidecars)."""
    import ckzg

    setup = _trusted_setup()
    out: list[bytes] = []
    for blob in car.blobs:
        _, proofs = ckzg.compute_cells_and_kzg_proofs(blob, setup)
        out.extend(bytes(p) for p in proofs)
    return tuple(out)


def network_form(raw: bytes, car: Sidecar, version: int = 0) -> bytes:
    """The ``eth_sendRawTransaction`` bytes of a signed canonical blob transaction ``raw``, with
    a version-0 (EIP-4844) or version-1 (EIP-7594, cell proofs) sidecar."""
    if raw[:1] != b"\x03":
        raise BlobError("not a blob (type 3) transaction")
    _, stop = list_at(raw, 1, len(raw))
    if stop != len(raw):
        raise BlobError("trailing bytes after the transaction")
    if version not in (0, 1):
        raise BlobError(f"unknown sidecar version {version}")
    proofs = car.proofs if version == 0 else cell_proofs(car)
    parts = (
        raw[1:],
        b"\x01" if version == 1 else b"",
        encode_list_payload(b"".join(encode_bytes(b) for b in car.blobs)),
        encode_list_payload(b"".join(encode_bytes(c) for c in car.commitments)),
        encode_list_payload(b"".join(encode_bytes(p) for p in proofs)),
    )
    return b"\x03" + encode_list_payload(b"".join(parts))


_CACHE: collections.OrderedDict[tuple[bytes, ...], Sidecar] = collections.OrderedDict()
_CACHE_SIZE = 4096
"""Sidecars stay cached until their record settles (:func:`forget`, from ``Executor.forget``):
a re-sign after a reorg must never redo KZG on the event loop (50-100 ms a blob) because more
than a handful of blob intents were unsettled. The blobs themselves are the intents' own bytes
objects (no copy); the bound only caps sidecars nothing forgets (intents refused after intake)."""
_POOL: concurrent.futures.ProcessPoolExecutor | None = None
MAX_WAITING = 16
"""Blob intents waiting for the KZG worker at once: beyond it the API answers "busy" at once
rather than hold every pipelined 1 MiB request (and its pickled copy) in the worker's queue."""
_waiting = 0


class SidecarBusy(BroadcasterError):
    """The KZG worker has :data:`MAX_WAITING` intents queued, or failed twice in a row."""


def intent_sidecar(blobs: tuple[bytes, ...]) -> Sidecar:
    """:func:`sidecar` of an intent's blobs, cached: KZG costs tens of milliseconds per blob
    (a proof ~50-100 ms on a loaded 2-core box), and every re-sign of the intent (reorg, bump,
    presign) needs the same versioned hashes and sidecar. The API computes it off the event loop
    first (:func:`prepare_sidecar`); only a re-sign after a restart computes it here."""
    car = _CACHE.get(blobs)
    if car is None:
        car = remember(sidecar(blobs))
    else:
        _CACHE.move_to_end(blobs)
    return car


def remember(car: Sidecar) -> Sidecar:
    _CACHE[car.blobs] = car
    _CACHE.move_to_end(car.blobs)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return car


def forget(blobs: tuple[bytes, ...]) -> None:
    """The record carrying ``blobs`` settled or was dropped: its sidecar is not needed again."""
    _CACHE.pop(blobs, None)


def _pool() -> concurrent.futures.ProcessPoolExecutor:
    global _POOL
    if _POOL is None:
        # spawn, not fork: the service runs threads (journal writer, vsock connect) and uvloop
        _POOL = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )
    return _POOL


@contextlib.contextmanager
def kzg_slot() -> Iterator[None]:
    """One of :data:`MAX_WAITING` places for a blob intent between intake and its sidecar (its
    connection's admission queue, then the worker's): :class:`SidecarBusy` when none is free."""
    global _waiting
    if _waiting >= MAX_WAITING:
        raise SidecarBusy(f"{_waiting} blob intents are waiting for KZG: try again shortly")
    _waiting += 1
    try:
        yield
    finally:
        _waiting -= 1


async def prepare_sidecar(blobs: tuple[bytes, ...]) -> Sidecar:
    """:func:`intent_sidecar`, with the KZG work in a worker process: ckzg holds the GIL for the
    whole computation (a thread would stall the event loop, and with it every reorg reaction,
    just the same). Raises :class:`BlobError`, and :class:`SidecarBusy` when a fresh worker died
    too (never computed on the event loop instead: that is the stall the worker exists to
    avoid). The API holds a :func:`kzg_slot` around it."""
    global _POOL
    car = _CACHE.get(blobs)
    if car is not None:
        return car
    for _ in range(2):
        pool = _pool()
        try:
            car = await asyncio.wrap_future(pool.submit(sidecar, blobs))
            break
        except concurrent.futures.process.BrokenProcessPool:
            if _POOL is pool:
                _POOL = None  # the worker died (killed, out of memory): a fresh one
    else:
        raise SidecarBusy("the KZG worker process died twice: try again shortly")
    return remember(car)


def canonical_form(raw: bytes) -> bytes:
    """The signed canonical form of a type-3 transaction given in either form (network form:
    its first RLP item is the ``tx_payload_body`` list)."""
    if raw[:1] != b"\x03":
        return raw
    start, stop = list_at(raw, 1, len(raw))
    if start < stop and raw[start] >= 0xC0:  # the outer list opens with a list: network form
        _, body_stop = list_at(raw, start, stop)
        return b"\x03" + raw[start:body_stop]
    return raw


def blob_fee_of(raw: bytes) -> int | None:
    """``maxFeePerBlobGas`` of a signed type-3 transaction (either form); ``None`` for others."""
    if raw[:1] != b"\x03":
        return None
    from signer_client.txcodec import decode_raw

    return decode_raw(canonical_form(raw)).fields.max_fee_per_blob_gas

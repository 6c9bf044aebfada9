"""Blob sidecars: the network form is eth-account's byte for byte (version 1), its proofs verify
(version 0), bad blobs are refused with a reason."""

from __future__ import annotations

import ckzg
import pytest
from eth_account import Account

from broadcaster.tx.blobs import (
    BLOB_SIZE,
    BlobError,
    _trusted_setup,
    network_form,
    sidecar,
)
from signer_client.rlp import decode
from signer_client.signing import LocalKey
from signer_client.txcodec import keccak, tx_from_dict

KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
TX = {"type": 3, "chainId": 1, "nonce": 2, "to": "0x" + "22" * 20, "value": 0, "data": "0x",
      "gas": 100000, "maxFeePerGas": 10, "maxPriorityFeePerGas": 1, "accessList": [],
      "maxFeePerBlobGas": 5}  # fmt: skip


def _blob(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(32, "big") for v in values)


@pytest.mark.parametrize(("seed", "nonce"), [(b"a", 2**32)])  # eth-account takes ~10 s a blob
def test_the_version_1_network_form_is_eth_accounts_byte_for_byte(seed: bytes, nonce: int) -> None:
    # 4096 field elements from a random seed, each below 2**248 (so below the BLS modulus).
    blob = b"".join(b"\0" + keccak(seed + i.to_bytes(2, "big"))[:31] for i in range(4096))
    car = sidecar([blob])
    tx = {**TX, "nonce": nonce}
    signed = LocalKey(KEY).sign(tx_from_dict({**tx, "blobVersionedHashes": car.versioned_hashes}))
    expected = Account.sign_transaction(tx, KEY, blobs=[blob])
    assert network_form(signed.raw, car, 1) == bytes(expected.raw_transaction)
    # The transaction hash is the canonical form's (EIP-4844); eth-account's ``hash`` of a
    # sidecar-carrying transaction is not that (it hashes what it returns), so it is not compared.
    assert signed.hash == keccak(signed.raw)


def test_the_version_0_form_carries_one_verifying_proof_per_blob() -> None:
    blobs = [_blob([i] * 4096) for i in (1, 2)]
    car = sidecar(blobs)
    signed = LocalKey(KEY).sign(tx_from_dict({**TX, "blobVersionedHashes": car.versioned_hashes}))
    items = decode(network_form(signed.raw, car)[1:])
    assert isinstance(items, list) and len(items) == 4
    assert items[0] == decode(signed.raw[1:])
    assert items[1] == blobs and items[2] == list(car.commitments)
    for blob, commitment, proof in zip(items[1], items[2], items[3], strict=True):
        assert ckzg.verify_blob_kzg_proof(blob, commitment, proof, _trusted_setup())


@pytest.mark.parametrize(
    ("blobs", "needle"),
    [
        ([], "1 to 9 blobs"),
        ([b"\0" * (BLOB_SIZE - 1)], "131072 bytes"),
        ([b"\xff" * 32 + b"\0" * (BLOB_SIZE - 32)], "field element 0"),
    ],
)
def test_bad_blobs_are_refused_saying_why(blobs: list[bytes], needle: str) -> None:
    with pytest.raises(BlobError, match=needle):
        sidecar(blobs)

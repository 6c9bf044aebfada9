"""What a node's JSON-RPC lists for a signed transaction (``eth_getBlockByHash(h, true)``,
``eth_getTransactionByHash``), with geth's field names: for the doubles that serve blocks (the
bench harness) and for the tests of the readers that check them (``broadcaster.audit.body``)."""

from __future__ import annotations

from typing import Any

from signer_client.txcodec import DecodedTx

__all__ = ["tx_object"]


def tx_object(decoded: DecodedTx, tx_hash: str) -> dict[str, Any]:
    """Every signed field of ``decoded`` as geth names it (legacy ``v`` per EIP-155, typed
    ``yParity``; EIP-2930 access lists, EIP-1559 fees, EIP-4844 blob fields, EIP-7702
    authorizations); a caller adds what is not in the signature (``blockHash``, ``from``)."""
    f = decoded.fields
    out: dict[str, Any] = {
        "type": hex(f.type), "nonce": hex(f.nonce), "gas": hex(f.gas),
        "to": "0x" + f.to.hex() if f.to else None, "value": hex(f.value),
        "input": "0x" + f.data.hex(), "r": hex(decoded.r), "s": hex(decoded.s), "hash": tx_hash,
    }  # fmt: skip
    if f.type == 0:
        chain = f.chain_id
        out["v"] = hex(decoded.y_parity + (27 if chain is None else chain * 2 + 35))
        out["gasPrice"] = hex(f.gas_price or 0)
        if chain is not None:
            out["chainId"] = hex(chain)
        return out
    out |= {"chainId": hex(f.chain_id or 0), "yParity": hex(decoded.y_parity),
            "v": hex(decoded.y_parity),
            "accessList": [{"address": "0x" + a.hex(), "storageKeys": ["0x" + k.hex() for k in ks]}
                           for a, ks in f.access_list]}  # fmt: skip
    if f.type == 1:
        out["gasPrice"] = hex(f.gas_price or 0)
        return out
    out |= {"maxFeePerGas": hex(f.max_fee_per_gas or 0),
            "maxPriorityFeePerGas": hex(f.max_priority_fee_per_gas or 0)}  # fmt: skip
    if f.type == 3:
        out |= {"maxFeePerBlobGas": hex(f.max_fee_per_blob_gas or 0),
                "blobVersionedHashes": ["0x" + h.hex() for h in f.blob_hashes]}  # fmt: skip
    if f.type == 4:
        out["authorizationList"] = [
            {"chainId": hex(a.chain_id), "address": "0x" + a.address.hex(),
             "nonce": hex(a.nonce), "yParity": hex(a.y_parity), "r": hex(a.r), "s": hex(a.s)}
            for a in f.authorizations
        ]  # fmt: skip
    return out

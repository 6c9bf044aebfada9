"""What a blob (EIP-4844, type 3) or set-code (EIP-7702, type 4) signature needs beyond the
1559 fields, and the bytes a blob transaction goes out as.

- Type 3: the versioned hashes of the intent's blobs (``blobs.intent_sidecar``, KZG with
  ``ckzg``, cached) and ``maxFeePerBlobGas``: the intent's for the first signature, +100% over
  the highest blob fee already signed at the nonce for every re-sign (``pricing.blob_fee``; the
  fee is read back from the journaled attempts, so it survives a restart). The signer signs the
  canonical form; every RPC gets the *network form* with the version-0 (EIP-4844) sidecar,
  which is what :attr:`nonce.Attempt.raw` holds, so a resend after a reorg or a restart sends
  the same blobs with the same proofs.
- Type 4: the authorization list, eth-account style. Pre-signed items go as given; an item to
  sign is signed by the enclave (``sign_authorization``) with the sender's key at nonce
  ``tx nonce + 1`` (EIP-7702 bumps the sender's nonce for the transaction before it applies
  the authorizations, so a self-sponsored authorization is valid at the next nonce only; the
  book reserves both, ``Intent.nonce_span``). The enclave signs only delegations to its
  ``allowed_delegates``, and signs the same delegate again at a nonce it signed before, so a
  re-sign after a reorg gets the same authorization.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from broadcaster.tx.blobs import blob_fee_of, intent_sidecar, network_form
from broadcaster.tx.pricing import FeePolicy, blob_fee
from nonce import NonceBook, TxRecord, TxState
from signer_client import SignedTx

__all__ = [
    "SIDECAR_VERSION",
    "AuthKey",
    "BlobFloors",
    "Delegated",
    "NoAuthorizationSigner",
    "blob_cancel_refusal",
    "blob_fee_signed",
    "typed_fields",
    "wire_form",
]

SIDECAR_VERSION = 0
"""EIP-4844 blob proofs (Cancun, Prague). Version 1 (EIP-7594 cell proofs, Osaka) is
``blobs.network_form(..., version=1)``: 128 proofs per blob, tens of milliseconds to compute."""


class NoAuthorizationSigner(Exception):
    """The signer seam has no ``sign_authorization`` (a fake for types 0-2 only)."""


def blob_fee_signed(record: TxRecord) -> int | None:
    """The highest ``maxFeePerBlobGas`` signed at ``record``'s nonce so far (``None``: none)."""
    fees = [
        fee for a in record.attempts if not a.is_noop and (fee := blob_fee_of(a.raw)) is not None
    ]
    return max(fees) if fees else None


class BlobFloors:
    """The blob-fee floor per ``(sender, nonce)``: the highest ``maxFeePerBlobGas`` signed there,
    from the record's attempts and from signatures that are no attempt (a replacement signed
    ahead, then discarded) or that the enclave refused as not above what it signed before
    (``nonce_conflict``), as ``AttemptLedger.floor`` does for the other two fee fields."""

    def __init__(self) -> None:
        self._fees: dict[tuple[str, int], int] = {}

    def floor(self, record: TxRecord) -> int | None:
        known = self._fees.get((record.sender, record.nonce))
        signed = blob_fee_signed(record)
        if known is None or signed is None:
            return signed if known is None else known
        return max(known, signed)

    def raise_to(self, record: TxRecord, tx: dict[str, Any]) -> None:
        fee = tx.get("maxFeePerBlobGas")
        if fee is not None:
            key = (record.sender, record.nonce)
            self._fees[key] = max(fee, self._fees.get(key, 0))

    def forget(self, record: TxRecord) -> None:
        self._fees.pop((record.sender, record.nonce), None)


_IN_FLIGHT = (TxState.SIGNED, TxState.BROADCAST, TxState.REORGED)


class Delegated:
    """Senders this service delegated (a self-sponsored EIP-7702 authorization signed here).

    geth (``core/txpool``, ``ErrInflightTxLimitReached``) lets an account that is delegated, or
    has a pending authorization, hold one transaction in its pool: a second one is refused
    (``in-flight transaction limit reached for delegated accounts``). So the first signature of
    such a sender's next intent waits while another of its transactions is in flight (signed,
    sent, not yet in a canonical block), and is retried with the executor's backoff. O(1) for
    every other sender: only senders in the set have their records looked at. Accounts
    delegated elsewhere are not known here: for them geth's answer is a full pool, retried.
    """

    def __init__(self) -> None:
        self.senders: set[str] = set()

    def note(self, record: TxRecord) -> None:
        if record.intent.nonce_span > 1:
            self.senders.add(record.sender)

    def busy(self, record: TxRecord, book: NonceBook) -> bool:
        """Another transaction of ``record``'s delegated sender is in flight."""
        if record.sender not in self.senders:
            return False
        return any(
            other is not record
            and other.state in _IN_FLIGHT
            and other.block is None
            and not other.released
            for other in book.records(record.sender)
        )


def blob_cancel_refusal(record: TxRecord) -> str | None:
    """Why a cancel of ``record`` cannot work now, for a blob payload sent and not mined: geth
    (and reth) keep one account in one pool, so while the blob tx is pooled a type-2 noop is
    answered ``address already reserved``, and the blobpool replaces a blob tx only with another
    blob tx at +100% on all three fees, which the enclave signs at this nonce only for this
    intent's own blobs. "cancelled" would be a promise the nodes refuse to keep. After a reorg
    (``reorged``: geth's blobpool does not take dropped blob txs back) the noop may go."""
    if record.intent.tx_type != 3 or record.state not in (TxState.SIGNED, TxState.BROADCAST):
        return None
    if not any(not a.is_noop for a in record.attempts):
        return None
    return (
        f"intent {record.intent.id} is a blob transaction already sent: a node's pool replaces "
        "it only with a blob transaction (EIP-4844, +100% on all three fees), never with the "
        "noop a cancel is (geth: 'address already reserved'); it stays as it is until mined, "
        "reorged out or past validUntilBlock"
    )


AuthKey = tuple[str, int, str, int]
"""``(authority, chain_id, delegate, nonce)`` of an authorization the enclave signed."""


async def typed_fields(
    record: TxRecord,
    signer: Any,
    policy: FeePolicy,
    blob_floor: int | None = None,
    signed_auths: dict[AuthKey, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``pricing.tx_dict`` keyword arguments for the payload of a type-3/4 ``record``;
    ``blob_floor``: the highest blob fee signed at its nonce (:class:`BlobFloors`; default: as
    its attempts say). ``signed_auths`` keeps the authorizations the enclave signed: a re-sign
    after a reorg reuses one (the enclave would sign the very same bytes again, RFC 6979)
    instead of a second enclave round trip on the reaction path.

    Raises what the signer's ``sign_authorization`` raises (``PolicyDenied`` for a delegate the
    enclave's policy refuses, ``SignerError`` when it is down) and :class:`NoAuthorizationSigner`.
    """
    intent = record.intent
    if intent.tx_type == 3:
        car = intent_sidecar(intent.blobs)
        return {
            "blob_fee": blob_fee(
                intent, blob_fee_signed(record) if blob_floor is None else blob_floor, policy
            ),
            "blob_hashes": car.versioned_hashes,
        }
    if intent.tx_type != 4:
        return {}
    items: list[dict[str, Any]] = []
    for auth in intent.authorizations:
        if auth.signature is not None:
            y, r, s = auth.signature
            items.append(
                {
                    "chainId": auth.chain_id,
                    "address": auth.address,
                    "nonce": auth.nonce,
                    "yParity": y,
                    "r": r,
                    "s": s,
                }
            )
            continue
        key = (record.sender, auth.chain_id, auth.address, record.nonce + 1)
        done = signed_auths.get(key) if signed_auths is not None else None
        if done is None:
            sign = getattr(signer, "sign_authorization", None)
            if sign is None:
                raise NoAuthorizationSigner("this signer cannot sign EIP-7702 authorizations")
            signed = await sign(
                {"chainId": auth.chain_id, "address": auth.address, "nonce": record.nonce + 1},
                record.sender,
            )
            done = signed.as_dict()
            if signed_auths is not None:
                signed_auths[key] = done
        items.append(done)
    return {"authorizations": items}


def wire_form(record: TxRecord, signed: SignedTx) -> SignedTx:
    """``signed`` as every RPC takes it: a blob payload in its network form (same hash)."""
    if signed.tx_type != 3 or not record.intent.blobs:
        return signed
    raw = network_form(signed.raw, intent_sidecar(record.intent.blobs), SIDECAR_VERSION)
    return dataclasses.replace(signed, raw=raw)

"""What a signature at a record's nonce looks like: the tx dict and its fees, by tx type.

Pure. Replacement fees follow DESIGN.md §5 by type:

- EIP-1559 (type 2): both ``maxFeePerGas`` and ``maxPriorityFeePerGas`` at least +``bump_percent``
  over the floor, and ``maxFeePerGas >= 2 * baseFee + tip`` (``nonce.fees.replacement_fees``);
- legacy and EIP-2930 (types 0, 1): ``gasPrice`` +``bump_percent``, at least ``baseFee + tip``,
  no headroom on top (``nonce.fees.legacy_replacement_price``);
- EIP-4844 blob (type 3): +100% on all three fee fields, ``maxFeePerBlobGas`` included (geth's
  blobpool, ``blobpool.PriceBump``), or ``bump_percent`` if higher (:func:`blob_fee`);
- EIP-7702 set-code (type 4): as type 2;
- a noop (0-value self-transfer) is always type 2, the enclave's noop shape, also at a blob
  nonce. geth keeps one account's transactions in one pool: while a blob tx of the sender is
  pooled, a type-2 noop is answered ``address already reserved`` (retried, like a full pool);
  a blob *replacement* must be a blob tx, which a payload re-sign always is. So the noop of a
  cancelled or expired blob intent goes through once its blob tx left the pool (mined, or
  dropped by a reorg that geth's blobpool does not re-add).

The *floor* is the highest fees ever signed at that nonce (``AttemptLedger.floor``): the enclave
refuses a new payload there that does not beat its last signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nonce import Fees, Intent
from nonce.fees import blob_fee_replacement, legacy_replacement_price, replacement_fees

__all__ = ["FeePolicy", "blob_fee", "initial_fees", "noop_fees", "replacement", "tx_dict"]


@dataclass(frozen=True, slots=True)
class FeePolicy:
    """``[fees]``: ``bump_percent``, ``priority_fee_wei`` (the tip of noops and of intents that
    give none), ``fee_cap`` (never sign ``maxFeePerGas`` above it), ``max_bumps`` (underpriced
    re-signs per nonce), ``max_gap_fill`` (noops per sender before an operator is asked)."""

    bump_percent: int = 10
    fee_cap: int | None = None
    max_bumps: int = 8
    priority_fee: int = 1_000_000_000
    max_gap_fill: int = 4


def initial_fees(intent: Intent) -> Fees:
    return Fees(intent.max_fee_per_gas, intent.max_priority_fee_per_gas)


def noop_fees(base_fee: int | None, policy: FeePolicy) -> Fees:
    """A fresh noop's fees (nothing was signed at its nonce yet)."""
    tip = policy.priority_fee
    fee = 2 * (base_fee or 1_000_000_000) + tip
    if policy.fee_cap is not None:
        fee = min(fee, policy.fee_cap)
        tip = min(tip, fee)
    return Fees(fee, tip)


def replacement(
    intent: Intent, floor: Fees | None, base_fee: int | None, policy: FeePolicy, *, noop: bool
) -> Fees:
    """Fees for a new signature at the nonce of ``intent`` whose floor is ``floor``.

    Raises ``nonce.FeeCapExceeded`` when no valid replacement fits under the cap.
    """
    if floor is None:
        return noop_fees(base_fee, policy) if noop else initial_fees(intent)
    legacy = not noop and intent.tx_type in (0, 1)
    if legacy:
        price = legacy_replacement_price(
            floor.max_fee_per_gas,
            base_fee=base_fee,
            bump_percent=policy.bump_percent,
            min_tip=min(policy.priority_fee, intent.max_priority_fee_per_gas),
            cap=policy.fee_cap,
        )
        return Fees(price, price)
    return replacement_fees(
        floor,
        base_fee=base_fee or 0,
        bump_percent=policy.bump_percent,
        blob=not noop and intent.tx_type == 3,
        tip=policy.priority_fee if noop or intent.noop else intent.max_priority_fee_per_gas,
        cap=policy.fee_cap,
    )


def blob_fee(intent: Intent, signed_before: int | None, policy: FeePolicy) -> int:
    """``maxFeePerBlobGas`` of the next blob signature: the intent's, or when a blob tx was
    signed at the nonce before (``signed_before``: the highest blob fee there) that fee bumped
    by +100% (``bump_percent`` if higher), whichever is more."""
    if signed_before is None:
        return intent.max_fee_per_blob_gas
    bumped = blob_fee_replacement(signed_before, bump_percent=max(policy.bump_percent, 100))
    return max(intent.max_fee_per_blob_gas, bumped)


def tx_dict(
    intent: Intent,
    nonce: int,
    fees: Fees,
    *,
    noop: bool = False,
    blob_fee: int | None = None,
    blob_hashes: tuple[bytes, ...] = (),
    authorizations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The eth-account style dict the signer takes, for the intent (or a noop at its nonce).

    Type 3 takes ``blob_fee`` (:func:`blob_fee`) and the sidecar's ``blob_hashes``; type 4 the
    signed ``authorizations`` (eth-account dicts): the executor has them from the sidecar cache
    and the enclave."""
    to: str | None = intent.sender if noop else intent.to
    value, data, gas = (0, b"", 21_000) if noop else (intent.value, intent.data, intent.gas)
    tx_type = 2 if noop else intent.tx_type
    tx: dict[str, Any] = {
        "type": tx_type,
        "chainId": intent.chain_id,
        "nonce": nonce,
        "to": to,
        "value": value,
        "data": data,
        "gas": gas,
    }
    if tx_type >= 2:
        tx["maxFeePerGas"] = fees.max_fee_per_gas
        tx["maxPriorityFeePerGas"] = fees.max_priority_fee_per_gas
    else:
        tx["gasPrice"] = fees.max_fee_per_gas
    if tx_type != 0:
        tx["accessList"] = (
            [{"address": a, "storageKeys": list(keys)} for a, keys in intent.access_list]
            if not noop
            else []
        )
    if tx_type == 3:
        tx["maxFeePerBlobGas"] = intent.max_fee_per_blob_gas if blob_fee is None else blob_fee
        tx["blobVersionedHashes"] = list(blob_hashes)
    elif tx_type == 4:
        tx["authorizationList"] = authorizations or []
    return tx

"""Fee rules for replacing a transaction at the same nonce: pure integer math, wei everywhere.

geth's txpool replace rule (``core/txpool/legacypool/list.go``, ``list.Add``): a transaction
replaces the one at its nonce only when *both* its ``maxFeePerGas`` and ``maxPriorityFeePerGas``
are strictly higher than the old ones and at least ``old * (100 + PriceBump) / 100`` (integer
division; ``--txpool.pricebump`` defaults to 10). The blob pool (``core/txpool/blobpool``) asks
for 100 % on every fee field, ``maxFeePerBlobGas`` included. Nethermind, Erigon, Besu and reth
use the same 10 % default.

We compute the bump with *ceiling* division (``ceil(old * 1.1)``, never 9.99 %) and at least
``old + 1`` (a 0-wei tip must still rise), so what we sign always clears geth's floored threshold.

On top of the bump, a re-signed EIP-1559 transaction must fit the *new* chain's base fee:
``maxFeePerGas >= 2 * baseFee + maxPriorityFeePerGas`` (the usual wallet headroom: the base fee
rises at most 12.5 % per block, EIP-1559 ``BASE_FEE_MAX_CHANGE_DENOMINATOR = 8``, so 2x survives
about six full blocks). A legacy or EIP-2930 ``gasPrice`` is paid in full, so it gets no headroom
on top (DESIGN.md §5): the bump, and at least ``baseFee + min_tip`` so that it can be mined now.

A fee cap (the operator's ``[fees] max_fee_cap_wei`` or the enclave policy's) clamps the headroom,
never the bump: while the smallest valid replacement fits under the cap, the result is that
replacement with ``maxFeePerGas`` lowered to the cap; only when the bump itself exceeds the cap
is there no valid replacement (:class:`~nonce.errors.FeeCapExceeded`).
"""

from __future__ import annotations

from dataclasses import dataclass

from nonce.errors import BumpTooSmall, FeeCapExceeded

MIN_BUMP_PERCENT = 10
"""geth's default ``txpool.pricebump``; the smallest bump any mainstream client accepts."""

BLOB_BUMP_PERCENT = 100
"""geth's blob pool price bump (EIP-4844 type-3 transactions)."""

BASE_FEE_HEADROOM = 2
"""``maxFeePerGas >= BASE_FEE_HEADROOM * baseFee + tip`` on re-sign."""

BASE_FEE_MAX_CHANGE_DENOMINATOR = 8
"""EIP-1559: the base fee moves by at most 1/8 per block."""


@dataclass(frozen=True, slots=True)
class Fees:
    """EIP-1559 fee fields of one attempt (wei per gas)."""

    max_fee_per_gas: int
    max_priority_fee_per_gas: int


def check_bump_percent(bump_percent: int, *, blob: bool = False) -> int:
    """The bump to use: ``bump_percent`` (>= 10, else :class:`BumpTooSmall`), >= 100 for blobs."""
    if bump_percent < MIN_BUMP_PERCENT:
        raise BumpTooSmall(bump_percent, MIN_BUMP_PERCENT)
    return max(bump_percent, BLOB_BUMP_PERCENT) if blob else bump_percent


def bump(value: int, percent: int) -> int:
    """``max(ceil(value * (100 + percent) / 100), value + 1)`` in exact integers."""
    raised = -((-value * (100 + percent)) // 100)
    return raised if raised > value else value + 1


def min_replacement(old: Fees, *, bump_percent: int = MIN_BUMP_PERCENT, blob: bool = False) -> Fees:
    """The lowest fees that replace ``old`` under geth's rule (before any base-fee floor)."""
    percent = check_bump_percent(bump_percent, blob=blob)
    return Fees(bump(old.max_fee_per_gas, percent), bump(old.max_priority_fee_per_gas, percent))


def replacement_fees(
    old: Fees,
    *,
    base_fee: int,
    bump_percent: int = MIN_BUMP_PERCENT,
    blob: bool = False,
    tip: int | None = None,
    cap: int | None = None,
) -> Fees:
    """Fees for a re-sign at the same nonce after a reorg or an "underpriced" answer.

    ``tip`` is the priority fee the caller would like now (e.g. the intent's); the result is at
    least the bumped old tip. ``base_fee`` is the new canonical tip's ``baseFeePerGas``. With
    ``cap`` (the operator's or the enclave policy's fee cap) raises :class:`FeeCapExceeded`
    rather than sign something that would be refused anyway.
    """
    floor = min_replacement(old, bump_percent=bump_percent, blob=blob)
    new_tip = floor.max_priority_fee_per_gas
    if tip is not None and tip > new_tip:
        new_tip = tip
    new_fee = max(floor.max_fee_per_gas, BASE_FEE_HEADROOM * base_fee + new_tip)
    if cap is not None and new_fee > cap:
        if floor.max_fee_per_gas > cap:
            raise FeeCapExceeded("maxFeePerGas", floor.max_fee_per_gas, cap)
        if floor.max_priority_fee_per_gas > cap:
            raise FeeCapExceeded("maxPriorityFeePerGas", floor.max_priority_fee_per_gas, cap)
        new_fee = cap  # the bump fits: give up headroom, not the replacement
        new_tip = min(new_tip, cap)  # EIP-1559: the tip never exceeds maxFeePerGas
    return Fees(new_fee, new_tip)


def legacy_replacement_price(
    old_price: int,
    *,
    base_fee: int | None = None,
    bump_percent: int = MIN_BUMP_PERCENT,
    min_tip: int = 0,
    cap: int | None = None,
) -> int:
    """``gasPrice`` for a legacy/EIP-2930 re-sign: the bump, at least ``base_fee + min_tip``, no
    1559 headroom (32 gwei at base fee 30 becomes 35.2 gwei, not ``2 * 30 + 35.2``)."""
    bumped = bump(old_price, check_bump_percent(bump_percent))
    price = bumped
    if base_fee is not None:
        price = max(price, base_fee + min_tip)
    if cap is not None and price > cap:
        if bumped > cap:
            raise FeeCapExceeded("gasPrice", bumped, cap)
        price = cap
    return price


def blob_fee_replacement(
    old_max_fee_per_blob_gas: int, *, bump_percent: int = BLOB_BUMP_PERCENT
) -> int:
    """``maxFeePerBlobGas`` for a blob re-sign (the blob pool bumps it like the other fields)."""
    return bump(old_max_fee_per_blob_gas, check_bump_percent(bump_percent, blob=True))


def geth_accepts_replacement(old: Fees, new: Fees, *, price_bump: int = MIN_BUMP_PERCENT) -> bool:
    """geth's check, transcribed (floored thresholds, strictly higher on both fields).

    The reference the tests pin ``replacement_fees`` to; also what a signer policy can use to tell
    a genuine fee-bump replacement from a different payload at an already-signed nonce.
    """
    if old.max_fee_per_gas >= new.max_fee_per_gas:
        return False
    if old.max_priority_fee_per_gas >= new.max_priority_fee_per_gas:
        return False
    threshold_fee = old.max_fee_per_gas * (100 + price_bump) // 100
    threshold_tip = old.max_priority_fee_per_gas * (100 + price_bump) // 100
    return new.max_fee_per_gas >= threshold_fee and new.max_priority_fee_per_gas >= threshold_tip


__all__ = [
    "BASE_FEE_HEADROOM",
    "BLOB_BUMP_PERCENT",
    "MIN_BUMP_PERCENT",
    "Fees",
    "blob_fee_replacement",
    "bump",
    "check_bump_percent",
    "geth_accepts_replacement",
    "legacy_replacement_price",
    "min_replacement",
    "replacement_fees",
]

"""Fee rules: geth's replace rule with ceiling division, the base-fee floor, caps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nonce.errors import BumpTooSmall, FeeCapExceeded
from nonce.fees import (
    Fees,
    blob_fee_replacement,
    bump,
    check_bump_percent,
    geth_accepts_replacement,
    legacy_replacement_price,
    min_replacement,
    replacement_fees,
)

GWEI = 10**9
wei = st.integers(min_value=0, max_value=10**30)
percents = st.integers(min_value=10, max_value=500)


@pytest.mark.parametrize(
    "value,percent,expected",
    [
        (100, 10, 110),
        (101, 10, 112),  # 111.1 rounds up, never 9.99 %
        (109, 10, 120),  # 119.9 -> 120
        (9, 10, 10),  # 9.9 -> 10
        (1, 10, 2),  # 1.1 -> 2
        (0, 10, 1),  # a 0-wei tip must still rise (geth wants strictly higher)
        (0, 100, 1),
        (1, 100, 2),
        (30 * GWEI, 10, 33 * GWEI),
        (30 * GWEI + 1, 10, 33 * GWEI + 2),  # 33 000 000 001.1 -> ...002
        (7, 12, 8),  # 7.84 -> 8
        (10**30, 10, 11 * 10**29),
    ],
)
def test_bump_rounds_up(value: int, percent: int, expected: int) -> None:
    assert bump(value, percent) == expected


@pytest.mark.parametrize(
    "old,base_fee,kwargs,expected",
    [
        # the bump dominates: base fee is low
        (Fees(30 * GWEI, 1 * GWEI), 1 * GWEI, {}, Fees(33 * GWEI, 1_100_000_000)),
        # the new base fee dominates: 2 * 20 gwei + tip
        (Fees(30 * GWEI, 1 * GWEI), 20 * GWEI, {}, Fees(41_100_000_000, 1_100_000_000)),
        # a larger wanted tip is taken, and the fee cap follows it
        (Fees(30 * GWEI, 1 * GWEI), 15 * GWEI, {"tip": 5 * GWEI}, Fees(35 * GWEI, 5 * GWEI)),
        # a smaller wanted tip never undercuts the bump
        (Fees(30 * GWEI, 2 * GWEI), 1 * GWEI, {"tip": 1}, Fees(33 * GWEI, 2_200_000_000)),
        # blob transactions need +100 % on both fields
        (Fees(30 * GWEI, 1 * GWEI), 1 * GWEI, {"blob": True}, Fees(60 * GWEI, 2 * GWEI)),
        # bump_percent 25
        (Fees(40 * GWEI, 4 * GWEI), 0, {"bump_percent": 25}, Fees(50 * GWEI, 5 * GWEI)),
        # zero fees still rise
        (Fees(0, 0), 0, {}, Fees(1, 1)),
    ],
)
def test_replacement_fees_table(
    old: Fees, base_fee: int, kwargs: dict[str, int | bool], expected: Fees
) -> None:
    got = replacement_fees(old, base_fee=base_fee, **kwargs)  # type: ignore[arg-type]
    assert got == expected
    assert geth_accepts_replacement(old, got, price_bump=100 if kwargs.get("blob") else 10)


def test_a_bump_below_ten_percent_is_refused() -> None:
    with pytest.raises(BumpTooSmall):
        check_bump_percent(9)
    with pytest.raises(BumpTooSmall):
        replacement_fees(Fees(10, 1), base_fee=1, bump_percent=5)
    assert check_bump_percent(10) == 10
    assert check_bump_percent(10, blob=True) == 100
    assert check_bump_percent(150, blob=True) == 150


def test_the_cap_clamps_the_headroom_but_keeps_a_valid_bump_under_it() -> None:
    # 2 * 50 + 1.1 gwei of headroom exceeds the cap; the +10% bump (33 gwei) fits under it.
    fees = replacement_fees(Fees(30 * GWEI, GWEI), base_fee=50 * GWEI, cap=100 * GWEI)
    assert fees == Fees(100 * GWEI, 1_100_000_000)
    assert geth_accepts_replacement(Fees(30 * GWEI, GWEI), fees)


def test_the_cap_is_enforced_when_no_valid_bump_fits_under_it() -> None:
    with pytest.raises(FeeCapExceeded) as caught:
        replacement_fees(Fees(95 * GWEI, GWEI), base_fee=50 * GWEI, cap=100 * GWEI)
    assert caught.value.required == 104_500_000_000
    assert caught.value.field == "maxFeePerGas"


@pytest.mark.parametrize(
    "old,base_fee,expected",
    [
        (20 * GWEI, None, 22 * GWEI),
        (20 * GWEI, 30 * GWEI, 30 * GWEI),  # raised to the base fee, nothing on top
        (32 * GWEI, 30 * GWEI, 35_200_000_000),  # +10% only: not the 1559 rule's 95.2 gwei
        (20 * GWEI, 7, 22 * GWEI),
        (1, None, 2),
    ],
)
def test_legacy_gas_price_table(old: int, base_fee: int | None, expected: int) -> None:
    assert legacy_replacement_price(old, base_fee=base_fee) == expected


def test_legacy_cap_and_blob_fee() -> None:
    with pytest.raises(FeeCapExceeded):
        legacy_replacement_price(100, cap=105)
    assert legacy_replacement_price(100, base_fee=200, cap=150) == 150  # bump fits: clamp
    assert blob_fee_replacement(7) == 14
    with pytest.raises(BumpTooSmall):
        blob_fee_replacement(7, bump_percent=3)


@pytest.mark.parametrize(
    "old,new,accepted",
    [
        (Fees(100, 10), Fees(110, 11), True),
        (Fees(100, 10), Fees(109, 11), False),
        (Fees(100, 10), Fees(110, 10), False),  # tip not raised
        (Fees(101, 10), Fees(111, 11), True),  # geth floors the threshold: 111.1 -> 111
        (Fees(0, 0), Fees(0, 0), False),  # strictly higher is required
        (Fees(0, 0), Fees(1, 1), True),
    ],
)
def test_geth_rule_transcription(old: Fees, new: Fees, accepted: bool) -> None:
    assert geth_accepts_replacement(old, new) is accepted


@given(fee=wei, tip=wei, percent=percents)
def test_min_replacement_is_at_least_old_times_the_bump(fee: int, tip: int, percent: int) -> None:
    tip = min(tip, fee)
    new = min_replacement(Fees(fee, tip), bump_percent=percent)
    # exact rational comparison: new * 100 >= old * (100 + percent), and strictly higher
    assert new.max_fee_per_gas * 100 >= fee * (100 + percent)
    assert new.max_priority_fee_per_gas * 100 >= tip * (100 + percent)
    assert new.max_fee_per_gas > fee and new.max_priority_fee_per_gas > tip
    # and minimal: one wei less would not do (unless the +1 floor decided)
    assert (new.max_fee_per_gas - 1) * 100 < fee * (100 + percent) or new.max_fee_per_gas == fee + 1


@given(fee=wei, tip=wei, base=wei, percent=percents, blob=st.booleans())
def test_replacement_fees_always_pass_geth_and_the_base_fee_floor(
    fee: int, tip: int, base: int, percent: int, blob: bool
) -> None:
    tip = min(tip, fee)
    old = Fees(fee, tip)
    new = replacement_fees(old, base_fee=base, bump_percent=percent, blob=blob)
    assert geth_accepts_replacement(old, new, price_bump=max(percent, 100) if blob else percent)
    assert new.max_fee_per_gas >= 2 * base + new.max_priority_fee_per_gas
    assert new.max_priority_fee_per_gas <= new.max_fee_per_gas  # still a valid EIP-1559 tx


@given(a=wei, b=wei, percent=percents)
def test_bump_is_monotone(a: int, b: int, percent: int) -> None:
    lo, hi = sorted((a, b))
    assert bump(lo, percent) <= bump(hi, percent)


@given(fee=wei, tip=wei, base_lo=wei, base_hi=wei)
def test_replacement_fees_are_monotone_in_the_base_fee(
    fee: int, tip: int, base_lo: int, base_hi: int
) -> None:
    tip = min(tip, fee)
    lo, hi = sorted((base_lo, base_hi))
    a = replacement_fees(Fees(fee, tip), base_fee=lo)
    b = replacement_fees(Fees(fee, tip), base_fee=hi)
    assert a.max_fee_per_gas <= b.max_fee_per_gas
    assert a.max_priority_fee_per_gas == b.max_priority_fee_per_gas


@given(fee=wei, tip=wei, rounds=st.integers(min_value=1, max_value=20))
def test_repeated_bumps_keep_replacing(fee: int, tip: int, rounds: int) -> None:
    old = Fees(fee, min(tip, fee))
    for _ in range(rounds):
        new = replacement_fees(old, base_fee=0)
        assert geth_accepts_replacement(old, new)
        old = new

"""The enclave policy: every rule denies with its name; fee bumps follow geth's replace rule."""

from __future__ import annotations

from typing import Any

import pytest

from enclave.policy import Policy, PolicyConfig
from signer_client.errors import PolicyDenied
from signer_client.txcodec import TxFields, signing_hash, tx_from_dict

SENDER = bytes.fromhex("f39fd6e51aad88f6f4ce6ab8827279cfffb92266")
TO = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def fields(**overrides: Any) -> TxFields:
    tx = {"type": 2, "chainId": 1, "nonce": 0, "gas": 21000, "to": TO, "value": 0,
          "maxFeePerGas": 100, "maxPriorityFeePerGas": 10}  # fmt: skip
    tx.update(overrides)
    return tx_from_dict({k: v for k, v in tx.items() if v is not None})


def check(policy: Policy, f: TxFields, now: float = 0.0) -> None:
    policy.check(f, SENDER, signing_hash(f), now)


def rule_of(policy: Policy, f: TxFields, now: float = 0.0) -> str:
    with pytest.raises(PolicyDenied) as info:
        check(policy, f, now)
    return info.value.rule


def test_a_replacement_of_the_same_intent_needs_both_fees_raised_by_at_least_ten_percent() -> None:
    policy = Policy(PolicyConfig(chain_ids=(1,)))
    check(policy, fields())
    assert rule_of(policy, fields(maxFeePerGas=109, maxPriorityFeePerGas=11)) == "nonce_conflict"
    assert rule_of(policy, fields(maxFeePerGas=200, maxPriorityFeePerGas=10)) == "nonce_conflict"
    check(policy, fields(maxFeePerGas=110, maxPriorityFeePerGas=11))  # exactly +10%
    # The next replacement is measured against the latest attempt, not the first.
    assert rule_of(policy, fields(maxFeePerGas=120, maxPriorityFeePerGas=12)) == "nonce_conflict"
    check(policy, fields(maxFeePerGas=121, maxPriorityFeePerGas=13))


@pytest.mark.parametrize(
    "swap",
    [
        {"to": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"},
        {"value": 1},
        {"data": "0x01"},
        {"gas": 21001},
        {"type": 1, "gasPrice": 10**6, "maxFeePerGas": None, "maxPriorityFeePerGas": None},
        {"accessList": [{"address": TO, "storageKeys": []}]},
    ],
)
@pytest.mark.parametrize("fee_factor", [1, 2, 10, 1000])
def test_attacker_swaps_the_payload_at_a_used_nonce_with_any_fees_and_is_refused(
    swap: dict[str, Any], fee_factor: int
) -> None:
    policy = Policy(PolicyConfig(chain_ids=(1,)))
    check(policy, fields())
    bumped = {"maxFeePerGas": 100 * fee_factor + 10, "maxPriorityFeePerGas": 10 * fee_factor + 1}
    tx = {**bumped, **swap}
    assert rule_of(policy, fields(**tx)) == "nonce_conflict"


def test_the_noop_may_take_a_signed_nonce_at_any_fees() -> None:
    me = "0x" + SENDER.hex()
    policy = Policy(PolicyConfig(chain_ids=(1,), allowed_to=(TO.lower(),)))
    check(policy, fields(value=5))
    check(policy, fields(to=me, value=0, maxFeePerGas=100, maxPriorityFeePerGas=10))
    # ... and does not open the nonce to another payload.
    assert rule_of(policy, fields(value=6, maxFeePerGas=500, maxPriorityFeePerGas=50)) == (
        "nonce_conflict"
    )


def test_allow_self_is_only_the_noop_shape() -> None:
    me = "0x" + SENDER.hex()
    policy = Policy(PolicyConfig(chain_ids=(1,), allowed_to=()))
    assert rule_of(policy, fields(to=me, value=10**20)) == "to_not_allowed"
    assert rule_of(policy, fields(to=me, data="0xa9059cbb")) == "to_not_allowed"
    check(policy, fields(to=me))


def test_a_flood_of_100000_far_future_nonces_evicts_nothing() -> None:
    policy = Policy(PolicyConfig(chain_ids=(1,), rate_per_second=1e9, burst=10**9))
    check(policy, fields(nonce=5))
    refused = 0
    for n in range(10**6, 10**6 + 100_000):
        try:
            check(policy, fields(nonce=n))
        except PolicyDenied as exc:
            assert exc.rule == "nonce_window"
            refused += 1
    assert refused == 100_000
    assert policy.remembered() == 1
    # The real nonce is still remembered: the attacker's payload swap there is refused.
    assert rule_of(policy, fields(nonce=5, value=7, maxFeePerGas=10**4)) == "nonce_conflict"


def test_the_window_slides_by_refusing_what_it_forgets() -> None:
    policy = Policy(PolicyConfig(chain_ids=(1,), nonce_window=16, rate_per_second=1e9, burst=10**9))
    for n in range(0, 40):
        check(policy, fields(nonce=n))
    assert policy.remembered() <= 16
    # nonce 0 is forgotten, so it is refused, never signed with another payload.
    assert rule_of(policy, fields(nonce=0, value=9)) == "nonce_too_low"
    policy.advance_floor(1, SENDER, 39)
    assert rule_of(policy, fields(nonce=38, value=9)) == "nonce_too_low"
    assert rule_of(policy, fields(nonce=39, value=9)) == "nonce_conflict"


def test_re_signing_an_already_signed_payload_is_allowed() -> None:
    policy = Policy(PolicyConfig(chain_ids=(1,)))
    check(policy, fields())
    check(policy, fields(maxFeePerGas=110, maxPriorityFeePerGas=11))
    check(policy, fields())  # the first attempt again: same bytes, nothing new leaves


def test_a_legacy_replacement_compares_gas_price_as_both_fees() -> None:
    policy = Policy(PolicyConfig(chain_ids=(1,)))
    legacy = {"type": 0, "maxFeePerGas": None, "maxPriorityFeePerGas": None}
    check(policy, fields(gasPrice=100, **legacy))
    assert rule_of(policy, fields(gasPrice=109, **legacy)) == "nonce_conflict"
    check(policy, fields(gasPrice=110, **legacy))


def test_the_same_nonce_on_another_chain_or_sender_is_independent() -> None:
    policy = Policy(PolicyConfig(chain_ids=(1, 2)))
    check(policy, fields())
    check(policy, fields(chainId=2, value=5))
    policy.check(fields(value=5), b"\x01" * 20, signing_hash(fields(value=5)), 0.0)


def test_the_rate_limit_refills_with_time() -> None:
    policy = Policy(PolicyConfig(chain_ids=(1,), rate_per_second=2, burst=2))
    check(policy, fields(nonce=1), now=0.0)
    check(policy, fields(nonce=2), now=0.0)
    assert rule_of(policy, fields(nonce=3), now=0.1) == "rate_limit"
    check(policy, fields(nonce=3), now=0.6)


def test_a_denied_request_leaves_no_nonce_record() -> None:
    policy = Policy(PolicyConfig(chain_ids=(1,), max_value=10))
    assert rule_of(policy, fields(value=11)) == "value_cap"
    check(policy, fields(value=1))  # nonce 0 still free


def test_self_transfers_pass_the_allowlist_only_when_allowed() -> None:
    me = "0x" + SENDER.hex()
    assert rule_of(Policy(PolicyConfig(chain_ids=(1,), allowed_to=(), allow_self=False)),
                   fields(to=me)) == "to_not_allowed"  # fmt: skip
    check(Policy(PolicyConfig(chain_ids=(1,), allowed_to=())), fields(to=me))


def test_the_bump_percent_cannot_be_configured_below_ten() -> None:
    with pytest.raises(ValueError):
        PolicyConfig(bump_percent=5)


def test_the_policy_hash_changes_with_the_policy() -> None:
    assert PolicyConfig().policy_hash() == PolicyConfig().policy_hash()
    assert PolicyConfig().policy_hash() != PolicyConfig(max_gas=1).policy_hash()


def test_calldata_to_a_listed_destination_must_start_with_an_allowed_selector() -> None:
    transfer = "0xa9059cbb" + "00" * 64
    policy = Policy(PolicyConfig(chain_ids=(1,), allowed_selectors=((TO, ("0xa9059cbb",)),)))
    check(policy, fields(data=transfer))
    assert rule_of(policy, fields(nonce=1, data="0x095ea7b3" + "00" * 64)) == (
        "selector_not_allowed"
    )
    assert rule_of(policy, fields(nonce=1, data="0xa905")) == "selector_not_allowed"
    assert rule_of(policy, fields(nonce=1)) == "selector_not_allowed"  # empty needs "0x"
    other = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    check(policy, fields(nonce=1, to=other, data="0x12345678"))  # unlisted: no calldata rule


def test_the_cumulative_value_cap_counts_new_transactions_in_a_sliding_window() -> None:
    policy = Policy(PolicyConfig(chain_ids=(1,), max_value_per_window=10, value_window_seconds=60))
    check(policy, fields(nonce=0, value=6), now=0.0)
    check(policy, fields(nonce=0, value=6, maxFeePerGas=200, maxPriorityFeePerGas=20), now=1.0)
    assert rule_of(policy, fields(nonce=1, value=5), now=2.0) == "value_window_cap"
    check(policy, fields(nonce=1, value=4), now=2.0)  # the bump above did not count twice
    check(policy, fields(nonce=2, value=6), now=61.0)  # the first 6 left the window

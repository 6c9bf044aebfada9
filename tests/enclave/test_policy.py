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


def test_a_replacement_needs_both_fees_raised_by_at_least_ten_percent() -> None:
    policy = Policy(PolicyConfig(chain_ids=(1,)))
    check(policy, fields())
    assert rule_of(policy, fields(value=1)) == "nonce_conflict"
    assert (
        rule_of(policy, fields(value=1, maxFeePerGas=109, maxPriorityFeePerGas=11))
        == "nonce_conflict"
    )
    assert (
        rule_of(policy, fields(value=1, maxFeePerGas=200, maxPriorityFeePerGas=10))
        == "nonce_conflict"
    )
    check(policy, fields(value=1, maxFeePerGas=110, maxPriorityFeePerGas=11))  # exactly +10%
    # The next replacement is measured against the latest attempt, not the first.
    assert (
        rule_of(policy, fields(value=2, maxFeePerGas=120, maxPriorityFeePerGas=12))
        == "nonce_conflict"
    )
    check(policy, fields(value=2, maxFeePerGas=121, maxPriorityFeePerGas=13))


def test_re_signing_an_already_signed_payload_is_allowed() -> None:
    policy = Policy(PolicyConfig(chain_ids=(1,)))
    check(policy, fields())
    check(policy, fields(value=1, maxFeePerGas=110, maxPriorityFeePerGas=11))
    check(policy, fields())  # the first attempt again: same bytes, nothing new leaves


def test_a_legacy_replacement_compares_gas_price_as_both_fees() -> None:
    policy = Policy(PolicyConfig(chain_ids=(1,)))
    check(policy, fields(type=0, gasPrice=100, maxFeePerGas=None, maxPriorityFeePerGas=None))
    check(policy, fields(maxFeePerGas=110, maxPriorityFeePerGas=110))


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

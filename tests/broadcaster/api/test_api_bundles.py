"""``broadcaster_sendBundle`` parameters (pure, :mod:`broadcaster.api.bundles`): every rule
refused with the entry and the rule named, the members' ``validUntilBlock`` bound to the
bundle's ``maxBlockNumber``, and no builder configured refused clearly."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from broadcaster.api.bundles import (
    DEFAULT_RAW_BUNDLE_BLOCKS,
    MAX_BUNDLE_HORIZON,
    RawSlot,
    parse_bundle,
)
from broadcaster.api.intents import IntentDefaults, ParamError
from nonce import Intent

OURS = Account.from_key("0x" + "11" * 32).address.lower()
THEIRS_KEY = "0x" + "22" * 32
DEFAULTS = IntentDefaults(chain_id=31337, accounts=[OURS], private_routes=True)
INTENT = {
    "to": "0x" + "33" * 20,
    "gas": "0x5208",
    "maxFeePerGas": "0x10",
    "maxPriorityFeePerGas": "0x1",
}


def raw(key: str = THEIRS_KEY, chain_id: int = 31337) -> str:
    tx = {
        "type": 2,
        "chainId": chain_id,
        "nonce": 0,
        "to": "0x" + "44" * 20,
        "value": 1,
        "gas": 21_000,
        "maxFeePerGas": 16,
        "maxPriorityFeePerGas": 1,
    }
    return "0x" + bytes(Account.sign_transaction(tx, key).raw_transaction).hex()


def parse(params: Any, *, tip: int | None = 100, builders: bool = True) -> Any:
    return parse_bundle(params, DEFAULTS, ours=[OURS], tip=tip, builders=builders)


def refusal(params: Any, **kwargs: Any) -> str:
    with pytest.raises(ParamError) as caught:
        parse(params, **kwargs)
    return str(caught.value)


def test_intents_and_raw_transactions_in_order() -> None:
    theirs = raw()
    parsed = parse({"txs": [INTENT, {"raw": theirs}], "maxBlockNumber": "0x70"})
    intent, slot = parsed.slots
    assert isinstance(intent, Intent) and intent.private and intent.sender == OURS
    assert intent.valid_until_block == 0x70  # bound to maxBlockNumber
    assert isinstance(slot, RawSlot) and slot.raw == bytes.fromhex(theirs[2:])
    early = parse({"txs": [{**INTENT, "validUntilBlock": "0x66"}], "maxBlockNumber": "0x70"})
    assert early.intents[0].valid_until_block == 0x66  # the earlier of the two


def test_no_builder_is_refused_clearly() -> None:
    assert 'no [[rpcs]] of kind "builder" is configured' in refusal(
        {"txs": [INTENT]}, builders=False
    )


@pytest.mark.parametrize(
    ("entry", "wanted"),
    [
        ({"raw": raw(chain_id=1)}, "txs[1].raw: raw transaction refused (chain-id)"),
        ({"raw": raw("0x" + "11" * 32)}, "txs[1].raw: raw transaction refused (ours)"),
        ({"raw": "0xdeadbeef"}, "txs[1].raw: raw transaction refused (decode)"),
        ({"raw": "nothex"}, "txs[1].raw: expected 0x-prefixed hex bytes"),
        ({"raw": raw(), "from": OURS}, "txs[1]: a {raw} entry takes no other field"),
        ({**INTENT, "from": "0x" + "55" * 20}, "txs[1].from: 0x5555"),
        ({**INTENT, "private": False}, "txs[1].private: a bundle member is private"),
        ({**INTENT, "key": "k"}, "txs[1].key: bundle members take no idempotency key"),
        ({**INTENT, "gas": "0x1"}, "txs[1].gas"),
        ("0x00", "txs[1]: expected an intent object or {raw"),
    ],
)
def test_each_bad_entry_is_named(entry: Any, wanted: str) -> None:
    assert wanted in refusal({"txs": [INTENT, entry]})


def test_bundle_level_rules() -> None:
    assert "txs: expected a list of 1 to 16" in refusal({"txs": []})
    assert "txs: expected a list of 1 to 16" in refusal({"txs": [INTENT] * 17})
    assert "no intent of ours" in refusal({"txs": [{"raw": raw()}]})
    assert "already in the bundle" in refusal({"txs": [INTENT, {"raw": raw()}, {"raw": raw()}]})
    assert "unknown field" in refusal({"txs": [INTENT], "minTimestamp": 1})
    assert "blockNumber: 9 is after maxBlockNumber 8" in refusal(
        {"txs": [INTENT], "blockNumber": 9, "maxBlockNumber": 8}
    )
    assert "maxBlockNumber: 100 has passed: the next block is 101" in refusal(
        {"txs": [INTENT], "maxBlockNumber": 100}
    )
    assert "params: expected one bundle object" in refusal([{"txs": [INTENT]}, {}])


def test_reverting_hashes_name_only_raw_transactions_of_the_bundle() -> None:
    theirs = raw()
    slot = parse({"txs": [INTENT, {"raw": theirs}]}).slots[1]
    assert isinstance(slot, RawSlot)
    ok = parse({"txs": [INTENT, {"raw": theirs}], "revertingTxHashes": ["0x" + slot.hash.hex()]})
    assert ok.reverting == (slot.hash,)
    assert "revertingTxHashes[0]: not the hash of a {raw} transaction" in refusal(
        {"txs": [INTENT, {"raw": theirs}], "revertingTxHashes": ["0x" + "00" * 32]}
    )
    assert "revertingTxHashes[0]: expected a 32-byte" in refusal(
        {"txs": [INTENT], "revertingTxHashes": ["0x12"]}
    )


def test_a_raw_type4_tx_carrying_an_authorization_by_one_of_our_accounts_is_refused() -> None:
    """EIP-7702: the tuple's authority (ours) gets its nonce bumped and its code delegated when
    the raw tx lands -- a nonce we allocate moves under our members. Someone else's own
    authorization rides."""

    def type4(authority_key: str) -> str:
        auth = Account.sign_authorization(
            {"chainId": 31337, "address": "0x" + "66" * 20, "nonce": 0}, authority_key
        )
        tx = {
            "type": 4,
            "chainId": 31337,
            "nonce": 0,
            "to": "0x" + "44" * 20,
            "value": 0,
            "gas": 60_000,
            "maxFeePerGas": 16,
            "maxPriorityFeePerGas": 1,
            "authorizationList": [auth],
        }
        return "0x" + bytes(Account.sign_transaction(tx, THEIRS_KEY).raw_transaction).hex()

    wanted = "txs[1].raw.authorizationList[0]: raw transaction refused (ours)"
    assert wanted in refusal({"txs": [INTENT, {"raw": type4("0x" + "11" * 32)}]})
    parsed = parse({"txs": [INTENT, {"raw": type4("0x" + "77" * 32)}]})
    assert isinstance(parsed.slots[1], RawSlot)


def test_block_bounds_are_capped_and_a_raw_bundle_is_bounded_by_default() -> None:
    """A raw tx can stop being includable at any time (its sender's nonce moves); without a
    bound the bundle would be re-sent every head forever and its members hold our nonces."""
    far = hex(101 + MAX_BUNDLE_HORIZON + 1)
    assert "maxBlockNumber: " in refusal({"txs": [INTENT], "maxBlockNumber": far})
    assert "blockNumber: " in refusal({"txs": [INTENT], "blockNumber": far})
    ok = parse({"txs": [INTENT], "maxBlockNumber": hex(101 + MAX_BUNDLE_HORIZON)})
    assert ok.max_block == 101 + MAX_BUNDLE_HORIZON
    bounded = parse({"txs": [INTENT, {"raw": raw()}]})
    assert bounded.max_block == 101 + DEFAULT_RAW_BUNDLE_BLOCKS - 1
    assert bounded.intents[0].valid_until_block == bounded.max_block  # expire with it
    later = parse({"txs": [INTENT, {"raw": raw()}], "blockNumber": "0x80"})
    assert later.max_block == 0x80 + DEFAULT_RAW_BUNDLE_BLOCKS - 1
    assert parse({"txs": [INTENT]}).max_block is None  # ours only: re-targeted like an intent

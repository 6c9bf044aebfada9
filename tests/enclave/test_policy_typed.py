"""The policy of blob (type 3) and set-code (type 4) transactions and of authorizations: the
delegate allowlist, the blob fee cap, nonce protection bound to blob hashes and authorizations,
blob replacements at +100% on all three fee fields; and the enclave's log of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from enclave.audit import AuditLog, load_verified
from enclave.config import ConfigError, _policy
from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig
from signer_client.errors import PolicyDenied
from signer_client.signing import LocalKey
from signer_client.txcodec import TxFields, signing_hash, signing_payload, tx_from_dict

KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
SENDER = bytes.fromhex("f39fd6e51aad88f6f4ce6ab8827279cfffb92266")
TO = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
DELEGATE = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
WRONG = "0x" + "66" * 20
HASH_A, HASH_B = "0x01" + "aa" * 31, "0x01" + "bb" * 31


def auth(address: str = DELEGATE, chain_id: int = 1, nonce: int = 1) -> Any:
    return Account.sign_authorization(
        {"chainId": chain_id, "address": address, "nonce": nonce}, KEY
    )


def blob_tx(**overrides: Any) -> TxFields:
    tx: dict[str, Any] = {
        "type": 3, "chainId": 1, "nonce": 0, "gas": 21000, "to": TO, "value": 0,
        "maxFeePerGas": 100, "maxPriorityFeePerGas": 10, "maxFeePerBlobGas": 50,
        "blobVersionedHashes": [HASH_A],
    }  # fmt: skip
    tx.update(overrides)
    return tx_from_dict(tx)


def set_code_tx(**overrides: Any) -> TxFields:
    tx: dict[str, Any] = {
        "type": 4, "chainId": 1, "nonce": 0, "gas": 60000, "to": TO, "value": 0,
        "maxFeePerGas": 100, "maxPriorityFeePerGas": 10, "authorizationList": [auth()],
    }  # fmt: skip
    tx.update(overrides)
    return tx_from_dict(tx)


def policy(**overrides: Any) -> Policy:
    return Policy(PolicyConfig(**{"chain_ids": (1,), "allowed_delegates": (DELEGATE,),
                                  "max_fee_per_blob_gas": 1000, **overrides}))  # fmt: skip


def rule_of(p: Policy, f: TxFields) -> str:
    with pytest.raises(PolicyDenied) as info:
        p.check(f, SENDER, signing_hash(f), 0.0)
    return info.value.rule


def test_a_type_4_is_signed_only_when_every_authorization_delegates_to_an_allowed_one() -> None:
    p = policy()
    p.check(set_code_tx(), SENDER, signing_hash(set_code_tx()), 0.0)
    mixed = set_code_tx(nonce=1, authorizationList=[auth(), auth(WRONG, nonce=2)])
    assert rule_of(p, mixed) == "delegate_not_allowed"
    assert rule_of(policy(allowed_delegates=()), set_code_tx(nonce=2)) == "delegate_not_allowed"


def test_an_authorization_for_another_chain_or_for_every_chain_is_refused() -> None:
    p = policy()
    assert rule_of(p, set_code_tx(authorizationList=[auth(chain_id=0)])) == "chain_id"
    assert rule_of(p, set_code_tx(authorizationList=[auth(chain_id=5)])) == "chain_id"
    with pytest.raises(PolicyDenied) as info:
        p.check_authorization(0, bytes.fromhex(DELEGATE[2:]), SENDER, 0.0, nonce=1)
    assert info.value.rule == "chain_id"
    with pytest.raises(PolicyDenied) as info:
        p.check_authorization(1, bytes.fromhex(WRONG[2:]), SENDER, 0.0, nonce=1)
    assert info.value.rule == "delegate_not_allowed"
    p.check_authorization(1, bytes.fromhex(DELEGATE.lower()[2:]), SENDER, 0.0, nonce=1)


def test_the_blob_fee_cap_is_enforced() -> None:
    p = policy()
    assert rule_of(p, blob_tx(maxFeePerBlobGas=1001)) == "blob_fee_cap"
    p.check(blob_tx(maxFeePerBlobGas=1000), SENDER, signing_hash(blob_tx(maxFeePerBlobGas=1000)), 0)


@pytest.mark.parametrize(
    ("fees", "ok"),
    [
        ({"maxFeePerGas": 200, "maxPriorityFeePerGas": 20, "maxFeePerBlobGas": 100}, True),
        ({"maxFeePerGas": 199, "maxPriorityFeePerGas": 20, "maxFeePerBlobGas": 100}, False),
        ({"maxFeePerGas": 200, "maxPriorityFeePerGas": 19, "maxFeePerBlobGas": 100}, False),
        ({"maxFeePerGas": 200, "maxPriorityFeePerGas": 20, "maxFeePerBlobGas": 99}, False),
        ({"maxFeePerGas": 110, "maxPriorityFeePerGas": 11, "maxFeePerBlobGas": 55}, False),
    ],
)
def test_a_blob_replacement_needs_all_three_fee_fields_doubled(
    fees: dict[str, int], ok: bool
) -> None:
    p = policy()
    p.check(blob_tx(), SENDER, signing_hash(blob_tx()), 0.0)
    if ok:
        p.check(blob_tx(**fees), SENDER, signing_hash(blob_tx(**fees)), 0.0)
    else:
        assert rule_of(p, blob_tx(**fees)) == "nonce_conflict"


@pytest.mark.parametrize(
    "swap",
    [
        lambda: blob_tx(blobVersionedHashes=[HASH_B]),
        lambda: blob_tx(blobVersionedHashes=[HASH_A, HASH_B]),
        lambda: set_code_tx(authorizationList=[auth(nonce=7)]),
        lambda: set_code_tx(authorizationList=[auth(), auth(nonce=2)]),
    ],
)
def test_the_same_nonce_with_other_blobs_or_authorizations_is_another_intent(swap: Any) -> None:
    p = policy()
    first = swap()
    original = blob_tx() if first.type == 3 else set_code_tx()
    p.check(original, SENDER, signing_hash(original), 0.0)
    bumped = first._replace(
        max_fee_per_gas=10_000, max_priority_fee_per_gas=1000,
        max_fee_per_blob_gas=None if first.type == 4 else 1000,
    )  # fmt: skip
    assert rule_of(p, bumped) == "nonce_conflict"


def test_a_self_addressed_type_4_with_empty_data_is_not_the_noop() -> None:
    p = policy()
    p.check(set_code_tx(), SENDER, signing_hash(set_code_tx()), 0.0)
    self_call = set_code_tx(to="0x" + SENDER.hex(), gas=60000, authorizationList=[auth(nonce=9)])
    assert rule_of(p, self_call) == "nonce_conflict"


def test_the_config_file_takes_allowed_delegates_and_the_blob_fee_cap() -> None:
    config = _policy({"allowed_delegates": [DELEGATE], "max_fee_per_blob_gas": "0x10"})
    assert config.allowed_delegates == (DELEGATE.lower(),)
    assert config.max_fee_per_blob_gas == 16
    with pytest.raises(ConfigError, match=r"policy.allowed_delegates\[0\]"):
        _policy({"allowed_delegates": ["0x12"]})
    assert PolicyConfig().policy_hash() != PolicyConfig(allowed_delegates=(DELEGATE,)).policy_hash()


def _core(log: Path) -> EnclaveCore:
    return EnclaveCore(
        [LocalKey(KEY)], policy(), audit=AuditLog(str(log), LocalKey(os.urandom(32)))
    )


def _sign(core: EnclaveCore, f: TxFields) -> dict[str, Any]:
    params = {"sender": "0x" + SENDER.hex(), "payload": "0x" + signing_payload(f).hex()}
    return core.handle({"id": 1, "method": "sign_transaction", "params": params}, 1.0)


def test_the_log_records_blobs_and_authorizations_and_a_restart_keeps_the_blob_bump(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    core = _core(log)
    core.start(0.0, b"\0" * 48)
    assert "result" in _sign(core, blob_tx())
    assert "result" in _sign(core, set_code_tx(nonce=1))
    denied = core.handle(
        {"id": 2, "method": "sign_authorization",
         "params": {"sender": "0x" + SENDER.hex(),
                    "authorization": {"chainId": 1, "address": WRONG, "nonce": 3}}}, 1.0,
    )  # fmt: skip
    assert denied["error"]["rule"] == "delegate_not_allowed"
    assert core.audit is not None
    core.audit.commit()
    core.audit.close()
    entries = list(load_verified(str(log), None))
    signs = [e["data"] for e in entries if e["kind"] == "sign"]
    assert signs[0]["blob_fee_cap"] == "0x32" and signs[0]["blob_hashes"] == [HASH_A]
    assert signs[1]["authorizations"] == [
        {"chain": 1, "address": DELEGATE.lower(), "nonce": 1, "authority": "0x" + SENDER.hex()}
    ]
    deny = next(e["data"] for e in entries if e["kind"] == "deny")
    assert deny["type"] == "authorization" and deny["address"] == WRONG

    restarted = _core(log)
    assert restarted.restore_from_log(str(log)) == 2
    # +100% on the fee and tip but not on the blob fee: refused after the restart too.
    half = blob_tx(maxFeePerGas=200, maxPriorityFeePerGas=20, maxFeePerBlobGas=99)
    assert _sign(restarted, half)["error"]["rule"] == "nonce_conflict"
    assert "result" in _sign(restarted, half._replace(max_fee_per_blob_gas=100))
    assert restarted.audit is not None
    restarted.audit.close()

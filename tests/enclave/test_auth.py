"""The enclave's auth key (DESIGN.md 5a): ``[policy] auth_address`` names one loaded key that
signs only ``sign_auth``'s EIP-191 wrapping of a request-body hash -- never a transaction, never
an authorization, never a caller-chosen hash -- and every auth signature is in the audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from enclave.audit import AuditLog, verify_log
from enclave.config import ConfigError, _policy
from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig
from signer_client.flashbots import recover_header
from signer_client.protocol import hello_info_bytes
from signer_client.signing import LocalKey
from signer_client.txcodec import keccak, signing_payload
from tests.enclave.running import ALLOWED_TO, ANVIL_ADDRESS, ANVIL_KEY, AUTH_ADDRESS, AUTH_KEY
from tests.enclave.test_policy import fields

BODY = b'{"jsonrpc":"2.0","id":7,"method":"eth_sendBundle","params":[{"txs":[]}]}'


def config(**extra: Any) -> PolicyConfig:
    return PolicyConfig(chain_ids=(1,), allowed_to=(ALLOWED_TO,), **extra)


def core(audit: AuditLog | None = None, auth: str | None = AUTH_ADDRESS) -> EnclaveCore:
    keys = [LocalKey(ANVIL_KEY), LocalKey(AUTH_KEY)]
    return EnclaveCore(keys, Policy(config(auth_address=auth)), audit=audit)


def sign_auth(c: EnclaveCore, body_hash: object) -> dict[str, Any]:
    return c.handle({"id": 1, "method": "sign_auth", "params": {"body_hash": body_hash}}, 0.0)


def test_sign_auth_signs_the_eip191_text_of_the_body_hash_with_the_auth_key() -> None:
    reply = sign_auth(core(), "0x" + keccak(BODY).hex())
    result = reply["result"]
    assert result["address"] == AUTH_ADDRESS
    expected = Account.sign_message(encode_defunct(text="0x" + keccak(BODY).hex()), AUTH_KEY)
    sig = bytes.fromhex(result["signature"][2:])
    assert sig[:64] == bytes(expected.signature)[:64]
    assert recover_header(f"{AUTH_ADDRESS}:{result['signature']}", BODY)


def test_the_auth_key_is_not_a_transaction_key_and_hello_names_it_apart() -> None:
    c = core()
    hello = c.handle({"id": 1, "method": "hello"}, 0.0)["result"]
    assert hello["addresses"] == [ANVIL_ADDRESS]
    assert hello["auth_address"] == AUTH_ADDRESS
    assert b"auth_address" in hello_info_bytes(hello)  # bound into the attestation
    payload = "0x" + signing_payload(fields(to=ALLOWED_TO)).hex()
    for method, params in (
        ("sign_transaction", {"sender": AUTH_ADDRESS.lower(), "payload": payload}),
        (
            "sign_authorization",
            {"sender": AUTH_ADDRESS, "authorization": {"chainId": 1, "address": ALLOWED_TO,
                                                       "nonce": 0}},
        ),
    ):  # fmt: skip
        reply = c.handle({"id": 2, "method": method, "params": params}, 0.0)
        assert reply["error"]["code"] == "unknown_sender", (method, reply)


def test_without_an_auth_key_sign_auth_is_denied_and_hellos_hash_as_before() -> None:
    c = EnclaveCore([LocalKey(ANVIL_KEY), LocalKey(AUTH_KEY)], Policy(config()))
    reply = sign_auth(c, "0x" + keccak(BODY).hex())
    assert reply["error"]["code"] == "policy_denied"
    assert reply["error"]["rule"] == "auth_key"
    hello = c.handle({"id": 1, "method": "hello"}, 0.0)["result"]
    assert "auth_address" not in hello and b"auth_address" not in hello_info_bytes(hello)
    assert AUTH_ADDRESS in hello["addresses"]  # no auth key named: an ordinary key


def test_a_policy_without_an_auth_key_keeps_its_policy_hash() -> None:
    """Deployed configs pin policy_hash: adding the field must not change it for them (the
    value below is main's hash of the default policy before auth_address existed)."""
    assert PolicyConfig().policy_hash() == (
        "0x0db3a1603c86c660518d6dfde74f223c0e93a521d617b1929201992f9e77fb48"
    )
    assert config().policy_hash() != config(auth_address=AUTH_ADDRESS).policy_hash()


@pytest.mark.parametrize(
    "body_hash",
    ["0x" + "11" * 31, "11" * 32, 12, None, "0x" + "zz" * 32],
    ids=["short", "no-0x", "int", "null", "not-hex"],
)
def test_a_malformed_body_hash_is_a_bad_request_and_nothing_is_signed(
    tmp_path: Path, body_hash: object
) -> None:
    audit = AuditLog(str(tmp_path / "audit.jsonl"), LocalKey(b"\x07" * 32))
    c = core(audit)
    reply = sign_auth(c, body_hash)
    assert reply["error"]["code"] == "bad_request"
    audit.commit()
    lines = (tmp_path / "audit.jsonl").read_bytes().splitlines()
    kinds = [orjson.loads(line)["kind"] for line in lines]
    assert "auth" not in kinds and "bad_request" in kinds


def test_every_auth_signature_is_in_the_audit_log_which_still_verifies(tmp_path: Path) -> None:
    log_key = LocalKey(b"\x07" * 32)
    audit = AuditLog(str(tmp_path / "audit.jsonl"), log_key)
    c = core(audit)
    c.start(0.0, b"\x00" * 48)
    digest = "0x" + keccak(BODY).hex()
    sign_auth(c, digest)
    audit.commit()
    lines = (tmp_path / "audit.jsonl").read_bytes().splitlines()
    entries = [orjson.loads(line) for line in lines]
    auth = [e for e in entries if e["kind"] == "auth"]
    assert len(auth) == 1
    assert auth[0]["data"]["body_hash"] == digest
    assert auth[0]["data"]["address"] == AUTH_ADDRESS.lower()
    problems, _ = verify_log(str(tmp_path / "audit.jsonl"), {"0x" + log_key.public_key.hex()})
    assert problems == []


def test_a_policy_naming_an_auth_key_that_is_not_loaded_refuses_to_start() -> None:
    with pytest.raises(ValueError, match="names no loaded key"):
        core(auth="0x" + "ab" * 20)


def test_the_enclave_config_reads_auth_address_and_refuses_a_bad_one() -> None:
    assert _policy({"auth_address": AUTH_ADDRESS}).auth_address == AUTH_ADDRESS.lower()
    with pytest.raises(ConfigError, match=r"policy\.auth_address"):
        _policy({"auth_address": "0x12"})

"""The enclave core signs protocol-2 payloads only after decoding them strictly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from eth_account import Account

from enclave.audit import AuditLog, verify_log
from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig
from signer_client.signing import LocalKey
from signer_client.txcodec import TxFields, keccak, signing_hash, signing_payload, tx_to_wire
from tests.enclave.running import ALLOWED_TO, ANVIL_ADDRESS, ANVIL_KEY
from tests.enclave.test_policy import fields


def core(audit: AuditLog | None = None) -> EnclaveCore:
    config = PolicyConfig(chain_ids=(1,), allowed_to=(ALLOWED_TO,))
    return EnclaveCore([LocalKey(ANVIL_KEY)], Policy(config), audit=audit)


def payload_request(payload: object, sender: str = ANVIL_ADDRESS.lower()) -> dict[str, Any]:
    params = {"sender": sender, "payload": payload}
    return {"id": 1, "method": "sign_transaction", "params": params}


def hex0x(data: bytes) -> str:
    return "0x" + data.hex()


def test_a_payload_is_signed_byte_identically_to_the_dict_form_and_eth_account() -> None:
    f = fields(to=ALLOWED_TO, data="0x0102")
    by_payload = core().handle(payload_request(hex0x(signing_payload(f))), 0.0)
    by_dict = core().handle(
        {"id": 1, "method": "sign_transaction",
         "params": {"sender": ANVIL_ADDRESS, "tx": tx_to_wire(f)}}, 0.0
    )  # fmt: skip
    tx = {"type": 2, "chainId": 1, "nonce": 0, "gas": 21000, "to": ALLOWED_TO, "value": 0,
          "data": b"\x01\x02", "maxFeePerGas": 100, "maxPriorityFeePerGas": 10}  # fmt: skip
    expected = hex0x(bytes(Account.sign_transaction(tx, ANVIL_KEY).raw_transaction))
    assert by_payload["result"]["raw"] == by_dict["result"]["raw"] == expected


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (lambda p: p + b"\x00", "trailing byte"),
        (lambda p: p[:-1], "truncated"),
        (lambda p: b"\x03" + p[1:], "unsupported type"),
        (lambda p: p.replace(b"\x82\x52\x08", b"\x83\x00\x52\x08"), "leading zero (gas)"),
    ],
)
def test_a_tampered_payload_is_refused_logged_and_leaves_no_nonce(
    tmp_path: Path, payload: Any, why: str
) -> None:
    log = tmp_path / "audit.jsonl"
    c = core(AuditLog(str(log), LocalKey(os.urandom(32))))
    good = signing_payload(fields(to=ALLOWED_TO))
    bad = payload(good)
    assert bad != good
    reply = c.handle(payload_request(hex0x(bad)), 0.0)
    assert reply["error"]["code"] == "bad_request", why
    assert c.audit is not None
    c.audit.close()
    entries = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert [e["kind"] for e in entries] == ["bad_request"]  # logged, nothing signed
    # ... and no nonce was recorded: the honest payload for that nonce still signs.
    assert "result" in core().handle(payload_request(hex0x(good)), 0.0)


@pytest.mark.parametrize("payload", [None, 5, "0102", "0xzz", "0x"])
def test_a_payload_that_is_not_0x_hex_bytes_is_a_bad_request(payload: object) -> None:
    reply = core().handle(payload_request(payload), 0.0)
    assert reply["error"]["code"] == "bad_request"


def test_the_policy_judges_the_decoded_payload() -> None:
    c = core()
    to_elsewhere = fields(to="0x000000000000000000000000000000000000dEaD")
    reply = c.handle(payload_request(hex0x(signing_payload(to_elsewhere))), 0.0)
    assert reply["error"]["rule"] == "to_not_allowed"
    wrong_chain = fields(to=ALLOWED_TO, chainId=5)
    reply = c.handle(payload_request(hex0x(signing_payload(wrong_chain))), 0.0)
    assert reply["error"]["rule"] == "chain_id"
    first = fields(to=ALLOWED_TO)
    assert "result" in c.handle(payload_request(hex0x(signing_payload(first))), 0.0)
    conflicting = fields(to=ALLOWED_TO, value=1)
    reply = c.handle(payload_request(hex0x(signing_payload(conflicting))), 0.0)
    assert reply["error"]["rule"] == "nonce_conflict"


def test_a_checksummed_sender_is_found_too() -> None:
    reply = core().handle(
        payload_request(hex0x(signing_payload(fields(to=ALLOWED_TO))), ANVIL_ADDRESS), 0.0
    )
    assert "result" in reply


def test_the_audit_entry_of_a_signature_records_its_hashes(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    c = core(AuditLog(str(log), LocalKey(os.urandom(32))))
    c.start(0.0, b"\0" * 48)
    f: TxFields = fields(to=ALLOWED_TO)
    reply = c.handle(payload_request(hex0x(signing_payload(f))), 0.0)
    raw = bytes.fromhex(reply["result"]["raw"][2:])
    assert c.audit is not None
    c.audit.close()
    entry = orjson.loads(log.read_bytes().splitlines()[-1])
    assert entry["kind"] == "sign"
    assert entry["data"]["tx_hash"] == hex0x(keccak(raw))
    assert entry["data"]["signing_hash"] == hex0x(signing_hash(f))
    assert entry["data"]["sender"] == ANVIL_ADDRESS.lower()
    assert verify_log(str(log))[0] == []


def test_hello_sets_the_lane_of_its_connection_and_refuses_an_unknown_lane() -> None:
    from enclave.core import Session

    core = EnclaveCore([LocalKey(ANVIL_KEY)], Policy(PolicyConfig(chain_ids=(1,))))
    urgent, plain = Session(), Session()
    assert "result" in core.handle(
        {"id": 1, "method": "hello", "params": {"lane": "urgent"}}, 0.0, urgent
    )
    assert "result" in core.handle({"id": 2, "method": "hello", "params": {}}, 0.0, plain)
    assert urgent.urgent and not plain.urgent
    bad = core.handle({"id": 3, "method": "hello", "params": {"lane": "vip"}}, 0.0, plain)
    assert bad["error"]["code"] == "bad_request" and "lane" in bad["error"]["reason"]
    assert not plain.urgent

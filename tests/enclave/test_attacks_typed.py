"""Types 3 and 4 against a compromised host (DESIGN.md sections 6, 6a), each test written as the
attacker: the real enclave core with its real policy and its real audit log. Delegates smuggled
into a type-4 tx, foreign pre-signed authorizations, equivocating authorizations at one authority
nonce, blob fee and blob hash games, type confusion at a used nonce, hostile payload bytes; and
that every refusal is in the log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from enclave.audit import AuditLog, load_verified, verify_log
from enclave.config import ConfigError, _policy
from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig
from signer_client.authorization import encode_authorizations
from signer_client.rlp import encode_list_payload
from signer_client.signing import LocalKey, to_checksum_address
from signer_client.txcodec import TxFields, body_items, signing_payload, tx_from_dict

KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
SENDER = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
FOREIGN_KEY = "0x" + "42" * 32  # a key the enclave does not hold
TO = "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc"
DELEGATE = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
DELEGATE_2 = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512"
WRONG = "0x" + "66" * 20
HASH_A = "0x01" + "aa" * 31


def auth(address: str = DELEGATE, chain_id: int = 1, nonce: int = 1, key: str = KEY) -> Any:
    return Account.sign_authorization(
        {"chainId": chain_id, "address": address, "nonce": nonce}, key
    )


def wire_auth(a: Any, **over: Any) -> dict[str, Any]:
    item = {"chainId": a.chain_id, "address": "0x" + a.address.hex(), "nonce": a.nonce,
            "yParity": a.y_parity, "r": a.r, "s": a.s}  # fmt: skip
    return {**item, **over}


def base(tx_type: int, **over: Any) -> dict[str, Any]:
    tx: dict[str, Any] = {
        "type": tx_type, "chainId": 1, "nonce": 0, "gas": 60000, "to": TO, "value": 0,
        "maxFeePerGas": 100, "maxPriorityFeePerGas": 10,
    }  # fmt: skip
    if tx_type == 3:
        tx |= {"maxFeePerBlobGas": 50, "blobVersionedHashes": [HASH_A]}
    if tx_type == 4:
        tx["authorizationList"] = [auth()]
    return {**tx, **over}


@pytest.fixture
def core(tmp_path: Path) -> Any:
    policy = Policy(PolicyConfig(chain_ids=(1,), allowed_delegates=(DELEGATE, DELEGATE_2),
                                 max_fee_per_blob_gas=1000))  # fmt: skip
    log = AuditLog(str(tmp_path / "audit.jsonl"), LocalKey(os.urandom(32)))
    c = EnclaveCore([LocalKey(KEY)], policy, audit=log)
    c.start(0.0, b"\0" * 48)
    yield c
    assert c.audit is not None
    c.audit.close()


def log_of(core: EnclaveCore, tmp_path: Path) -> list[dict[str, Any]]:
    assert core.audit is not None
    core.audit.commit()
    return list(load_verified(str(tmp_path / "audit.jsonl"), None))


def sign_dict(core: EnclaveCore, tx: dict[str, Any], sender: str = SENDER) -> dict[str, Any]:
    return core.handle({"id": 1, "method": "sign_transaction",
                        "params": {"sender": sender, "tx": tx}}, 1.0)  # fmt: skip


def sign_payload(core: EnclaveCore, payload: bytes) -> dict[str, Any]:
    params = {"sender": SENDER, "payload": "0x" + payload.hex()}
    return core.handle({"id": 1, "method": "sign_transaction", "params": params}, 1.0)


def sign_fields(core: EnclaveCore, f: TxFields) -> dict[str, Any]:
    return sign_payload(core, signing_payload(f))


def authorize(core: EnclaveCore, sender: str = SENDER, **item: Any) -> dict[str, Any]:
    a = {"chainId": 1, "address": DELEGATE, "nonce": 5, **item}
    return core.handle({"id": 1, "method": "sign_authorization",
                        "params": {"sender": sender, "authorization": a}}, 1.0)  # fmt: skip


def rule(reply: dict[str, Any]) -> str:
    assert "error" in reply, reply
    return str(reply["error"].get("rule") or reply["error"]["code"])


@pytest.mark.parametrize(
    "spelling",
    [
        WRONG,
        WRONG.upper().replace("0X", "0x"),
        "0X" + WRONG[2:],
        to_checksum_address(bytes.fromhex(WRONG[2:])),
    ],
)
def test_a_delegate_outside_the_list_is_refused_however_it_is_spelled(
    core: EnclaveCore, spelling: str
) -> None:
    smuggled = wire_auth(auth(WRONG), address=spelling)
    for items in ([smuggled], [wire_auth(auth()), smuggled], [wire_auth(auth())] * 3 + [smuggled]):
        assert rule(sign_dict(core, base(4, authorizationList=items))) == "delegate_not_allowed"
    # The allowed one in any spelling, duplicated, is signed.
    good = wire_auth(auth(), address=DELEGATE.upper().replace("0X", "0x"))
    assert "result" in sign_dict(core, base(4, authorizationList=[good, good]))


def test_a_pre_signed_authorization_by_another_key_must_delegate_to_an_allowed_address_too(
    core: EnclaveCore,
) -> None:
    foreign_bad = auth(WRONG, key=FOREIGN_KEY)
    f = tx_from_dict(base(4, authorizationList=[auth(), foreign_bad]))
    assert rule(sign_fields(core, f)) == "delegate_not_allowed"
    foreign_ok = auth(DELEGATE, key=FOREIGN_KEY)
    assert "result" in sign_fields(core, tx_from_dict(base(4, authorizationList=[foreign_ok])))


@pytest.mark.parametrize(
    ("over", "want"),
    [
        ({"chainId": 0}, "chain_id"),
        ({"chainId": 2**256 - 1}, "chain_id"),
        ({"chainId": 2**256}, "bad_request"),
        ({"nonce": 2**64}, "bad_request"),
        ({"nonce": -1}, "bad_request"),
        ({"yParity": 2}, "bad_request"),
        ({"r": 2**256}, "bad_request"),
        ({"s": "0xzz"}, "bad_request"),
        ({"address": WRONG[:-2]}, "bad_request"),
        ({"address": WRONG + "00"}, "bad_request"),
        ({"address": WRONG[2:]}, "bad_request"),
    ],
)
def test_a_malformed_or_out_of_scope_authorization_in_a_type_4_is_refused_and_logged(
    core: EnclaveCore, tmp_path: Path, over: dict[str, Any], want: str
) -> None:
    reply = sign_dict(core, base(4, authorizationList=[wire_auth(auth(), **over)]))
    assert rule(reply) == want
    kinds = [e["kind"] for e in log_of(core, tmp_path)]
    assert kinds[-1] == ("deny" if want != "bad_request" else "bad_request")


def test_sign_authorization_outside_the_policy_or_for_a_key_not_held_is_refused_and_logged(
    core: EnclaveCore, tmp_path: Path
) -> None:
    assert rule(authorize(core, address=WRONG)) == "delegate_not_allowed"
    assert (
        rule(authorize(core, address=WRONG.upper().replace("0X", "0x"))) == "delegate_not_allowed"
    )
    assert rule(authorize(core, chainId=0)) == "chain_id"
    assert rule(authorize(core, nonce=2**64)) == "bad_request"
    assert rule(authorize(core, extra=1)) == "bad_request"
    foreign = Account.from_key(FOREIGN_KEY).address
    assert rule(authorize(core, sender=foreign)) == "unknown_sender"
    entries = log_of(core, tmp_path)
    refusals = [e for e in entries if e["kind"] in ("deny", "bad_request")]
    assert len(refusals) == 6, [e["kind"] for e in entries]
    assert not [e for e in entries if e["kind"] == "authorize"]


def test_two_authorizations_at_one_authority_nonce_to_different_delegates_are_not_both_signed(
    core: EnclaveCore, tmp_path: Path
) -> None:
    first = authorize(core, nonce=9)
    assert "result" in first
    # The same request again is the same (deterministic) signature: a retry, allowed.
    assert authorize(core, nonce=9) == first
    assert rule(authorize(core, nonce=9, address=DELEGATE_2)) == "nonce_conflict"
    assert "result" in authorize(core, nonce=10, address=DELEGATE_2)
    assert "result" in authorize(core, nonce=9, chainId=1, address=DELEGATE)
    # After a restart from the log the binding holds.
    assert core.audit is not None
    core.audit.commit()
    core.audit.close()
    log = str(tmp_path / "audit.jsonl")
    policy = Policy(PolicyConfig(chain_ids=(1,), allowed_delegates=(DELEGATE, DELEGATE_2)))
    restarted = EnclaveCore([LocalKey(KEY)], policy, audit=AuditLog(log, LocalKey(os.urandom(32))))
    restarted.restore_from_log(log)
    assert rule(authorize(restarted, nonce=9, address=DELEGATE_2)) == "nonce_conflict"
    assert rule(authorize(restarted, nonce=10, address=DELEGATE)) == "nonce_conflict"
    assert authorize(restarted, nonce=9) == first
    core.audit = restarted.audit  # the fixture closes it


@pytest.mark.parametrize(
    ("blob_fee", "want"),
    [
        ("0x3e9", "blob_fee_cap"),
        (1001, "blob_fee_cap"),
        (2**256 - 1, "blob_fee_cap"),
        (2**256, "bad_request"),
        (-1, "bad_request"),
        ("-0x1", "bad_request"),
        ("1000", "bad_request"),
        (None, "bad_request"),
        (1.5, "bad_request"),
        (True, "bad_request"),
    ],
)
def test_the_blob_fee_cap_holds_in_every_spelling(
    core: EnclaveCore, tmp_path: Path, blob_fee: Any, want: str
) -> None:
    assert rule(sign_dict(core, base(3, maxFeePerBlobGas=blob_fee))) == want
    assert log_of(core, tmp_path)[-1]["kind"] == (
        "deny" if want != "bad_request" else "bad_request"
    )


@pytest.mark.parametrize(
    "hashes",
    [[], ["0x00" + "aa" * 31], ["0x02" + "aa" * 31], ["0x01" + "aa" * 30], ["0x01" + "aa" * 32],
     [HASH_A, "0x" + "ff" * 32], "0x01" + "aa" * 31, None],
)  # fmt: skip
def test_blob_hashes_of_another_version_length_or_shape_are_refused(
    core: EnclaveCore, hashes: Any
) -> None:
    assert rule(sign_dict(core, base(3, blobVersionedHashes=hashes))) == "bad_request"


def test_a_blob_hash_of_another_version_in_a_payload_is_refused(core: EnclaveCore) -> None:
    f = tx_from_dict(base(3))._replace(blob_hashes=(b"\x02" + b"\xaa" * 31,))
    assert rule(sign_fields(core, f)) == "bad_request"


def test_more_blobs_than_a_transaction_may_carry_are_refused(core: EnclaveCore) -> None:
    six = ["0x01" + bytes([i]).hex() * 31 for i in range(6)]
    assert "result" in sign_dict(core, base(3, blobVersionedHashes=six))
    seven = [*six, "0x01" + "77" * 31]
    assert rule(sign_dict(core, base(3, nonce=1, blobVersionedHashes=seven))) == "blob_count"


@pytest.mark.parametrize("new_type", [3, 4])
def test_a_type_3_or_4_at_a_nonce_signed_as_type_2_is_another_intent(
    core: EnclaveCore, new_type: int
) -> None:
    first = base(2)
    assert "result" in sign_dict(core, first)
    same_but_typed = base(new_type, maxFeePerGas=10_000, maxPriorityFeePerGas=1000)
    assert rule(sign_dict(core, same_but_typed)) == "nonce_conflict"


def test_a_type_4_self_call_is_no_noop_at_a_used_nonce(core: EnclaveCore) -> None:
    assert "result" in sign_dict(core, base(2))
    spoof = base(4, to=SENDER, gas=21000, maxFeePerGas=1, maxPriorityFeePerGas=1)
    assert rule(sign_dict(core, spoof)) == "nonce_conflict"
    blob_spoof = base(3, to=SENDER, gas=21000, maxFeePerGas=1, maxPriorityFeePerGas=1)
    assert rule(sign_dict(core, blob_spoof)) == "nonce_conflict"
    # The real noop (type 2) still fills the nonce.
    assert "result" in sign_dict(core, base(2, to=SENDER, gas=21000))


def _deep(depth: int) -> bytes:
    item = b"\xc0"
    for _ in range(depth):
        item = encode_list_payload(item)
    return item


def _hostile_payloads() -> list[bytes]:
    f = tx_from_dict(base(4))
    good = signing_payload(f)
    blob = signing_payload(tx_from_dict(base(3)))
    # A well-framed type-4 body whose authorization list is a deeply nested list.
    body = body_items(f)
    auths = encode_authorizations(f.authorizations)
    assert body.endswith(auths)
    nested = b"\x04" + encode_list_payload(body[: -len(auths)] + encode_list_payload(_deep(5000)))
    return [
        good + b"\x00",  # trailing byte
        blob + b"\xc0",
        good[:-1],  # cut
        b"\x04",  # the type alone
        b"\x04\xf9\xff\xff" + good[4:],  # list length beyond the frame
        b"\x04\xb8\x01\x01",  # non-canonical: a long-form string of one byte
        b"\x04\xf8\x01\xc0",  # non-canonical: a long-form list of one byte
        b"\x03\xc0",  # an empty list
        b"\x04" + encode_list_payload(_deep(20_000)),  # deeply nested
        b"\x04" + encode_list_payload(_deep(120_000)),  # past the recursion limit, inside 1 MiB
        nested,
    ]


@pytest.mark.parametrize("payload", _hostile_payloads(), ids=lambda p: p[:6].hex())
def test_hostile_type_3_and_4_payloads_are_bad_requests_logged_never_a_crash(
    core: EnclaveCore, tmp_path: Path, payload: bytes
) -> None:
    assert rule(sign_payload(core, payload)) == "bad_request"
    assert log_of(core, tmp_path)[-1]["kind"] == "bad_request"
    assert "result" in sign_dict(core, base(2))  # still serving


def test_the_policy_hash_changes_with_the_blob_fee_cap_and_the_delegates() -> None:
    a = PolicyConfig(allowed_delegates=(DELEGATE,))
    assert (
        a.policy_hash()
        == PolicyConfig(allowed_delegates=(DELEGATE.upper().replace("0X", "0x"),)).policy_hash()
    )
    assert a.policy_hash() != PolicyConfig(allowed_delegates=(DELEGATE, DELEGATE_2)).policy_hash()
    assert PolicyConfig().policy_hash() != PolicyConfig(max_fee_per_blob_gas=1).policy_hash()


def test_verify_log_names_two_delegates_authorized_at_one_nonce(tmp_path: Path) -> None:
    """An enclave whose memory was rolled back (restarted without what it had signed) leaves
    two ``authorize`` entries at one ``(chain, authority, nonce)``: verify-log names them."""
    log = str(tmp_path / "audit.jsonl")
    for delegate in (DELEGATE, DELEGATE_2):
        policy = Policy(PolicyConfig(chain_ids=(1,), allowed_delegates=(DELEGATE, DELEGATE_2)))
        c = EnclaveCore([LocalKey(KEY)], policy, audit=AuditLog(log, LocalKey(os.urandom(32))))
        c.start(0.0, b"\0" * 48)
        assert "result" in authorize(c, nonce=9, address=delegate)
        assert c.audit is not None
        c.audit.commit()
        c.audit.close()
    problems, _ = verify_log(log)
    assert [p.kind for p in problems] == ["conflicting_intent"]


@pytest.mark.parametrize(
    "bad", ["0x" + "zz" * 20, "0x" + " 5" * 20, "0x" + "5f" * 19 + "\u0661\u0661"]
)
def test_a_delegate_in_the_config_that_is_not_hex_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"policy.allowed_delegates\[0\]"):
        _policy({"allowed_delegates": [bad]})
    with pytest.raises(ConfigError, match=r"policy.allowed_to\[0\]"):
        _policy({"allowed_to": [bad]})

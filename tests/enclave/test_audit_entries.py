"""``audit_entries`` serves the committed log (memory ring, then the file) with a signed head."""

from __future__ import annotations

import os
from pathlib import Path

import coincurve
import orjson

from broadcaster.audit.verify import Anchor, verify_batch
from enclave.__main__ import _serve_parser, _setup
from enclave.audit import AuditLog, head_digest
from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig
from signer_client.signing import LocalKey
from signer_client.txcodec import keccak, signing_payload
from tests.enclave.running import ALLOWED_TO, ANVIL_ADDRESS, ANVIL_KEY, POLICY_TOML
from tests.enclave.test_policy import fields


def core(log: AuditLog) -> EnclaveCore:
    c = EnclaveCore(
        [LocalKey(ANVIL_KEY)],
        Policy(PolicyConfig(chain_ids=(1,), allowed_to=(ALLOWED_TO,))),
        audit=log,
    )
    c.start(0.0, b"\0" * 48)
    return c


def call(c: EnclaveCore, **params: object) -> dict[str, object]:
    return c.handle({"id": 1, "method": "audit_entries", "params": params}, 1.0)


def fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append(float(i), "note", {"i": i})
    log.commit()


def test_entries_page_from_memory_and_the_head_is_signed_by_the_log_key() -> None:
    log = AuditLog(None, LocalKey(os.urandom(32)))
    c = core(log)
    fill(log, 9)  # seq 1 is the start entry: 10 in all
    reply = call(c, from_seq=4, limit=3)
    result = reply["result"]
    assert isinstance(result, dict)
    assert [e["seq"] for e in result["entries"]] == [4, 5, 6]
    head = result["head"]  # signed at the page's last entry: the page authenticates itself
    assert (head["seq"], head["hash"]) == (6, result["entries"][-1]["hash"])
    signer = coincurve.PublicKey.from_signature_and_message(
        bytes.fromhex(head["signature"][2:]), head_digest(6, head["hash"]), hasher=None
    ).format(compressed=False)
    assert signer == log.key.public_key
    empty = call(c, from_seq=11, limit=5)["result"]
    assert empty["entries"] == [] and empty["head"]["seq"] == 10  # type: ignore[index]
    assert empty["head"]["hash"] == log.head  # type: ignore[index]


def test_without_a_file_an_evicted_entry_is_an_error_not_a_silent_gap() -> None:
    log = AuditLog(None, LocalKey(os.urandom(32)), ring=4)
    c = core(log)
    fill(log, 9)
    reply = call(c, from_seq=2, limit=10)
    assert reply["error"]["code"] == "evicted"  # type: ignore[index]
    assert [e["seq"] for e in call(c, from_seq=7, limit=10)["result"]["entries"]] == [7, 8, 9, 10]  # type: ignore[index]


def test_with_a_file_entries_older_than_the_ring_come_from_the_file(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path / "audit.jsonl"), LocalKey(os.urandom(32)), ring=2)
    c = core(log)
    fill(log, 5)
    entries = call(c, from_seq=1, limit=3)["result"]["entries"]  # type: ignore[index]
    log.close()
    assert [e["seq"] for e in entries] == [1, 2, 3]


def test_bad_params_are_a_bad_request() -> None:
    c = core(AuditLog(None, LocalKey(os.urandom(32))))
    assert call(c, from_seq="1")["error"]["code"] == "bad_request"  # type: ignore[index]
    assert call(c, from_seq=1, limit=-1)["error"]["code"] == "bad_request"  # type: ignore[index]


def test_the_dev_app_without_audit_log_keeps_its_log_in_memory_and_serves_it_verified(
    tmp_path: Path,
) -> None:
    """No ``--audit-log`` in dev mode: no file (and no anchor) appears, yet every reply is still
    logged first and ``audit_entries`` serves the enclave's own entry format (a signed start,
    then ``sig: null`` entries), which the broadcaster's verifier takes on the page's head."""
    keys = tmp_path / "keys.txt"
    keys.write_text(ANVIL_KEY + "\n")
    config = tmp_path / "enclave.toml"
    config.write_text(POLICY_TOML)
    before = set(tmp_path.iterdir())
    args = _serve_parser().parse_args(
        ["--listen", f"unix://{tmp_path}/e.sock", "--key-file", str(keys), "--config", str(config)]
    )
    c, _, pcr0 = _setup(args, 0.0)
    c.start(0.0, pcr0)
    payload = signing_payload(fields(to=ALLOWED_TO, nonce=3))
    params = {"sender": ANVIL_ADDRESS.lower(), "payload": "0x" + payload.hex()}
    raw = c.handle({"id": 1, "method": "sign_transaction", "params": params}, 1.0)["result"]
    reply = c.handle({"id": 2, "method": "audit_entries", "params": {"from_seq": 1}}, 2.0)
    assert c.audit is not None and c.audit.path is None
    assert set(tmp_path.iterdir()) == before  # nothing written to the parent's disk
    result = orjson.loads(orjson.dumps(reply["result"]))
    assert [e["sig"] is None for e in result["entries"]] == [False, True]
    batch = verify_batch(Anchor(), result, {str(c.hello_result["log_public_key"])})
    sign = batch.entries[-1]
    assert sign.kind == "sign" and sign.nonce == 3
    assert sign.tx_hash == keccak(bytes.fromhex(raw["raw"][2:]))  # type: ignore[index]
    assert orjson.loads(sign.line)["data"]["value"] == "0x0"  # the enclave's hex intent fields

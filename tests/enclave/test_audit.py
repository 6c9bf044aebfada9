"""The audit log is hash-chained and signed; the verifier pinpoints edits, drops and reorders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from enclave.__main__ import main
from enclave.audit import AuditLog, _entry_hash, verify_log
from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig
from signer_client.signing import LocalKey
from signer_client.txcodec import TxFields, tx_to_wire
from tests.enclave.running import ALLOWED_TO, ANVIL_ADDRESS, ANVIL_KEY
from tests.enclave.test_policy import fields


def sign_request(request_id: int, f: TxFields) -> dict[str, Any]:
    params = {"sender": ANVIL_ADDRESS, "tx": tx_to_wire(f)}
    return {"id": request_id, "method": "sign_transaction", "params": params}


def write_log(path: Path, n: int = 5) -> EnclaveCore:
    core = EnclaveCore(
        [LocalKey(ANVIL_KEY)],
        Policy(PolicyConfig(chain_ids=(1,))),
        audit=AuditLog(str(path), LocalKey(os.urandom(32))),
    )
    core.start(1000.0, b"\0" * 48)
    for nonce in range(n):
        request = sign_request(nonce, fields(nonce=nonce, to=ALLOWED_TO))
        assert "result" in core.handle(request, 1000.0 + nonce)
    assert core.audit is not None
    core.audit.close()
    return core


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def kinds(path: Path) -> list[tuple[int, int | None, str]]:
    problems, _ = verify_log(str(path))
    return [(p.line, p.seq, p.kind) for p in problems]


def test_an_untouched_log_verifies_and_names_its_key(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    core = write_log(log)
    problems, keys = verify_log(str(log), {core.hello_result["log_public_key"]})
    assert problems == []
    assert keys == [core.hello_result["log_public_key"]]
    assert len(lines(log)) == 6


def test_an_edited_entry_is_pinpointed(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log)
    rows = lines(log)
    rows[2] = rows[2].replace(b'"nonce":1', b'"nonce":9')
    log.write_bytes(b"\n".join(rows) + b"\n")
    assert kinds(log) == [(3, 3, "edited")]


def test_an_edit_with_a_recomputed_hash_breaks_the_chain_or_the_signed_head(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    core = write_log(log)
    assert core.audit is not None
    head = (core.audit.seq, core.audit.head)
    rows = lines(log)
    for index in (3, len(rows) - 1):  # an inner entry, then the last one
        edited = list(rows)
        entry = orjson.loads(edited[index])
        entry["data"]["nonce"] = 99
        digest = _entry_hash(entry["seq"], entry["ts"], entry["prev"], entry["kind"], entry["data"])
        entry["hash"] = "0x" + digest.hex()
        edited[index] = orjson.dumps(entry)
        log.write_bytes(b"\n".join(edited) + b"\n")
        problems, _ = verify_log(str(log), None, head)
        found = [(p.seq, p.kind) for p in problems]
        if index == 3:
            assert (5, "chain_break") in found  # the next entry still links to the original
        else:
            assert found == [(6, "edited")]  # the signed head names the original hash


def test_a_dropped_entry_is_pinpointed(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log)
    rows = lines(log)
    del rows[2]
    log.write_bytes(b"\n".join(rows) + b"\n")
    assert kinds(log) == [(3, 3, "dropped")]


def test_reordered_entries_are_pinpointed(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log)
    rows = lines(log)
    rows[2], rows[3] = rows[3], rows[2]
    log.write_bytes(b"\n".join(rows) + b"\n")
    assert kinds(log) == [(4, 3, "reordered")]


def test_a_truncated_tail_is_caught_against_the_audit_head(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    core = write_log(log)
    head = core.handle({"id": 1, "method": "audit_head"}, 0.0)["result"]
    log.write_bytes(b"\n".join(lines(log)[:-1]) + b"\n")
    problems, _ = verify_log(str(log), expect_head=(head["seq"], head["hash"]))
    assert [p.kind for p in problems] == ["truncated"]


def test_a_segment_signed_by_an_unknown_key_is_flagged(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log)
    problems, _ = verify_log(str(log), {"0x04" + "00" * 64})
    assert [(p.line, p.kind) for p in problems] == [(1, "untrusted_key")]


def test_the_verify_log_command_exits_nonzero_and_prints_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log)
    assert main(["verify-log", str(log)]) == 0
    rows = lines(log)
    del rows[4]
    log.write_bytes(b"\n".join(rows) + b"\n")
    assert main(["verify-log", str(log)]) == 1
    out = capsys.readouterr().out
    assert "line 5: seq 5: dropped" in out and "FAIL" in out


def test_nonce_protection_is_restored_from_the_log_after_a_restart(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, n=2)
    core = EnclaveCore(
        [LocalKey(ANVIL_KEY)],
        Policy(PolicyConfig(chain_ids=(1,))),
        audit=AuditLog(str(log), LocalKey(os.urandom(32))),
    )
    assert core.restore_from_log(str(log)) == 2
    core.start(2000.0, b"\0" * 48)
    request = sign_request(1, fields(nonce=1, value=5, to=ALLOWED_TO))
    reply = core.handle(request, 2000.0)
    assert reply["error"]["rule"] == "nonce_conflict"
    assert core.audit is not None
    core.audit.close()
    problems, keys = verify_log(str(log))
    assert problems == [] and len(keys) == 2  # two segments, chained across the restart


def test_a_restart_after_more_than_half_a_window_of_nonces_keeps_signing_new_ones(
    tmp_path: Path,
) -> None:
    """The restored window is the one the enclave had: replayed with the same slide rule. Before,
    restore left the floor half a window below the *first* logged nonce, so after 2048+ signatures
    per account (the default window) a restart refused every new nonce as beyond the window."""
    log = tmp_path / "audit.jsonl"
    config = PolicyConfig(chain_ids=(1,), nonce_window=16)

    def core() -> EnclaveCore:
        return EnclaveCore(
            [LocalKey(ANVIL_KEY)],
            Policy(config),
            audit=AuditLog(str(log), LocalKey(os.urandom(32))),
        )

    first = core()
    first.start(1000.0, b"\0" * 48)
    for nonce in range(40):
        assert "result" in first.handle(sign_request(nonce, fields(nonce=nonce)), 1000.0)
    assert first.audit is not None
    first.audit.close()
    again = core()
    assert again.restore_from_log(str(log)) == 40

    def window(c: EnclaveCore) -> list[tuple[int, list[int]]]:
        return [(w.floor, sorted(w.records)) for w in c.policy._windows.values()]

    assert window(again) == window(first)
    again.start(2000.0, b"\0" * 48)
    assert "result" in again.handle(sign_request(40, fields(nonce=40)), 2000.0)
    # ... and what it remembers it still protects; what it forgot it still refuses.
    swap = again.handle(sign_request(39, fields(nonce=39, value=5)), 2000.0)
    assert swap["error"]["rule"] == "nonce_conflict"
    old = again.handle(sign_request(10, fields(nonce=10, value=5)), 2000.0)
    assert old["error"]["rule"] == "nonce_too_low"
    assert again.audit is not None
    again.audit.close()

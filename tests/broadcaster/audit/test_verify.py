"""Streamed audit entries are verified before the broadcaster keeps them; each attack is refused.

Entries come from the real enclave core (``enclave.core.EnclaveCore`` with its in-memory
``AuditLog``) through its ``audit_entries`` method, then are attacked as a parent instance that
relays the enclave's socket could: edit one, drop one, re-sign the log with its own key, serve a
restarted log, forge the head.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import orjson
import pytest

from broadcaster.audit.verify import (
    GENESIS,
    Anchor,
    AuditRefused,
    entry_hash,
    head_digest,
    verify_batch,
)
from enclave import audit as enclave_audit
from enclave.audit import AuditLog
from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig
from signer_client.signing import LocalKey
from signer_client.txcodec import signing_payload
from tests.enclave.running import ALLOWED_TO, ANVIL_ADDRESS, ANVIL_KEY
from tests.enclave.test_policy import fields


def enclave(key: LocalKey | None = None) -> EnclaveCore:
    log = AuditLog(None, key or LocalKey(os.urandom(32)))
    core = EnclaveCore(
        [LocalKey(ANVIL_KEY)],
        Policy(PolicyConfig(chain_ids=(1,), allowed_to=(ALLOWED_TO,))),
        audit=log,
    )
    core.start(0.0, b"\0" * 48)
    return core


def sign(core: EnclaveCore, nonce: int) -> dict[str, Any]:
    payload = signing_payload(fields(to=ALLOWED_TO, nonce=nonce))
    params = {"sender": ANVIL_ADDRESS.lower(), "payload": "0x" + payload.hex()}
    reply = core.handle({"id": 1, "method": "sign_transaction", "params": params}, 1.0)
    assert "result" in reply, reply
    return reply


def entries(core: EnclaveCore, from_seq: int = 1, limit: int = 1000) -> dict[str, Any]:
    params = {"from_seq": from_seq, "limit": limit}
    reply = core.handle({"id": 2, "method": "audit_entries", "params": params}, 2.0)
    result: dict[str, Any] = orjson.loads(orjson.dumps(reply["result"]))  # as over the wire
    return result


def key_of(core: EnclaveCore) -> str:
    return str(core.hello_result["log_public_key"])


def test_the_hashes_are_the_enclave_s_own() -> None:
    data = {"a": 1, "b": "x"}
    assert entry_hash(3, 1.5, GENESIS, "sign", data) == enclave_audit._entry_hash(
        3, 1.5, GENESIS, "sign", data
    )
    assert head_digest(3, "0x" + "11" * 32) == enclave_audit.head_digest(3, "0x" + "11" * 32)


def test_a_genuine_log_verifies_and_its_sign_entries_carry_the_tx_hashes() -> None:
    core = enclave()
    sign(core, 0)
    sign(core, 1)
    batch = verify_batch(Anchor(), entries(core), {key_of(core)})
    assert [e.kind for e in batch.entries] == ["start", "sign", "sign"]
    assert [e.nonce for e in batch.entries] == [None, 0, 1]
    assert all(e.tx_hash is not None for e in batch.entries[1:])
    assert batch.anchor.seq == batch.head.seq == 3
    # the next page extends it
    sign(core, 2)
    more = verify_batch(batch.anchor, entries(core, 4), {key_of(core)})
    assert [e.seq for e in more.entries] == [4]


def test_an_edited_entry_is_refused_as_tampered() -> None:
    core = enclave()
    sign(core, 0)
    reply = entries(core)
    reply["entries"][1]["data"]["nonce"] = 9  # the relay rewrites what was signed
    with pytest.raises(AuditRefused) as info:
        verify_batch(Anchor(), reply, {key_of(core)})
    assert (info.value.reason, info.value.seq) == ("tampered", 2)


def test_a_dropped_entry_is_a_gap() -> None:
    core = enclave()
    for n in range(3):
        sign(core, n)
    reply = entries(core)
    del reply["entries"][2]  # hide one signature
    with pytest.raises(AuditRefused) as info:
        verify_batch(Anchor(), reply, {key_of(core)})
    assert info.value.reason == "gap"


def test_a_log_re_signed_by_another_key_is_refused_it_was_never_attested() -> None:
    genuine, forged = enclave(), enclave()  # the parent runs its own "enclave" with its key
    sign(forged, 0)
    with pytest.raises(AuditRefused) as info:
        verify_batch(Anchor(), entries(forged), {key_of(genuine)})
    assert info.value.reason == "untrusted_key"


def test_entries_withheld_below_the_head_are_a_gap() -> None:
    core = enclave()
    sign(core, 0)
    reply = entries(core)
    reply["entries"] = []  # the relay serves the head but none of the entries up to it
    with pytest.raises(AuditRefused) as info:
        verify_batch(Anchor(), reply, {key_of(core)})
    assert info.value.reason == "gap"


def test_an_entry_signed_by_another_key_inside_a_segment_is_a_bad_signature() -> None:
    core, other = enclave(), enclave()
    sign(core, 0)
    sign(other, 0)
    reply = entries(core)
    forged = copy.deepcopy(reply["entries"][1])
    digest = bytes.fromhex(forged["hash"][2:])
    forged["sig"] = "0x" + other.log_key.sign_hash(digest).hex()  # same content, other key
    reply["entries"][1] = forged
    with pytest.raises(AuditRefused) as info:
        verify_batch(Anchor(), reply, {key_of(core), key_of(other)})
    assert info.value.reason == "bad_signature"


def test_a_restarted_enclave_whose_log_does_not_extend_our_head_is_refused() -> None:
    first = enclave()
    for n in range(3):
        sign(first, n)
    held = verify_batch(Anchor(), entries(first), {key_of(first)}).anchor
    restarted = enclave()  # a fresh log: seq 1 again, its head behind ours
    with pytest.raises(AuditRefused) as info:
        verify_batch(held, entries(restarted, held.seq + 1), {key_of(first), key_of(restarted)})
    assert info.value.reason == "not_extending"
    # ... and one that has signed more than we hold, on its own chain
    for n in range(5):
        sign(restarted, n)
    with pytest.raises(AuditRefused) as info:
        verify_batch(held, entries(restarted, held.seq + 1), {key_of(first), key_of(restarted)})
    assert info.value.reason == "not_extending"


def test_a_truncated_tail_served_with_the_old_head_is_refused() -> None:
    core = enclave()
    for n in range(3):
        sign(core, n)
    held = verify_batch(Anchor(), entries(core), {key_of(core)}).anchor
    # The relay answers with an empty page and a head it made up at our seq: not our entry.
    reply = entries(core, held.seq + 1)
    reply["head"]["hash"] = "0x" + "ee" * 32
    with pytest.raises(AuditRefused) as info:
        verify_batch(held, reply, {key_of(core)})
    assert info.value.reason == "not_extending"


def test_a_head_not_signed_by_the_log_key_is_refused() -> None:
    core = enclave()
    sign(core, 0)
    reply = entries(core)
    reply["head"]["signature"] = "0x" + LocalKey(os.urandom(32)).sign_hash(b"\1" * 32).hex()
    with pytest.raises(AuditRefused) as info:
        verify_batch(Anchor(), reply, {key_of(core)})
    assert info.value.reason == "bad_head"


def test_a_malformed_reply_is_refused_with_what_is_wrong() -> None:
    with pytest.raises(AuditRefused, match="entries list"):
        verify_batch(Anchor(), {"head": {}}, set())
    with pytest.raises(AuditRefused, match="head"):
        verify_batch(Anchor(), {"entries": [], "head": {"seq": -1}}, set())


def test_every_pre_bound_refusal_reason_is_one_the_code_refuses_with() -> None:
    import re
    from pathlib import Path

    from broadcaster.audit.verify import REFUSAL_REASONS

    source = "\n".join(
        p.read_text() for p in (Path(__file__).parents[3] / "broadcaster/audit").glob("*.py")
    )
    used = set(re.findall(r'AuditRefused\(\s*"([a-z_]+)"', source))
    used |= set(re.findall(r'reason = "([a-z_]+)" if', source))
    used |= set(re.findall(r'else "([a-z_]+)"\n', source))
    assert used == set(REFUSAL_REASONS)


def test_entries_without_their_own_signature_are_taken_on_the_signed_head_of_their_page() -> None:
    """The enclave may sign only segment starts and heads (every later entry is chained into
    the head): such a page verifies, and an edit in it is still caught."""
    core = enclave()
    sign(core, 0)
    sign(core, 1)
    reply = entries(core)
    for entry in reply["entries"][1:]:
        entry["sig"] = None
    batch = verify_batch(Anchor(), copy.deepcopy(reply), {key_of(core)})
    assert [e.nonce for e in batch.entries] == [None, 0, 1]
    reply["entries"][2]["data"]["to"] = "0x" + "66" * 20
    with pytest.raises(AuditRefused) as info:
        verify_batch(Anchor(), reply, {key_of(core)})
    assert info.value.reason == "tampered"


def test_a_page_that_does_not_end_at_its_signed_head_is_refused() -> None:
    core = enclave()
    sign(core, 0)
    sign(core, 1)
    reply = entries(core)
    del reply["entries"][-1]  # the relay cuts the page's tail, keeps the head
    with pytest.raises(AuditRefused) as info:
        verify_batch(Anchor(), reply, {key_of(core)})
    assert info.value.reason == "bad_head"

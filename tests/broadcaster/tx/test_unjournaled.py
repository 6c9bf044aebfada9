"""``plan_unjournaled``: which nonces recovery takes with a noop (broadcaster.tx.unjournaled)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broadcaster.audit.stream import AuditStreamer
from broadcaster.tx.unjournaled import NoopAt, copy_source, plan_unjournaled
from nonce.audit_copy import open_audit_copy
from signer_client.errors import SignerUnavailable

A, B = "0xaa", "0xbb"


def test_a_signed_nonce_the_book_does_not_hold_is_taken_by_a_noop() -> None:
    booked = {(A, 5), (A, 6)}
    plan = plan_unjournaled({A: {5, 6, 7}}, {A: 5}, lambda s, n: (s, n) in booked)
    assert plan == [NoopAt(A, 7, True)]


def test_holes_below_the_highest_lost_signature_are_plugged_too() -> None:
    # Two intents lost in one group commit, the signer answered only the second's request.
    plan = plan_unjournaled({A: {9}}, {A: 7}, lambda s, n: False)
    assert plan == [NoopAt(A, 7, False), NoopAt(A, 8, False), NoopAt(A, 9, True)]


def test_nonces_below_the_chain_count_or_booked_need_nothing() -> None:
    booked = {(B, 3)}
    plan = plan_unjournaled({A: {1, 2}, B: {3}}, {A: 4, B: 3}, lambda s, n: (s, n) in booked)
    assert plan == []


def test_each_sender_is_planned_from_its_own_floor() -> None:
    plan = plan_unjournaled({B: {2}, A: {0}}, {A: 0, B: 2}, lambda s, n: False)
    assert plan == [NoopAt(A, 0, True), NoopAt(B, 2, True)]


async def test_the_copy_source_raises_while_the_signer_cannot_bring_the_copy_up_to_date(
    tmp_path: Path,
) -> None:
    """Recovery must not read "no lost signatures" from a copy that may lack the newest entries:
    it is told the signer is unavailable (and retries while new intents wait)."""
    copy = open_audit_copy(tmp_path / "journal.db")

    class Down:
        async def audit_entries(self, from_seq: int, limit: int = 1000) -> dict[str, Any]:
            raise SignerUnavailable("down")

    streamer = AuditStreamer(copy, Down(), on_refused=lambda exc: None)
    try:
        with pytest.raises(SignerUnavailable):
            await copy_source(streamer, copy, chain_id=1)({A: 0})
    finally:
        copy.close()


async def test_signatures_for_another_chain_are_not_this_chain_s_lost_nonces(
    tmp_path: Path,
) -> None:
    """Adversarial (review): one enclave, its policy allowing two chains (``chain_ids``), the
    same key on both (a service per chain). The audit copy holds every ``sign`` entry of the
    enclave's log; its nonce protection is per (chain, sender). Recovery on chain 1 read chain
    10's signatures (nonce 40 there) as chain 1's lost ones and paid for 40 noops on chain 1."""
    from enclave.audit import AuditLog
    from enclave.core import EnclaveCore
    from enclave.policy import Policy, PolicyConfig
    from signer_client.signing import LocalKey
    from signer_client.txcodec import signing_payload
    from tests.broadcaster.audit.test_stream import CoreSource
    from tests.enclave.running import ALLOWED_TO, ANVIL_ADDRESS, ANVIL_KEY
    from tests.enclave.test_policy import fields

    core = EnclaveCore(
        [LocalKey(ANVIL_KEY)],
        Policy(PolicyConfig(chain_ids=(1, 10), allowed_to=(ALLOWED_TO,))),
        audit=AuditLog(None, LocalKey(bytes(range(1, 33)))),
    )
    core.start(0.0, b"\0" * 48)
    sender = ANVIL_ADDRESS.lower()
    for chain, nonce in ((1, 3), (10, 40)):
        payload = signing_payload(fields(to=ALLOWED_TO, nonce=nonce, chainId=chain))
        params = {"sender": sender, "payload": "0x" + payload.hex()}
        assert "result" in core.handle(
            {"id": 1, "method": "sign_transaction", "params": params}, 1.0
        )
    copy = open_audit_copy(tmp_path / "journal.db")
    streamer = AuditStreamer(copy, CoreSource(core), on_refused=lambda exc: None)
    streamer.trust(str(core.hello_result["log_public_key"]), attested=False)
    try:
        signed = await copy_source(streamer, copy, chain_id=1)({sender: 0})
        assert {s: set(n) for s, n in signed.items()} == {sender: {3}}
        plan = plan_unjournaled(signed, {sender: 0}, lambda s, n: False)
        assert max(n.nonce for n in plan) == 3
    finally:
        copy.close()

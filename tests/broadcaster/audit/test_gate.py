"""One report per foreign (sender, nonce), whoever finds it; stop-signing refuses with a reason."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from broadcaster.audit.gate import ForeignReport, SigningGate
from broadcaster.audit.reconcile import Foreign
from broadcaster.audit.verify import AuditRefused
from signer_client.errors import PolicyDenied
from signer_client.signing import SignedTx

A = "0x" + "aa" * 20
B = "0x" + "bb" * 20


class Recorder:
    def __init__(self) -> None:
        self.counts: list[str] = []
        self.alerts: list[tuple[str, str]] = []

    def count(self, sender: str) -> None:
        self.counts.append(sender)

    def alert(self, kind: str, detail: str) -> None:
        self.alerts.append((kind, detail))


class Signs:
    def __init__(self) -> None:
        self.signed = 0

    async def sign_transaction(self, tx: Mapping[str, Any], sender: str) -> SignedTx:
        self.signed += 1
        return SignedTx(b"\x02", b"\0" * 32, sender, 0, 1, 2)


def test_the_reconciler_and_the_inclusion_tracker_finding_one_tx_count_it_once() -> None:
    rec = Recorder()
    report = ForeignReport(count=rec.count, alert=rec.alert)
    found = Foreign(b"\1" * 32, A, 5, 10, "0x" + "10" * 32)
    assert report.foreign(A, 5, found)  # the live reconciler, first
    assert not report.foreign(A.upper().replace("0X", "0x"), 5)  # the inclusion tracker, later
    assert not report.foreign(A, 5, found)  # a reorg brought the block back
    assert report.foreign(A, 6)
    assert rec.counts == [A, A]
    assert [kind for kind, _ in rec.alerts] == ["foreign_transaction"] * 2
    assert "0x" + "01" * 32 in rec.alerts[0][1]


def test_stop_signing_refuses_that_sender_only_with_a_reason_naming_the_tx() -> None:
    async def main() -> None:
        rec, inner = Recorder(), Signs()
        gate = SigningGate(inner)
        report = ForeignReport(count=rec.count, alert=rec.alert, gate=gate, stop_signing=True)
        await gate.sign_transaction({}, A)
        report.foreign(A, 5, Foreign(b"\1" * 32, A, 5, 10, "0x" + "10" * 32))
        with pytest.raises(PolicyDenied) as info:
            await gate.sign_transaction({}, A)
        assert info.value.rule == "audit_stopped"
        assert (
            "stop_signing_on_foreign" in info.value.reason and "0x" + "01" * 32 in info.value.reason
        )
        await gate.sign_transaction({}, B)  # another account signs on
        assert inner.signed == 2
        assert gate.why(A) is not None and gate.why(B) is None

    asyncio.run(main())


def test_without_stop_signing_a_foreign_tx_is_reported_and_signing_goes_on() -> None:
    rec = Recorder()
    gate = SigningGate(Signs())
    ForeignReport(count=rec.count, alert=rec.alert, gate=gate).foreign(A, 1)
    assert gate.why(A) is None and rec.counts == [A]


def test_a_refused_audit_log_stops_every_signature() -> None:
    rec = Recorder()
    gate = SigningGate(Signs())
    report = ForeignReport(count=rec.count, alert=rec.alert, gate=gate)
    report.refused(AuditRefused("not_extending", "the enclave's head is behind ours"))
    assert gate.why(A) is not None and gate.why(B) is not None
    assert "not_extending" in (gate.why(A) or "")
    assert rec.alerts[0][0] == "audit_refused"


def test_after_a_reconnect_nothing_is_signed_before_the_log_check_and_a_refusal_wins() -> None:
    """Attack: the reconnect window. A restarted enclave on a rolled-back log gets a signature
    out before the streamer's check refuses it. Held, a signature waits for the check: released
    it signs; refused it is denied; never checked it gives up (SignerUnavailable, retried)."""
    from signer_client.errors import SignerUnavailable

    async def main() -> None:
        rec, inner = Recorder(), Signs()
        gate = SigningGate(inner, hold_timeout=0.05)
        report = ForeignReport(count=rec.count, alert=rec.alert, gate=gate)
        gate.hold()
        waiting = asyncio.ensure_future(gate.sign_transaction({}, A))
        await asyncio.sleep(0)
        assert inner.signed == 0 and not waiting.done()
        gate.release()
        await waiting
        assert inner.signed == 1
        gate.hold()
        waiting = asyncio.ensure_future(gate.sign_transaction({}, A))
        await asyncio.sleep(0)
        report.refused(AuditRefused("not_extending", "the enclave's head is behind ours"))
        with pytest.raises(PolicyDenied):
            await waiting
        assert inner.signed == 1
        timeouts: list[None] = []
        gate2 = SigningGate(inner, hold_timeout=0.01, on_timeout=lambda: timeouts.append(None))
        gate2.hold()
        with pytest.raises(SignerUnavailable):
            await gate2.sign_transaction({}, B)
        assert inner.signed == 1
        # Counted (review: signer_errors_total counts the client's events only, and the client
        # never saw this request: the signer stayed "up" and nothing fired while none signed).
        assert len(timeouts) == 1

    asyncio.run(main())

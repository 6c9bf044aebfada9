"""``signer_errors_total{kind}`` counts failures only: the signer client's event sink also
reports ``connected``, ``attested`` and every ``signed`` reply, and those are no errors (the
SignerErrors alert fires on any increase of this counter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broadcaster.metrics import SIGNER_ERROR_KINDS, SIGNER_OK_EVENTS, Metrics
from enclave.attestor import measure_pcr0
from signer_client import AttestationPolicy, PolicyDenied, SignerClient
from signer_client.events import SignerEvent
from tests.enclave.running import ALLOWED_TO, ANVIL_ADDRESS, running_enclave


def _tx(nonce: int, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": 2,
        "chainId": 31337,
        "nonce": nonce,
        "to": ALLOWED_TO,
        "value": 10**15,
        "data": b"",
        "gas": 21000,
        "maxFeePerGas": 30 * 10**9,
        "maxPriorityFeePerGas": 2 * 10**9,
        "accessList": [],
    }
    base.update(overrides)
    return base


def _counted(metrics: Metrics) -> dict[str, float]:
    counted: dict[str, float] = {}
    for family in metrics.registry.collect():
        if family.name == "broadcaster_signer_errors":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value:
                    counted[sample.labels["kind"]] = sample.value
    return counted


def test_the_error_kinds_are_the_signer_events_that_are_failures() -> None:
    assert set(SIGNER_ERROR_KINDS) == {e.value for e in SignerEvent} - set(SIGNER_OK_EVENTS)
    assert {"signed", "connected", "attested"}.isdisjoint(SIGNER_ERROR_KINDS)
    # The alerts' examples and the dashboard name kinds that exist.
    assert {"timeout", "policy_denied", "hello_mismatch", "channel_invalid"} <= set(
        SIGNER_ERROR_KINDS
    )


def test_every_error_kind_is_pre_bound_at_zero() -> None:
    metrics = Metrics()
    for kind in SIGNER_ERROR_KINDS:
        assert metrics.sample("broadcaster_signer_errors_total", {"kind": kind}) == 0
    assert metrics.sample("broadcaster_signer_errors_total", {"kind": "signed"}) is None


async def test_a_real_signing_session_counts_only_its_denial(tmp_path: Path) -> None:
    """The real enclave app, attested: connect, attest, sign twice, one policy denial. Before
    the fix every ``signed``/``connected``/``attested`` event was counted as a signer error."""
    metrics = Metrics()
    with running_enclave(tmp_path, f"unix://{tmp_path}/e.sock") as enclave:
        policy = AttestationPolicy((enclave.pki_dir / "root.pem").read_bytes(), measure_pcr0())
        async with SignerClient(
            enclave.url, attestation=policy, on_event=metrics.signer_error
        ) as client:
            await client.sign_transaction(_tx(7000), ANVIL_ADDRESS)
            await client.sign_transaction(_tx(7001), ANVIL_ADDRESS)
            with pytest.raises(PolicyDenied):
                await client.sign_transaction(_tx(7002, chainId=5), ANVIL_ADDRESS)
    counted = _counted(metrics)
    # The client's own close reports "disconnected" (a lost signer is a failure to alert on);
    # nothing else but the denial may move.
    assert counted.pop("policy_denied") == 1
    assert set(counted) <= {"disconnected"}, counted

"""Attestation documents from the dev PKI verify, and every tampering is named."""

from __future__ import annotations

import time
from pathlib import Path

import cbor2
import pytest

from enclave.attestor import DevAttestor, create_dev_pki, measure_pcr0
from signer_client.attestation import AttestationPolicy, verify_attestation
from signer_client.errors import AttestationError

PCR0 = b"\x11" * 48
NONCE = b"\x22" * 32


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    create_dev_pki(directory)
    return directory


@pytest.fixture(scope="module")
def attestor(pki: Path) -> DevAttestor:
    return DevAttestor.from_dir(pki, {0: PCR0, 1: b"\0" * 48})


def policy(pki: Path, pcr0: bytes = PCR0) -> AttestationPolicy:
    return AttestationPolicy((pki / "root.pem").read_bytes(), pcr0)


def failed_check(doc: bytes, pol: AttestationPolicy, **kwargs: object) -> str:
    with pytest.raises(AttestationError) as info:
        verify_attestation(doc, pol, **kwargs)  # type: ignore[arg-type]
    return info.value.check


def test_a_fresh_document_verifies(pki: Path, attestor: DevAttestor) -> None:
    doc = attestor.document(NONCE, b"ud", b"pk", time.time())
    result = verify_attestation(doc, policy(pki), nonce=NONCE, user_data=b"ud")
    assert result.pcrs[0] == PCR0 and result.public_key == b"pk"


def test_a_document_under_another_root_fails(
    pki: Path, attestor: DevAttestor, tmp_path: Path
) -> None:
    other, _ = create_dev_pki(tmp_path)
    doc = attestor.document(NONCE, b"", b"", time.time())
    assert failed_check(doc, AttestationPolicy(other.read_bytes(), PCR0), nonce=NONCE) == "root"


def test_a_bundle_that_names_our_root_but_a_foreign_leaf_fails_the_chain(
    pki: Path, tmp_path: Path
) -> None:
    other_dir = tmp_path / "other"
    create_dev_pki(other_dir)
    forger = DevAttestor.from_dir(other_dir, {0: PCR0})
    forger.root_cert = DevAttestor.from_dir(pki, {0: PCR0}).root_cert  # claims our root
    doc = forger.document(NONCE, b"", b"", time.time())
    assert failed_check(doc, policy(pki), nonce=NONCE) == "chain"


def test_a_wrong_pcr0_fails(pki: Path, attestor: DevAttestor) -> None:
    doc = attestor.document(NONCE, b"", b"", time.time())
    assert failed_check(doc, policy(pki, measure_pcr0()), nonce=NONCE) == "pcr0"


def test_a_stale_nonce_fails(pki: Path, attestor: DevAttestor) -> None:
    old = attestor.document(b"\x01" * 32, b"", b"", time.time())
    assert failed_check(old, policy(pki), nonce=NONCE) == "nonce"


def test_an_old_timestamp_fails(pki: Path, attestor: DevAttestor) -> None:
    doc = attestor.document(NONCE, b"", b"", time.time() - 3600)
    assert failed_check(doc, policy(pki), nonce=NONCE) == "stale"


def test_a_tampered_payload_fails_the_signature(pki: Path, attestor: DevAttestor) -> None:
    doc = cbor2.loads(attestor.document(NONCE, b"", b"", time.time()))
    protected, unprotected, payload, signature = doc.value
    body = cbor2.loads(payload)
    body["pcrs"][0] = b"\x33" * 48
    forged = cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, cbor2.dumps(body), signature]))
    assert failed_check(forged, policy(pki, b"\x33" * 48), nonce=NONCE) == "signature"


def test_a_document_for_another_hello_fails(pki: Path, attestor: DevAttestor) -> None:
    doc = attestor.document(NONCE, b"mine", b"", time.time())
    assert failed_check(doc, policy(pki), nonce=NONCE, user_data=b"yours") == "user_data"


def test_garbage_is_not_a_document(pki: Path) -> None:
    assert failed_check(b"\x00garbage", policy(pki), nonce=NONCE) == "format"


@pytest.mark.parametrize(
    "mangle",
    [
        {"pcrs": {0: 10**9}},  # bytes(10**9), before any signature is checked: a gigabyte
        {"pcrs": [b"\x11" * 48]},  # not a map
        {"pcrs": {"zero": PCR0}},
        {"cabundle": 7},
        {"timestamp": "soon"},
    ],
)
def test_an_unsigned_mangled_payload_is_a_format_error_not_an_allocation(
    pki: Path, attestor: DevAttestor, mangle: dict[str, object]
) -> None:
    """Whoever owns the socket can send any document: everything read before the signature is
    checked must be type-checked, never converted on trust."""
    doc = cbor2.loads(attestor.document(NONCE, b"", b"", time.time()))
    protected, unprotected, payload, signature = doc.value
    body = {**cbor2.loads(payload), **mangle}
    forged = cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, cbor2.dumps(body), signature]))
    assert failed_check(forged, policy(pki), nonce=NONCE) == "format"

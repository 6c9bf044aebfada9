"""Attestation documents: COSE_Sign1 (RFC 9052) over a CBOR payload, shaped like AWS Nitro's.

The document is ``[protected, unprotected, payload, signature]`` where ``protected`` is the CBOR
map ``{1: -35}`` (alg ES384), the signature is raw ``r || s`` (48 bytes each) over the
``Sig_structure`` ``["Signature1", protected, b"", payload]`` with ECDSA P-384 / SHA-384, and the
payload map holds ``module_id, digest, timestamp (ms), pcrs {index: bytes}, certificate (DER),
cabundle [root, intermediates...], public_key, user_data, nonce`` (AWS Nitro Enclaves User Guide,
"Verifying the root of trust").

Verification, as :func:`verify_attestation` does it: the leaf certificate must chain through the
bundle's intermediates to the *pinned* root (never to the root the document brings), each link and
the leaf valid now; the COSE signature must verify under the leaf key; PCR0 must equal the expected
image measurement; the nonce must be the one we just sent (a replayed, stale document fails); the
timestamp must be recent; ``user_data`` must commit to the ``hello`` we were given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from signer_client.errors import AttestationError

__all__ = [
    "COSE_ALG_ES384",
    "AttestationPolicy",
    "AttestationResult",
    "sig_structure",
    "verify_attestation",
]

COSE_ALG_ES384 = -35


@dataclass(frozen=True, slots=True)
class AttestationPolicy:
    """What a client pins: the root certificate (PEM or DER) and the expected PCR0 (48 bytes)."""

    root_certificate: bytes
    pcr0: bytes
    max_age: float = 300.0  # seconds a document's timestamp may lag our clock

    @classmethod
    def from_files(
        cls, root_pem_path: str, pcr0_hex: str, max_age: float = 300.0
    ) -> AttestationPolicy:
        with open(root_pem_path, "rb") as f:
            root = f.read()
        return cls(root, bytes.fromhex(pcr0_hex.removeprefix("0x")), max_age)


@dataclass(frozen=True, slots=True)
class AttestationResult:
    module_id: str
    timestamp_ms: int
    pcrs: dict[int, bytes]
    public_key: bytes
    user_data: bytes


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The bytes a COSE_Sign1 signature covers (RFC 9052 section 4.4)."""
    return cbor2.dumps(["Signature1", protected, b"", payload])


def _load_cert(data: bytes) -> x509.Certificate:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _check_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise AttestationError("chain", f"{what} certificate is not valid now")


def _decode(document: bytes) -> tuple[bytes, bytes, bytes, dict[Any, Any]]:
    try:
        outer = cbor2.loads(document)
        if isinstance(outer, cbor2.CBORTag):  # tag 18 = COSE_Sign1
            outer = outer.value
        protected, _unprotected, payload, signature = outer
        header = cbor2.loads(protected)
        body = cbor2.loads(payload)
    except (ValueError, TypeError, cbor2.CBORDecodeError) as exc:
        raise AttestationError("format", f"not a COSE_Sign1 document: {exc}") from exc
    if not isinstance(header, dict) or header.get(1) != COSE_ALG_ES384:
        raise AttestationError("format", "protected header must say alg ES384 (-35)")
    if not isinstance(body, dict):
        raise AttestationError("format", "payload is not a CBOR map")
    return protected, payload, signature, body


def verify_attestation(
    document: bytes,
    policy: AttestationPolicy,
    *,
    nonce: bytes | None,
    user_data: bytes | None = None,
    now: float | None = None,
) -> AttestationResult:
    """Verify ``document``; raise :class:`AttestationError` naming the failed check."""
    now = time.time() if now is None else now
    now_dt = datetime.fromtimestamp(now, UTC)
    protected, payload, signature, body = _decode(document)
    try:
        leaf = x509.load_der_x509_certificate(body["certificate"])
        bundle = [x509.load_der_x509_certificate(c) for c in body["cabundle"]]
        raw_pcrs = body["pcrs"]
        # Read before the signature is checked: never bytes(v) on trust (bytes(10**9) allocates
        # a gigabyte), only bytes as they are.
        if not isinstance(raw_pcrs, dict) or not all(
            type(k) is int and isinstance(v, bytes) for k, v in raw_pcrs.items()
        ):
            raise TypeError("pcrs must map integers to bytes")
        pcrs: dict[int, bytes] = dict(raw_pcrs)
        timestamp_ms = int(body["timestamp"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AttestationError("format", f"payload misses or mangles a field: {exc!r}") from exc
    root = _load_cert(policy.root_certificate)
    if not bundle or bundle[0].fingerprint(hashes.SHA256()) != root.fingerprint(hashes.SHA256()):
        raise AttestationError("root", "document does not chain to the pinned root")
    issuer = root
    _check_validity(root, now_dt, "root")
    for i, cert in enumerate([*bundle[1:], leaf]):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise AttestationError(
                "chain", f"certificate {i + 1} not issued by its parent"
            ) from exc
        _check_validity(cert, now_dt, f"chain[{i + 1}]")
        issuer = cert
    leaf_key = leaf.public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or leaf_key.curve.name != "secp384r1":
        raise AttestationError("signature", "leaf key is not ECDSA P-384")
    if not isinstance(signature, bytes) or len(signature) != 96:
        raise AttestationError("signature", "ES384 signature must be 96 bytes")
    der = encode_dss_signature(
        int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    )
    try:
        leaf_key.verify(der, sig_structure(protected, payload), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise AttestationError("signature", "COSE signature does not verify") from exc
    if pcrs.get(0) != policy.pcr0:
        got = pcrs.get(0, b"").hex()
        raise AttestationError("pcr0", f"PCR0 {got[:16]}... is not the expected image")
    if nonce is not None and body.get("nonce") != nonce:
        raise AttestationError("nonce", "document does not carry our nonce (stale or replayed)")
    if abs(now * 1000 - timestamp_ms) > policy.max_age * 1000:
        raise AttestationError("stale", "document timestamp is too old")
    doc_user_data = bytes(body.get("user_data") or b"")
    if user_data is not None and doc_user_data != user_data:
        raise AttestationError("user_data", "document does not commit to this signer's hello")
    return AttestationResult(
        module_id=str(body.get("module_id", "")),
        timestamp_ms=timestamp_ms,
        pcrs=pcrs,
        public_key=bytes(body.get("public_key") or b""),
        user_data=doc_user_data,
    )


def root_der(root_certificate: bytes) -> bytes:
    """DER bytes of a PEM or DER certificate."""
    return _load_cert(root_certificate).public_bytes(serialization.Encoding.DER)

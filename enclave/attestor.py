"""Attestation: the :class:`Attestor` seam, the dev implementation and the real one (``/dev/nsm``,
in ``enclave/nsm.py``). Documents are shaped like AWS Nitro's (see ``signer_client/attestation.py``
for the format and how clients verify it).

In a real Nitro enclave the document comes from the Nitro Security Module (``/dev/nsm``), signed
by a per-enclave leaf under AWS's root, and PCR0 is the SHA-384 measurement of the enclave image.
On a dev box we play both roles: a dev root CA (``python -m enclave dev-pki DIR``) issues an
ephemeral P-384 leaf at start, and PCR0 is a SHA-384 over this app's source files, so changing the
code changes the measurement exactly as rebuilding the image would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Protocol

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from signer_client.attestation import COSE_ALG_ES384, sig_structure

__all__ = ["Attestor", "DevAttestor", "create_dev_pki", "measure_pcr0"]


class Attestor(Protocol):
    """Produces attestation documents binding the caller's data to this enclave's measurement."""

    def document(self, nonce: bytes, user_data: bytes, public_key: bytes, now: float) -> bytes:
        """A COSE_Sign1 document carrying ``nonce``, ``user_data`` and ``public_key``."""
        ...

    def pcr0(self) -> bytes:
        """The measurement documents report (48 bytes)."""
        ...


_PACKAGES = ("enclave", "signer_client")


def measure_pcr0(root: Path | None = None) -> bytes:
    """SHA-384 over the enclave app's source (path and bytes of every ``.py``), sorted."""
    base = root or Path(__file__).resolve().parent.parent
    h = hashlib.sha384()
    for package in _PACKAGES:
        for path in sorted((base / package).glob("*.py")):
            h.update(f"{package}/{path.name}\0".encode())
            h.update(path.read_bytes())
            h.update(b"\0")
    return h.digest()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "reorg-broadcaster dev PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
    days: int,
    now: dt.datetime,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA384())
    )


def create_dev_pki(
    directory: str | Path, common_name: str = "dev enclave root"
) -> tuple[Path, Path]:
    """Write ``root.pem`` and ``root.key.pem`` (ECDSA P-384) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = _cert(common_name, key, _name(common_name), key, True, 3650, now)
    cert_path, key_path = directory / "root.pem", directory / "root.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class DevAttestor:
    """Issues COSE_Sign1 attestation documents under a dev root, a fresh leaf for every document.

    A new P-384 leaf per document, valid from one hour before to three hours after ``now`` (like the
    NSM's own per-document certificates): a leaf minted at start and reused would expire under a
    long-running enclave, and the next reconnect would fail attestation.
    """

    def __init__(
        self,
        root_cert: x509.Certificate,
        root_key: ec.EllipticCurvePrivateKey,
        pcrs: dict[int, bytes],
        module_id: str = "dev-enclave",
    ) -> None:
        self.root_cert = root_cert
        self._root_key = root_key
        self.pcrs = pcrs
        self.module_id = module_id

    def pcr0(self) -> bytes:
        return self.pcrs[0]

    @classmethod
    def from_dir(cls, directory: str | Path, pcrs: dict[int, bytes]) -> DevAttestor:
        directory = Path(directory)
        cert = x509.load_pem_x509_certificate((directory / "root.pem").read_bytes())
        key = serialization.load_pem_private_key(
            (directory / "root.key.pem").read_bytes(), password=None
        )
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("dev root key must be ECDSA")
        return cls(cert, key, pcrs)

    def _leaf(self, now: float) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP384R1())
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(self.module_id))
            .issuer_name(self.root_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(at - dt.timedelta(hours=1))
            .not_valid_after(at + dt.timedelta(hours=3))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self._root_key, hashes.SHA384())
        )
        return cert, key

    def document(self, nonce: bytes, user_data: bytes, public_key: bytes, now: float) -> bytes:
        """A COSE_Sign1 document binding ``nonce``, ``user_data`` and ``public_key``."""
        leaf, leaf_key = self._leaf(now)
        protected = cbor2.dumps({1: COSE_ALG_ES384})
        payload = cbor2.dumps(
            {
                "module_id": self.module_id,
                "digest": "SHA384",
                "timestamp": int(now * 1000),
                "pcrs": self.pcrs,
                "certificate": leaf.public_bytes(serialization.Encoding.DER),
                "cabundle": [self.root_cert.public_bytes(serialization.Encoding.DER)],
                "public_key": public_key,
                "user_data": user_data,
                "nonce": nonce,
            }
        )
        der = leaf_key.sign(sig_structure(protected, payload), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
        return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))

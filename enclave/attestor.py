"""Attestation documents from a development PKI, shaped like AWS Nitro's (see
``signer_client/attestation.py`` for the format and how clients verify it).

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

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from signer_client.attestation import COSE_ALG_ES384, sig_structure

__all__ = ["DevAttestor", "create_dev_pki", "measure_pcr0"]

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
    """Issues COSE_Sign1 attestation documents under a dev root with an ephemeral leaf key."""

    def __init__(
        self,
        root_cert: x509.Certificate,
        root_key: ec.EllipticCurvePrivateKey,
        pcrs: dict[int, bytes],
        module_id: str = "dev-enclave",
    ) -> None:
        self.root_cert = root_cert
        self.pcrs = pcrs
        self.module_id = module_id
        self._leaf_key = ec.generate_private_key(ec.SECP384R1())
        now = dt.datetime.now(dt.UTC)
        self._leaf = _cert(module_id, self._leaf_key, root_cert.subject, root_key, False, 1, now)

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

    def document(self, nonce: bytes, user_data: bytes, public_key: bytes, now: float) -> bytes:
        """A COSE_Sign1 document binding ``nonce``, ``user_data`` and ``public_key``."""
        protected = cbor2.dumps({1: COSE_ALG_ES384})
        payload = cbor2.dumps(
            {
                "module_id": self.module_id,
                "digest": "SHA384",
                "timestamp": int(now * 1000),
                "pcrs": self.pcrs,
                "certificate": self._leaf.public_bytes(serialization.Encoding.DER),
                "cabundle": [self.root_cert.public_bytes(serialization.Encoding.DER)],
                "public_key": public_key,
                "user_data": user_data,
                "nonce": nonce,
            }
        )
        der = self._leaf_key.sign(sig_structure(protected, payload), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
        return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))

"""A KMS double for tests: an HTTPS server on 127.0.0.1 speaking the two KMS calls the enclave
path needs in the shapes real KMS uses, with a key policy that releases a key only to a valid
attestation document.

- **TLS** under a test CA the double makes (its certificate names ``kms.<region>.amazonaws.com``,
  the SNI and hostname the enclave checks); the enclave pins that CA as it pins Amazon's in the
  image (``ca_file``).
- **SigV4**: every request must carry an ``Authorization`` that verifies
  (``enclave.sigv4``) under credentials the double knows, scoped to its region and ``kms``,
  signing ``host``, ``x-amz-date``, ``x-amz-target`` and ``content-type``, dated within 5
  minutes; else ``IncompleteSignatureException`` / ``InvalidSignatureException`` (HTTP 400).
- ``Decrypt`` / ``GenerateDataKey`` *require* a ``Recipient`` (like a key policy with
  ``kms:RecipientAttestation:PCR0``): the document must verify
  (``signer_client.attestation.verify_attestation``: chain to the pinned root, the leaf's COSE
  signature, fresh timestamp) and its PCR0 must be the one the key's policy names. The
  plaintext is then returned only as ``CiphertextForRecipient``: CMS EnvelopedData to the
  document's ``public_key`` (``enclave.cms.envelope``: RSAES-OAEP-SHA-256, AES-256-CBC).

``Encrypt`` / ``GenerateDataKey`` without a recipient are in-process only (the operator side).

    double = KmsDouble(root_pem, {"key-1": pcr0})
    double.start()
    endpoint = double.endpoint()        # KmsEndpoint: tcp://127.0.0.1:PORT, region, test CA
    ...
    double.stop()
"""

from __future__ import annotations

import base64
import calendar
import datetime
import hmac
import os
import re
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from enclave.cms import envelope
from enclave.kms_transport import KmsEndpoint
from enclave.sigv4 import Credentials, canonical_request, signature
from signer_client.attestation import AttestationPolicy, verify_attestation
from signer_client.errors import AttestationError

__all__ = ["KmsDouble"]


TEST_CREDENTIALS = Credentials(
    "AKIAENCLAVETEST00001", "test-secret-key/for+the-kms-double", "test-session-token"
)
"""What the parent hands the enclave in tests (the double's only known access key)."""

MAX_SKEW = 300
"""Seconds a request's ``X-Amz-Date`` may differ from the double's clock (KMS: 5 minutes)."""

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})"
)
_MUST_SIGN = frozenset({"host", "x-amz-date", "x-amz-target", "content-type"})


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, Any] | None, dns: str | None
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=dns is None, path_length=None), critical=True)
    )
    if dns is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls_files(directory: Path, host: str, ca_name: str = "kms double test CA") -> Path:
    """A test CA (``ca.pem``) and a server certificate for ``host`` under it (``server.pem``,
    ``server.key.pem``) in ``directory``; returns the CA file (what the enclave pins)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(ca_name, ca_key, None, None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(host, key, (ca_name, ca_key), host)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    (directory / "server.key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return directory / "ca.pem"


class KmsDouble:
    def __init__(
        self,
        root_certificate: bytes,
        key_policy: dict[str, bytes],
        *,
        region: str = "us-east-1",
        credentials: Credentials = TEST_CREDENTIALS,
    ) -> None:
        self.root_certificate = root_certificate
        self.key_policy = dict(key_policy)  # key id -> the PCR0 allowed to decrypt
        self.region = region
        self.credentials = {credentials.access_key: credentials}
        self._master = AESGCM.generate_key(256)
        self.refusals: list[str] = []
        self.released = 0
        self._server: ThreadingHTTPServer | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="kms-double-"))
        self.host = f"kms.{region}.amazonaws.com"
        self.ca_file = make_tls_files(self._dir, self.host)
        self.address = ""
        # A test's hook on each envelope sent (a tampering relay or a broken KMS).
        self.tamper: Callable[[bytes], bytes] = lambda der: der

    def endpoint(self, credentials: Credentials = TEST_CREDENTIALS) -> KmsEndpoint:
        """How the enclave reaches this double (after :meth:`start`)."""
        return KmsEndpoint(self.address, self.region, str(self.ca_file), credentials)

    def check_signature(
        self, headers: Mapping[str, str], body: bytes, now: float
    ) -> tuple[int, dict[str, Any]] | None:
        """``None`` when the request's SigV4 signature holds, else the refusal to send."""
        lower = {k.lower(): v for k, v in headers.items()}
        match = _AUTH.fullmatch(lower.get("authorization", ""))
        if match is None:
            return self._refuse(400, "IncompleteSignatureException", "no SigV4 Authorization")
        access, day, region, service, signed, sig = match.groups()
        creds = self.credentials.get(access)
        if creds is None:
            return self._refuse(400, "UnrecognizedClientException", "unknown access key")
        names = signed.split(";")
        stamp = lower.get("x-amz-date", "")
        if (
            region != self.region
            or service != "kms"
            or not set(names) >= _MUST_SIGN
            or names != sorted(names)
            or stamp[:8] != day
            or lower.get("host") != self.host
        ):
            return self._refuse(400, "IncompleteSignatureException", "scope or signed headers")
        try:
            when = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            return self._refuse(400, "IncompleteSignatureException", "X-Amz-Date")
        if abs(when - now) > MAX_SKEW:
            return self._refuse(400, "InvalidSignatureException", "request expired")
        if creds.token and lower.get("x-amz-security-token") != creds.token:
            return self._refuse(400, "UnrecognizedClientException", "security token")
        canonical, joined = canonical_request(
            "POST", "/", "", {n: lower[n] for n in names if n in lower}, body
        )
        want = signature(creds.secret_key, stamp, region, service, canonical)
        if joined != signed or not hmac.compare_digest(want, sig):
            return self._refuse(400, "InvalidSignatureException", "signature does not match")
        return None

    # ------------------------------------------------------------ operations

    def encrypt(self, key_id: str, plaintext: bytes) -> bytes:
        if key_id not in self.key_policy:
            raise KeyError(key_id)
        nonce = os.urandom(12)
        return nonce + AESGCM(self._master).encrypt(nonce, plaintext, key_id.encode())

    def generate_data_key(self, key_id: str) -> tuple[bytes, bytes]:
        """``(plaintext, ciphertext_blob)`` of a fresh 32-byte data key."""
        key = os.urandom(32)
        return key, self.encrypt(key_id, key)

    def _recipient_key(
        self, request: dict[str, Any], key_id: str
    ) -> rsa.RSAPublicKey | tuple[int, dict[str, Any]]:
        """The document's RSA key when the key policy allows it, else the refusal to send."""
        pcr0 = self.key_policy.get(key_id)
        if pcr0 is None:
            return self._refuse(400, "NotFoundException", f"no key {key_id!r}")
        recipient = request.get("Recipient")
        if not isinstance(recipient, dict) or "AttestationDocument" not in recipient:
            return self._refuse(
                400, "AccessDeniedException", "key policy requires a recipient attestation"
            )
        if recipient.get("KeyEncryptionAlgorithm") != "RSAES_OAEP_SHA_256":
            return self._refuse(400, "ValidationException", "KeyEncryptionAlgorithm")
        try:
            document = base64.b64decode(recipient["AttestationDocument"])
            result = verify_attestation(
                document, AttestationPolicy(self.root_certificate, pcr0), nonce=None
            )
        except AttestationError as exc:
            return self._refuse(400, "AccessDeniedException", f"attestation: {exc.check}")
        except (ValueError, TypeError) as exc:
            return self._refuse(400, "ValidationException", f"AttestationDocument: {exc}")
        try:
            public = serialization.load_der_public_key(result.public_key)
        except ValueError:
            return self._refuse(400, "ValidationException", "recipient public key")
        if not isinstance(public, rsa.RSAPublicKey):
            return self._refuse(400, "ValidationException", "recipient key is not RSA")
        return public

    def decrypt(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, JSON reply)`` for a ``TrentService.Decrypt`` request body."""
        key_id = str(request.get("KeyId", ""))
        public = self._recipient_key(request, key_id)
        if isinstance(public, tuple):
            return public
        try:
            blob = base64.b64decode(request["CiphertextBlob"])
            plaintext = AESGCM(self._master).decrypt(blob[:12], blob[12:], key_id.encode())
        except Exception:  # InvalidTag, bad base64: one answer
            return self._refuse(400, "InvalidCiphertextException", "ciphertext")
        self.released += 1
        return 200, {
            "KeyId": key_id,
            "CiphertextForRecipient": base64.b64encode(
                self.tamper(envelope(plaintext, public))
            ).decode(),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }

    def generate_data_key_for(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """``TrentService.GenerateDataKey`` with a ``Recipient``: the plaintext only wrapped."""
        key_id = str(request.get("KeyId", ""))
        public = self._recipient_key(request, key_id)
        if isinstance(public, tuple):
            return public
        key, blob = self.generate_data_key(key_id)
        self.released += 1
        return 200, {
            "KeyId": key_id,
            "CiphertextBlob": base64.b64encode(blob).decode(),
            "CiphertextForRecipient": base64.b64encode(self.tamper(envelope(key, public))).decode(),
        }

    def _refuse(self, status: int, kind: str, message: str) -> tuple[int, dict[str, Any]]:
        self.refusals.append(f"{kind}: {message}")
        return status, {"__type": kind, "message": message}

    # ------------------------------------------------------------ server

    def start(self) -> KmsEndpoint:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length", "0")), 1 << 20)
                target = self.headers.get("X-Amz-Target", "")
                raw = self.rfile.read(length)
                refused = double.check_signature(dict(self.headers.items()), raw, time.time())
                if refused is not None:
                    status, reply = refused
                else:
                    try:
                        body = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        status, reply = 400, {"__type": "SerializationException"}
                    else:
                        if target == "TrentService.Decrypt" and isinstance(body, dict):
                            status, reply = double.decrypt(body)
                        elif target == "TrentService.GenerateDataKey" and isinstance(body, dict):
                            status, reply = double.generate_data_key_for(body)
                        else:
                            status, reply = 400, {"__type": "UnknownOperationException"}
                data = orjson.dumps(reply)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._dir / "server.pem", self._dir / "server.key.pem")
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.address = f"tcp://127.0.0.1:{server.server_address[1]}"
        return self.endpoint()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        shutil.rmtree(self._dir, ignore_errors=True)

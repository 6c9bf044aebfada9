"""A KMS double for tests: a small HTTP server on 127.0.0.1 speaking the two KMS calls the enclave
path needs, with a key policy that releases a key only to a valid attestation document.

``Encrypt`` / ``GenerateDataKey`` (operator side, in-process, no recipient) and, over HTTP,
``Decrypt`` and ``GenerateDataKey`` with a recipient (keys generated inside the enclave). Both
*require* a ``Recipient`` (like a key policy with ``kms:RecipientAttestation:PCR0``): the document
must verify (``signer_client.attestation.verify_attestation``: chain to the pinned root, the leaf's
COSE signature, fresh timestamp) and its PCR0 must be the one the key's policy names. Then the
plaintext is returned only as ``CiphertextForRecipient``: RSA-OAEP-SHA256 to the document's
``public_key`` (real KMS wraps that in CMS EnvelopedData; see ``enclave/kms.py``).

    double = KmsDouble(root_pem, {"key-1": pcr0})
    url = double.start()                # http://127.0.0.1:PORT/
    ...
    double.stop()
"""

from __future__ import annotations

import base64
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave.kms import OAEP
from signer_client.attestation import AttestationPolicy, verify_attestation
from signer_client.errors import AttestationError

__all__ = ["KmsDouble"]


class KmsDouble:
    def __init__(self, root_certificate: bytes, key_policy: dict[str, bytes]) -> None:
        self.root_certificate = root_certificate
        self.key_policy = dict(key_policy)  # key id -> the PCR0 allowed to decrypt
        self._master = AESGCM.generate_key(256)
        self.refusals: list[str] = []
        self.released = 0
        self._server: ThreadingHTTPServer | None = None

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
            "CiphertextForRecipient": base64.b64encode(public.encrypt(plaintext, OAEP)).decode(),
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
            "CiphertextForRecipient": base64.b64encode(public.encrypt(key, OAEP)).decode(),
        }

    def _refuse(self, status: int, kind: str, message: str) -> tuple[int, dict[str, Any]]:
        self.refusals.append(f"{kind}: {message}")
        return status, {"__type": kind, "message": message}

    # ------------------------------------------------------------ server

    def start(self) -> str:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length", "0")), 1 << 20)
                target = self.headers.get("X-Amz-Target", "")
                try:
                    body = orjson.loads(self.rfile.read(length))
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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

"""Keys sealed to the enclave's measurement: AWS KMS ``Decrypt`` with the attestation document as
recipient (DESIGN.md section 6a; AWS KMS Developer Guide, "How AWS Nitro Enclaves uses AWS KMS").

The parent instance holds only ciphertext, a *key bundle* (JSON)::

    {"key_id": "...", "ciphertext_blob": "<base64 KMS ciphertext of a 32-byte data key>",
     "sealed_keys": "<base64 12-byte nonce || AES-256-GCM(data key, key lines)>"}

Keys come from the operator (sealed once with KMS ``GenerateDataKey`` and :func:`seal_bundle`)
or are generated inside (``--generate-keys N``: :func:`generate_sealed_keys` asks KMS for a data
key *with* a ``Recipient``, so even the first plaintext of it exists only in the enclave, and
writes the bundle for the parent to keep). At start the enclave makes an ephemeral RSA-2048 key
pair, asks its attestor (the NSM) for a document whose ``public_key`` is that key's
SubjectPublicKeyInfo, and sends KMS ``TrentService.Decrypt`` with ``Recipient =
{KeyEncryptionAlgorithm: RSAES_OAEP_SHA_256, AttestationDocument}``. KMS checks the document
(AWS root, signature, the key policy's ``kms:RecipientAttestation:PCR0`` condition) and
returns the data key encrypted to the document's public key (``CiphertextForRecipient``), never
in plaintext. Only this process holds the RSA
private key, so only this measured image ever sees the data key; it opens ``sealed_keys`` with it
and derives the sealing key of its audit anchor from it (:func:`seal_key_from`).

Transport (``enclave/kms_transport.py``): HTTPS with the KMS JSON protocol, TLS terminated inside
the enclave over the parent's ``vsock-proxy`` stream (SNI ``kms.<region>.amazonaws.com``, only
the CA bundle pinned in the image trusted), every request SigV4-signed (``enclave/sigv4.py``)
with the credentials the parent hands in (they grant nothing without a valid document). The
reply's ``CiphertextForRecipient`` is CMS EnvelopedData (``enclave/cms.py``: RSAES-OAEP-SHA-256
key transport to our ephemeral key, AES-256-CBC content). The KMS double
(``enclave/kms_double.py``) speaks the same: HTTPS under a test CA, SigV4 checked, real CMS.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import coincurve
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave.attestor import Attestor
from enclave.cms import open_envelope
from enclave.kms_transport import KmsEndpoint, TransportError

__all__ = [
    "KmsError",
    "generate_sealed_keys",
    "kms_decrypt",
    "kms_generate_data_key",
    "load_sealed_keys",
    "seal_bundle",
    "seal_key_from",
]


class KmsError(RuntimeError):
    """KMS did not release the key (or could not be reached)."""


def seal_key_from(secret: bytes) -> bytes:
    """The audit anchor's sealing key, derived from a secret only the enclave holds."""
    return hashlib.sha256(b"enclave-seal-v1\x00" + secret).digest()


def seal_bundle(key_id: str, ciphertext_blob: bytes, data_key: bytes, key_lines: str) -> bytes:
    """The key bundle for ``key_lines`` (operator side: KMS ``GenerateDataKey`` gave both the
    ``ciphertext_blob`` and the plaintext ``data_key``, which is dropped after this)."""
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(data_key).encrypt(nonce, key_lines.encode("ascii"), key_id.encode())
    return orjson.dumps(
        {
            "key_id": key_id,
            "ciphertext_blob": base64.b64encode(ciphertext_blob).decode(),
            "sealed_keys": base64.b64encode(sealed).decode(),
        }
    )


def _recipient_call(
    kms: KmsEndpoint, target: str, request: dict[str, Any], attestor: Attestor, now: float
) -> tuple[dict[str, Any], bytes]:
    """POST ``request`` plus our ``Recipient``; ``(reply, plaintext opened with our RSA key)``."""
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = recipient.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    document = attestor.document(os.urandom(32), b"kms-recipient", spki, now)
    body = {
        **request,
        "Recipient": {
            "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
            "AttestationDocument": base64.b64encode(document).decode(),
        },
    }
    try:
        status, data = kms.call(target, body)  # SigV4 dates the request by the wall clock
    except TransportError as exc:
        raise KmsError(str(exc)) from exc
    if status != 200:
        detail = data.decode("utf-8", "replace")[:300]
        raise KmsError(f"KMS refused {target} ({status}): {detail}")
    try:
        reply: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise KmsError(f"KMS reply to {target} is not JSON: {exc}") from exc
    if not isinstance(reply, dict) or "CiphertextForRecipient" not in reply:
        raise KmsError("KMS reply has no CiphertextForRecipient (plaintext is never accepted)")
    if reply.get("Plaintext"):
        raise KmsError("KMS reply carries a plaintext: it must be encrypted to the enclave only")
    try:
        wrapped = base64.b64decode(reply["CiphertextForRecipient"], validate=True)
        return reply, open_envelope(wrapped, recipient)
    except (ValueError, TypeError) as exc:  # CmsError is a ValueError
        raise KmsError(f"CiphertextForRecipient does not open with our key: {exc}") from exc


def kms_decrypt(
    kms: KmsEndpoint, key_id: str, ciphertext_blob: bytes, attestor: Attestor, now: float
) -> bytes:
    """The plaintext of ``ciphertext_blob``, released by KMS against our attestation document."""
    request = {
        "KeyId": key_id,
        "CiphertextBlob": base64.b64encode(ciphertext_blob).decode(),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }
    return _recipient_call(kms, "Decrypt", request, attestor, now)[1]


def kms_generate_data_key(
    kms: KmsEndpoint, key_id: str, attestor: Attestor, now: float
) -> tuple[bytes, bytes]:
    """``(data key, ciphertext blob)`` from KMS ``GenerateDataKey`` with our ``Recipient``: the
    plaintext comes back only encrypted to this enclave."""
    reply, data_key = _recipient_call(
        kms, "GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256"}, attestor, now
    )
    try:
        return data_key, base64.b64decode(reply["CiphertextBlob"])
    except (KeyError, TypeError, ValueError) as exc:
        raise KmsError("GenerateDataKey reply has no CiphertextBlob") from exc


def generate_sealed_keys(
    bundle_path: str, kms: KmsEndpoint, key_id: str, count: int, attestor: Attestor, now: float
) -> tuple[list[str], bytes]:
    """Keys generated inside the enclave, sealed into a new key bundle at ``bundle_path`` (the
    parent stores it; only an enclave with the key policy's PCR0 can open it again)."""
    if os.path.exists(bundle_path):
        raise KmsError(f"{bundle_path} exists: refusing to replace keys (load it instead)")
    lines = ["0x" + coincurve.PrivateKey().secret.hex() for _ in range(count)]
    data_key, blob = kms_generate_data_key(kms, key_id, attestor, now)
    tmp = bundle_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(seal_bundle(key_id, blob, data_key, "\n".join(lines) + "\n"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, bundle_path)
    return lines, data_key


def load_sealed_keys(
    bundle_path: str, kms: KmsEndpoint, attestor: Attestor, now: float
) -> tuple[list[str], bytes]:
    """``(key lines, data key)`` from a key bundle, via :func:`kms_decrypt`."""
    with open(bundle_path, "rb") as f:
        try:
            bundle = orjson.loads(f.read())
            key_id = str(bundle["key_id"])
            blob = base64.b64decode(bundle["ciphertext_blob"])
            sealed = base64.b64decode(bundle["sealed_keys"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise KmsError(f"{bundle_path}: not a key bundle ({exc})") from exc
    data_key = kms_decrypt(kms, key_id, blob, attestor, now)
    if len(data_key) != 32:
        raise KmsError("the data key must be 32 bytes (AES-256)")
    try:
        plain = AESGCM(data_key).decrypt(sealed[:12], sealed[12:], key_id.encode())
    except Exception as exc:  # cryptography's InvalidTag carries no message
        raise KmsError("sealed_keys do not open with the released data key") from exc
    lines = [ln.split("#", 1)[0].strip() for ln in plain.decode("ascii").splitlines()]
    return [ln for ln in lines if ln], data_key

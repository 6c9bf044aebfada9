"""``CiphertextForRecipient`` opened: CMS EnvelopedData (RFC 5652 §6) as AWS KMS returns it to an
enclave (RSAES-OAEP with SHA-256 and MGF1-SHA-256 key transport, RFC 8017 / RFC 4055, AES-256-CBC
content encryption, RFC 3565), and built, for the KMS double.

A strict DER reader of exactly that shape, no general ASN.1 library in the measured image:
definite lengths only, minimal length encodings, every field checked where it is read, nothing
trailing. One ``KeyTransRecipientInfo`` (v0 with issuerAndSerialNumber, v2 with
subjectKeyIdentifier; KMS addresses the document's bare public key). Another algorithm (OAEP
with SHA-1, the default when its parameters are left out; AES-128; a key agreement recipient) is
refused, not guessed. The parser is pinned against OpenSSL's ``cms -encrypt`` output as well as
the double's (``tests/enclave/test_kms_transport.py``).

Everything the parent could tamper with (it relays the reply) ends as :class:`CmsError`: a
changed content is refused by the padding check or, past it, by the sealed bundle's AES-GCM tag
(``enclave/kms.py``); a changed wrapped key does not open under OAEP.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["CmsError", "envelope", "open_envelope"]

OAEP_SHA256: Final = asym.OAEP(
    mgf=asym.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def _oid(dotted: str) -> bytes:
    """The DER body of an OBJECT IDENTIFIER."""
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([parts[0] * 40 + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


ENVELOPED_DATA: Final = _oid("1.2.840.113549.1.7.3")
DATA: Final = _oid("1.2.840.113549.1.7.1")
RSAES_OAEP: Final = _oid("1.2.840.113549.1.1.7")
MGF1: Final = _oid("1.2.840.113549.1.1.8")
SHA256: Final = _oid("2.16.840.1.101.3.4.2.1")
AES256_CBC: Final = _oid("2.16.840.1.101.3.4.1.42")

_SEQ, _SET, _INT, _OCTETS, _OID, _NULL = 0x30, 0x31, 0x02, 0x04, 0x06, 0x05
MAX_ENVELOPE: Final = 64 * 1024
"""Most bytes taken (KMS's envelope of a 32-byte key with a 2048-bit RSA key is about 400)."""


class CmsError(ValueError):
    """Not the EnvelopedData KMS sends us, or it does not open with our key."""


@dataclass(slots=True)
class _Reader:
    data: bytes
    pos: int = 0

    def tlv(self, tag: int | None = None) -> tuple[int, bytes]:
        """The next element's tag and content (``tag``: the one required here)."""
        data, pos = self.data, self.pos
        if pos + 2 > len(data):
            raise CmsError("truncated")
        got, first = data[pos], data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 3:
                raise CmsError("indefinite or oversized length (DER only)")
            if pos + count > len(data):
                raise CmsError("truncated")
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
            if length < 0x80 or length >> (8 * (count - 1)) == 0:
                raise CmsError("non-minimal length (DER only)")
        if pos + length > len(data):
            raise CmsError("truncated")
        if tag is not None and got != tag:
            raise CmsError(f"expected tag 0x{tag:02x}, found 0x{got:02x}")
        self.pos = pos + length
        return got, data[pos : pos + length]

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def done(self) -> None:
        if self.pos != len(self.data):
            raise CmsError("trailing bytes")


def _inner(content: bytes) -> _Reader:
    return _Reader(content)


def _integer(reader: _Reader) -> int:
    _, body = reader.tlv(_INT)
    if not body or len(body) > 4:
        raise CmsError("bad INTEGER")
    return int.from_bytes(body, "big", signed=True)


def _hash_is_sha256(content: bytes) -> None:
    """An AlgorithmIdentifier that must be SHA-256 (parameters NULL or absent)."""
    r = _inner(content)
    _, oid = r.tlv(_OID)
    if oid != SHA256:
        raise CmsError("OAEP hash is not SHA-256")
    if r.peek() is not None:
        r.tlv(_NULL)
    r.done()


def _check_oaep(params: bytes) -> None:
    """RSAES-OAEP-params (RFC 8017 A.2.1): hash and MGF1 hash SHA-256, the default empty label.
    Left-out fields are SHA-1 by default: refused."""
    r = _inner(params)
    if r.peek() != 0xA0:
        raise CmsError("OAEP hash left out: the default is SHA-1, not SHA-256")
    _, hash_alg = r.tlv(0xA0)
    _, seq = _inner(hash_alg).tlv(_SEQ)
    _hash_is_sha256(seq)
    if r.peek() != 0xA1:
        raise CmsError("OAEP mask generation left out: the default is MGF1-SHA-1, not SHA-256")
    _, mgf_alg = r.tlv(0xA1)
    mgf = _inner(mgf_alg)
    _, mgf_seq = mgf.tlv(_SEQ)
    mgf.done()
    m = _inner(mgf_seq)
    _, mgf_oid = m.tlv(_OID)
    if mgf_oid != MGF1:
        raise CmsError("OAEP mask generation is not MGF1")
    _, mgf_hash = m.tlv(_SEQ)
    m.done()
    _hash_is_sha256(mgf_hash)
    if r.peek() is not None:
        raise CmsError("OAEP with a label (pSourceAlgorithm) is not what KMS sends")
    r.done()


def _recipient(content: bytes) -> bytes:
    """The wrapped content key of a ``KeyTransRecipientInfo`` with RSAES-OAEP-SHA-256."""
    r = _inner(content)
    version = _integer(r)
    tag, _ = r.tlv()
    if (version, tag) not in ((0, _SEQ), (2, 0x80)):
        raise CmsError("not a KeyTransRecipientInfo (v0 issuerAndSerial / v2 keyId)")
    _, algorithm = r.tlv(_SEQ)
    a = _inner(algorithm)
    _, oid = a.tlv(_OID)
    if oid != RSAES_OAEP:
        raise CmsError("key transport is not RSAES-OAEP")
    _, params = a.tlv(_SEQ)
    a.done()
    _check_oaep(params)
    _, wrapped = r.tlv(_OCTETS)
    r.done()
    return wrapped


def _encrypted_content(content: bytes) -> tuple[bytes, bytes]:
    """``(iv, ciphertext)`` of an AES-256-CBC ``EncryptedContentInfo`` of id-data."""
    r = _inner(content)
    _, kind = r.tlv(_OID)
    if kind != DATA:
        raise CmsError("encrypted content is not id-data")
    _, algorithm = r.tlv(_SEQ)
    a = _inner(algorithm)
    _, oid = a.tlv(_OID)
    if oid != AES256_CBC:
        raise CmsError("content encryption is not AES-256-CBC")
    _, iv = a.tlv(_OCTETS)
    a.done()
    if len(iv) != 16:
        raise CmsError("AES-CBC IV is not 16 bytes")
    tag, body = r.tlv()
    if tag == 0x80:
        ciphertext = body
    elif tag == 0xA0:  # constructed: OCTET STRING chunks (still definite lengths)
        chunks = _inner(body)
        parts = []
        while chunks.peek() is not None:
            parts.append(chunks.tlv(_OCTETS)[1])
        ciphertext = b"".join(parts)
    else:
        raise CmsError("no encryptedContent")
    r.done()
    if not ciphertext or len(ciphertext) % 16:
        raise CmsError("encrypted content is not whole AES blocks")
    return iv, ciphertext


def open_envelope(der: bytes, private_key: rsa.RSAPrivateKey) -> bytes:
    """The content of KMS's ``CiphertextForRecipient`` (see the module docstring)."""
    if len(der) > MAX_ENVELOPE:
        raise CmsError(f"{len(der)} bytes: more than an envelope of a data key")
    top = _Reader(der)
    _, info = top.tlv(_SEQ)
    top.done()
    ci = _inner(info)
    _, kind = ci.tlv(_OID)
    if kind != ENVELOPED_DATA:
        raise CmsError("not EnvelopedData")
    _, explicit = ci.tlv(0xA0)
    ci.done()
    outer = _inner(explicit)
    _, enveloped = outer.tlv(_SEQ)
    outer.done()
    ed = _inner(enveloped)
    version = _integer(ed)
    if version not in (0, 2):
        raise CmsError(f"EnvelopedData version {version}")
    if ed.peek() == 0xA0:
        ed.tlv(0xA0)  # originatorInfo: certificates we do not need
    _, recipients = ed.tlv(_SET)
    rs = _inner(recipients)
    _, ktri = rs.tlv(_SEQ)
    if rs.peek() is not None:
        raise CmsError("more than one recipient (KMS addresses only the enclave's key)")
    wrapped = _recipient(ktri)
    _, eci = ed.tlv(_SEQ)
    if ed.peek() == 0xA1:
        ed.tlv(0xA1)  # unprotectedAttrs
    ed.done()
    iv, ciphertext = _encrypted_content(eci)
    try:
        key = private_key.decrypt(wrapped, OAEP_SHA256)
    except ValueError as exc:
        raise CmsError("the content key does not open with our RSA key") from exc
    if len(key) != 32:
        raise CmsError("the content key is not an AES-256 key")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise CmsError("the content's padding is wrong (tampered or not ours)") from exc


# ---------------------------------------------------------------- building (the KMS double)


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + body


def _algorithm_sha256() -> bytes:
    return _der(_SEQ, _der(_OID, SHA256) + _der(_NULL, b""))


def envelope(content: bytes, public_key: rsa.RSAPublicKey) -> bytes:
    """EnvelopedData of ``content`` to ``public_key`` in the shape :func:`open_envelope` takes
    (v2, ``subjectKeyIdentifier`` = SHA-1 of the key's DER, RFC 5280 §4.2.1.2 method 1)."""
    key, iv = os.urandom(32), os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    key_id = hashlib.sha1(spki).digest()  # an identifier, not a security use
    oaep_params = _der(
        _SEQ,
        _der(0xA0, _algorithm_sha256())
        + _der(0xA1, _der(_SEQ, _der(_OID, MGF1) + _algorithm_sha256())),
    )
    ktri = _der(
        _SEQ,
        _der(_INT, b"\x02")
        + _der(0x80, key_id)
        + _der(_SEQ, _der(_OID, RSAES_OAEP) + oaep_params)
        + _der(_OCTETS, public_key.encrypt(key, OAEP_SHA256)),
    )
    eci = _der(
        _SEQ,
        _der(_OID, DATA)
        + _der(_SEQ, _der(_OID, AES256_CBC) + _der(_OCTETS, iv))
        + _der(0x80, ciphertext),
    )
    enveloped = _der(_SEQ, _der(_INT, b"\x02") + _der(_SET, ktri) + eci)
    return _der(_SEQ, _der(_OID, ENVELOPED_DATA) + _der(0xA0, enveloped))

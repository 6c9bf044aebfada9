"""The reply channel bound to the attested key (DESIGN.md section 6a).

An attestation document proves *a* genuine enclave answered the ``attestation`` request, not that
the process answering ``sign_transaction`` afterwards is that enclave: a relay on the parent can
pass ``hello`` and ``attestation`` through and sign the rest itself. So the client sends an
ephemeral secp256k1 public key with its ``attestation`` request (``client_key``); both ends derive

    shared  = ECDH(attested log key, client key)      (libsecp256k1: SHA-256 of the shared point)
    mac_key = SHA-256("signer-channel-v1" 0x00 || shared || attestation nonce)

and from the attestation reply on, every reply frame on that connection carries
``"mac": HMAC-SHA256(mac_key, body without the mac)``, hex. Only the holder of the attested private
key (inside the enclave) or the client's ephemeral key can compute it; a relay that answers by
itself cannot. The MAC is spliced onto the orjson body as its last member (:func:`seal`), so the
receiver checks it on the exact bytes received (:func:`open_sealed`) before parsing, with no
re-serialisation: measured ~1 us a reply on each side, against ~25 us for a signature by the
attested key (why replies are MACed, not signed).

Replies are matched to requests by ``id``, which the client never reuses, so a replayed genuine
reply cannot answer a later request.
"""

from __future__ import annotations

import hashlib
import hmac

import coincurve

from signer_client.errors import ReplyVerificationError

__all__ = ["MAC_SUFFIX_LEN", "derive_mac_key", "open_sealed", "seal"]

_PREFIX = b',"mac":"'
#: Bytes the sealed body has beyond the plain one: ``,"mac":"<64 hex>"`` (the closing brace stays).
MAC_SUFFIX_LEN = len(_PREFIX) + 64 + 1
_sha256 = hashlib.sha256
_hmac_digest = hmac.digest


def derive_mac_key(private_key: bytes, peer_public_key: bytes, nonce: bytes) -> bytes:
    """``mac_key`` from our 32-byte secret, the peer's public key (33 or 65 bytes), the nonce."""
    try:
        shared = coincurve.PrivateKey(private_key).ecdh(peer_public_key)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a secp256k1 public key: {exc}") from exc
    return _sha256(b"signer-channel-v1\x00" + shared + nonce).digest()


def seal(key: bytes, body: bytes) -> bytes:
    """``body`` (a JSON object's bytes) with its MAC appended as the last member."""
    mac = _hmac_digest(key, body, "sha256").hex().encode()
    return body[:-1] + _PREFIX + mac + b'"}'


def open_sealed(key: bytes, body: bytes) -> bytes:
    """Check a sealed body's MAC; return the plain body, or raise ``ReplyVerificationError``
    (check ``channel``): the reply did not come from the attested enclave."""
    cut = len(body) - MAC_SUFFIX_LEN - 1
    if cut < 1 or body[cut : cut + len(_PREFIX)] != _PREFIX or body[-2:] != b'"}':
        raise ReplyVerificationError("channel", "reply carries no channel MAC")
    plain = body[:cut] + b"}"
    mac = body[cut + len(_PREFIX) : -2]
    if not hmac.compare_digest(_hmac_digest(key, plain, "sha256").hex().encode(), mac):
        raise ReplyVerificationError("channel", "reply MAC is not the attested enclave's")
    return plain

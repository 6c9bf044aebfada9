"""secp256k1 sign and recover over a 32-byte hash, straight through coincurve's cffi binding.

coincurve's ``PublicKey.from_signature_and_message`` + ``format()`` wrap libsecp256k1 with argument
checks, a hasher indirection and a Python object per result: 1.5 us of its 43 us per recover (and
0.4 us of 26 us per sign). Here we call ``secp256k1_ecdsa_sign_recoverable`` (RFC 6979 nonces,
low-s normalised as EIP-2 requires) and ``secp256k1_ecdsa_recover`` directly, with coincurve's
own context. If that private module ever moves, :data:`FAST` is ``False`` and coincurve's public
API is used instead; ``tests/signer_client/test_secp.py`` pins both paths to the same bytes.

cffi releases the GIL around C calls, so every call allocates its own output buffers: nothing here
is shared between threads.
"""

from __future__ import annotations

from typing import Any

import coincurve

__all__ = ["FAST", "recover_uncompressed", "sign_recoverable"]

try:  # pragma: no branch - depends on the installed coincurve
    from coincurve._libsecp256k1 import ffi as _ffi  # type: ignore[import-not-found,unused-ignore]
    from coincurve._libsecp256k1 import lib as _lib  # type: ignore[import-not-found,unused-ignore]
    from coincurve.context import GLOBAL_CONTEXT as _GLOBAL_CONTEXT

    _CTX: Any = _GLOBAL_CONTEXT.ctx
    _UNCOMPRESSED: int = _lib.SECP256K1_EC_UNCOMPRESSED
    FAST = True
except (ImportError, AttributeError):  # pragma: no cover - older / repackaged coincurve
    FAST = False


def _sign_fast(secret: bytes, msg_hash: bytes) -> bytes:
    if len(msg_hash) != 32 or len(secret) != 32:  # cffi would read past a short buffer
        raise ValueError("secp256k1 signs a 32-byte hash with a 32-byte key")
    sig = _ffi.new("secp256k1_ecdsa_recoverable_signature *")
    if not _lib.secp256k1_ecdsa_sign_recoverable(_CTX, sig, msg_hash, secret, _ffi.NULL, _ffi.NULL):
        raise ValueError("secp256k1 signing failed")
    out = _ffi.new("unsigned char[65]")
    recid = _ffi.new("int *")
    _lib.secp256k1_ecdsa_recoverable_signature_serialize_compact(_CTX, out, recid, sig)
    out[64] = recid[0]
    return _ffi.buffer(out, 65)[:]  # type: ignore[no-any-return,unused-ignore]


def _recover_fast(sig65: bytes, msg_hash: bytes) -> bytes | None:
    rsig = _ffi.new("secp256k1_ecdsa_recoverable_signature *")
    if not _lib.secp256k1_ecdsa_recoverable_signature_parse_compact(
        _CTX, rsig, sig65[:64], sig65[64]
    ):
        return None  # r or s not below the group order
    pub = _ffi.new("secp256k1_pubkey *")
    if not _lib.secp256k1_ecdsa_recover(_CTX, pub, rsig, msg_hash):
        return None
    out = _ffi.new("unsigned char[65]")
    size = _ffi.new("size_t *", 65)
    _lib.secp256k1_ec_pubkey_serialize(_CTX, out, size, pub, _UNCOMPRESSED)
    return _ffi.buffer(out, 65)[:]  # type: ignore[no-any-return,unused-ignore]


def _sign_slow(secret: bytes, msg_hash: bytes) -> bytes:
    return coincurve.PrivateKey(secret).sign_recoverable(msg_hash, hasher=None)


def _recover_slow(sig65: bytes, msg_hash: bytes) -> bytes | None:
    try:
        pub = coincurve.PublicKey.from_signature_and_message(sig65, msg_hash, hasher=None)
    except Exception:  # coincurve raises a bare Exception on unrecoverable input
        return None
    return pub.format(compressed=False)


#: ``sign_recoverable(secret, msg_hash) -> r || s || recid`` (65 bytes) over a 32-byte hash;
#: ``secret`` must be a valid private key (``LocalKey`` checks that once, at load).
sign_recoverable = _sign_fast if FAST else _sign_slow

_recover = _recover_fast if FAST else _recover_slow


def recover_uncompressed(sig65: bytes, msg_hash: bytes) -> bytes | None:
    """The 65-byte uncompressed public key that made ``sig65`` over ``msg_hash``, or ``None``.

    ``sig65`` is ``r || s || recid``; an out-of-range ``r``/``s``, a recid above 3 or a signature
    that recovers no point gives ``None``. High-s is *not* refused here: callers check EIP-2.
    """
    if len(sig65) != 65 or len(msg_hash) != 32 or sig65[64] > 3:
        return None  # (libsecp256k1 would abort the process on recid > 3, not return an error)
    return _recover(sig65, msg_hash)

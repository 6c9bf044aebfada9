"""The real :class:`~enclave.attestor.Attestor`: the Nitro Secure Module behind ``/dev/nsm``.

The NSM driver (Linux ``drivers/misc/nsm.c``, uapi ``linux/nsm.h``; the Rust reference is
``aws-nitro-enclaves-nsm-api``, ``src/driver/mod.rs``) takes one ioctl::

    #define NSM_MAGIC 0x0A
    struct nsm_iovec { __u64 addr; __u64 len; };
    struct nsm_raw   { struct nsm_iovec request; struct nsm_iovec response; };
    #define NSM_IOCTL_RAW _IOWR(NSM_MAGIC, 0x0, struct nsm_raw)      /* = 0xC0200A00 */

``request`` points at a CBOR-encoded request (at most 0x1000 bytes), ``response`` at a buffer
(0x3000 bytes) whose ``len`` the driver rewrites with the length of the CBOR response. Requests and
responses are serde's externally tagged enums in CBOR::

    {"Attestation": {"user_data": bytes|null, "nonce": bytes|null, "public_key": bytes|null}}
        -> {"Attestation": {"document": bytes}}       (COSE_Sign1, the NSM's per-document leaf)
    {"DescribePCR": {"index": 0}} -> {"DescribePCR": {"lock": bool, "data": bytes}}
    errors -> {"Error": "InvalidArgument" | "InvalidIndex" | ...}

``user_data`` and ``nonce`` are capped at 512 bytes, ``public_key`` at 1024 by the NSM. The
``ioctl`` and the device opener are parameters so the message layout is unit-tested against a
fake device (``tests/enclave/test_nsm.py``).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
from collections.abc import Callable
from typing import Any

import cbor2

__all__ = ["NSM_DEVICE", "NSM_IOCTL_RAW", "NsmAttestor", "NsmError"]

NSM_DEVICE = "/dev/nsm"
NSM_IOCTL_RAW = (3 << 30) | (32 << 16) | (0x0A << 8) | 0  # _IOWR(0x0A, 0, 32 bytes)
NSM_REQUEST_MAX = 0x1000
NSM_RESPONSE_MAX = 0x3000
_IOVECS = struct.Struct("=QQQQ")

IoctlFn = Callable[[int, int, bytearray, bool], Any]


class NsmError(RuntimeError):
    """The NSM refused a request or is not there (not inside a Nitro enclave)."""


class NsmAttestor:
    """Attestation documents and PCRs from the Nitro Secure Module."""

    def __init__(
        self,
        device: str = NSM_DEVICE,
        *,
        opener: Callable[[str], int] | None = None,
        ioctl: IoctlFn | None = None,
    ) -> None:
        try:
            self._fd = (opener or (lambda path: os.open(path, os.O_RDWR)))(device)
        except OSError as exc:
            raise NsmError(f"{device}: {exc.strerror} (is this a Nitro enclave?)") from exc
        self._ioctl: IoctlFn = ioctl or fcntl.ioctl
        self._pcr0: bytes | None = None

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """One CBOR request through ``NSM_IOCTL_RAW``; the decoded response (errors raised)."""
        body = cbor2.dumps(message)
        if len(body) > NSM_REQUEST_MAX:
            raise NsmError(f"NSM request of {len(body)} bytes exceeds {NSM_REQUEST_MAX}")
        request = ctypes.create_string_buffer(body, len(body))
        response = ctypes.create_string_buffer(NSM_RESPONSE_MAX)
        raw = bytearray(
            _IOVECS.pack(
                ctypes.addressof(request), len(body), ctypes.addressof(response), NSM_RESPONSE_MAX
            )
        )
        try:
            self._ioctl(self._fd, NSM_IOCTL_RAW, raw, True)
        except OSError as exc:
            raise NsmError(f"NSM ioctl failed: {exc.strerror}") from exc
        length = _IOVECS.unpack(bytes(raw))[3]
        if not 0 < length <= NSM_RESPONSE_MAX:
            raise NsmError(f"NSM response length {length} out of range")
        try:
            reply = cbor2.loads(response.raw[:length])
        except (ValueError, cbor2.CBORDecodeError) as exc:
            raise NsmError(f"NSM response is not CBOR: {exc}") from exc
        if not isinstance(reply, dict):
            raise NsmError("NSM response is not a map")
        if "Error" in reply:
            raise NsmError(f"NSM error: {reply['Error']}")
        return reply

    def document(self, nonce: bytes, user_data: bytes, public_key: bytes, now: float) -> bytes:
        if len(nonce) > 512 or len(user_data) > 512 or len(public_key) > 1024:
            raise NsmError("nonce / user_data over 512 bytes or public_key over 1024")
        reply = self.request(
            {"Attestation": {"user_data": user_data, "nonce": nonce, "public_key": public_key}}
        )
        try:
            document = reply["Attestation"]["document"]
        except (KeyError, TypeError) as exc:
            raise NsmError(f"unexpected NSM response to Attestation: {list(reply)}") from exc
        if not isinstance(document, bytes):
            raise NsmError("NSM attestation document is not bytes")
        return document

    def pcr0(self) -> bytes:
        if self._pcr0 is None:
            reply = self.request({"DescribePCR": {"index": 0}})
            try:
                data = reply["DescribePCR"]["data"]
            except (KeyError, TypeError) as exc:
                raise NsmError("unexpected NSM response to DescribePCR") from exc
            # Never bytes(data) on what the device sent: bytes(10**9) allocates a gigabyte.
            if not isinstance(data, bytes) or len(data) != 48:
                raise NsmError("NSM PCR0 is not 48 bytes (SHA-384)")
            self._pcr0 = data
        return self._pcr0

    def close(self) -> None:
        os.close(self._fd)

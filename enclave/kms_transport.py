"""The enclave's HTTPS to AWS KMS: TLS terminated *inside* the enclave over the vsock-proxy's
stream, requests signed with SigV4 (DESIGN.md §6a; enclave/kms.py says what travels).

An enclave has no network: the parent runs ``vsock-proxy 8000 kms.<region>.amazonaws.com 443``,
which relays bytes between a vsock port and KMS. The parent therefore sees (and could change)
every byte, so the TLS session is the enclave's own: Python's ``ssl`` wraps the connected vsock
socket, with SNI and hostname check ``kms.<region>.amazonaws.com`` and only the CA bundle pinned
in the image (``--kms-ca``, measured into PCR0 with the code) as trust anchors; the system store
is never consulted. A parent answering with its own certificate fails the handshake.

``address``: ``vsock://CID:PORT`` (production: the parent is CID 3) or ``tcp://127.0.0.1:PORT``
(tests, the KMS double behind a test CA). Connect first, then wrap (uvloop-free, blocking:
this runs once at start, before the server accepts anything).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass

import orjson

from enclave.sigv4 import Credentials, sign_headers

__all__ = ["KmsEndpoint", "TransportError", "load_credentials", "parse_address"]

CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_REPLY = 1 << 20


class TransportError(RuntimeError):
    """KMS could not be reached over a trusted channel, or answered garbage."""


def parse_address(address: str) -> tuple[int, tuple[object, ...]]:
    """``(socket family, address tuple)`` of ``vsock://CID:PORT`` or ``tcp://HOST:PORT``."""
    scheme, sep, rest = address.partition("://")
    host, colon, port_text = rest.rpartition(":")
    if not sep or not colon or not port_text.isdigit():
        raise ValueError(f"KMS address {address!r}: expected vsock://CID:PORT or tcp://HOST:PORT")
    port = int(port_text)
    if scheme == "vsock":
        if not host.isdigit():
            raise ValueError(f"KMS address {address!r}: the CID is a number (the parent: 3)")
        return socket.AF_VSOCK, (int(host), port)
    if scheme == "tcp":
        return socket.AF_INET, (host, port)
    raise ValueError(f"KMS address {address!r}: scheme must be vsock or tcp")


def load_credentials(path: str) -> Credentials:
    """The credentials the parent hands in: a JSON file in the shape IMDS serves a role's
    (``AccessKeyId``, ``SecretAccessKey``, ``Token``)."""
    try:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise TransportError(f"{path}: not AWS credentials ({type(exc).__name__})") from exc
    # The parent writes this file: every field is checked to be what IMDS serves (non-empty
    # strings; Token a string when present), not coerced with str() nor left to fail as an
    # AttributeError in the first request's signing.
    if not isinstance(data, dict):
        raise TransportError(f"{path}: not AWS credentials (not a JSON object)")
    key, secret, token = data.get("AccessKeyId"), data.get("SecretAccessKey"), data.get("Token")
    if not isinstance(key, str) or not key:
        raise TransportError(f"{path}: not AWS credentials (AccessKeyId is not a non-empty string)")
    if not isinstance(secret, str) or not secret:
        raise TransportError(
            f"{path}: not AWS credentials (SecretAccessKey is not a non-empty string)"
        )
    if token is not None and not isinstance(token, str):
        raise TransportError(f"{path}: not AWS credentials (Token is not a string)")
    return Credentials(key, secret, token or None)


class _Connection(http.client.HTTPSConnection):
    """``HTTPSConnection`` over a socket of our choosing (vsock), TLS by our pinned context."""

    def __init__(self, family: int, address: tuple[object, ...], host: str,
                 context: ssl.SSLContext, timeout: float) -> None:  # fmt: skip
        super().__init__(host, 443, timeout=timeout, context=context)
        self._family, self._address, self._context = family, address, context

    def connect(self) -> None:
        raw = socket.socket(self._family, socket.SOCK_STREAM)
        raw.settimeout(self.timeout)
        try:
            raw.connect(self._address)
            self.sock = self._context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


@dataclass(frozen=True, slots=True)
class KmsEndpoint:
    """Where and how the enclave reaches KMS: ``address`` (the vsock-proxy), ``region`` (the SNI,
    the certificate's name and the SigV4 scope), ``ca_file`` (the pinned bundle), and the
    parent's ``credentials``."""

    address: str
    region: str
    ca_file: str
    credentials: Credentials
    timeout: float = 10.0

    @property
    def host(self) -> str:
        return f"kms.{self.region}.amazonaws.com"

    def context(self) -> ssl.SSLContext:
        """TLS 1.2+, hostname checked, trust only the pinned bundle."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"pinned KMS CA bundle {self.ca_file}: {exc}") from exc
        return context

    def call(
        self, target: str, request: dict[str, object], now: float | None = None
    ) -> tuple[int, bytes]:
        """POST ``TrentService.<target>``: ``(HTTP status, body)``; :class:`TransportError` when
        no trusted channel could be made."""
        body = orjson.dumps(request)
        stamp = time.gmtime(time.time() if now is None else now)
        headers = sign_headers(
            self.credentials,
            region=self.region,
            service="kms",
            method="POST",
            host=self.host,
            path="/",
            headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": f"TrentService.{target}"},
            body=body,
            amz_date=time.strftime("%Y%m%dT%H%M%SZ", stamp),
        )
        try:
            family, address = parse_address(self.address)
        except ValueError as exc:
            raise TransportError(str(exc)) from exc
        connection = _Connection(family, address, self.host, self.context(), self.timeout)
        try:
            connection.request("POST", "/", body=body, headers=headers)
            response = connection.getresponse()
            data = response.read(MAX_REPLY + 1)
            if len(data) > MAX_REPLY:
                raise TransportError("KMS reply larger than 1 MiB")
            return response.status, data
        except ssl.SSLError as exc:
            raise TransportError(f"TLS to {self.host} via {self.address} refused: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"KMS at {self.address} unreachable: {exc}") from exc
        finally:
            connection.close()

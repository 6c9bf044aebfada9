"""AWS Signature Version 4 for the enclave's KMS requests (pure; no SDK in the measured image).

Implements the SigV4 algorithm of the AWS General Reference ("Create a signed AWS API request"),
as botocore's ``SigV4Auth`` does for a JSON-protocol POST to ``/``: ``X-Amz-Date`` (and
``X-Amz-Security-Token`` for temporary credentials) are added and signed, every header but the
ones botocore leaves out (``user-agent``, ``connection``, ``expect``...) is signed, values are
trimmed and inner whitespace folded, the payload is hashed with SHA-256. Pinned byte for byte
against botocore in ``tests/enclave/test_kms_transport.py``.

The credentials come from the parent (its instance role's, from IMDS); they are no secret worth
keeping from it: KMS releases nothing to them without a valid attestation document whose PCR0
the key policy names. The double (``enclave/kms_double.py``) verifies signatures with
:func:`signature` too.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["UNSIGNED_HEADERS", "Credentials", "canonical_request", "sign_headers", "signature"]

UNSIGNED_HEADERS = frozenset(
    {
        "baggage", "connection", "expect", "keep-alive", "proxy-authenticate",
        "proxy-authorization", "te", "traceparent", "tracestate", "trailer",
        "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
    }
)  # fmt: skip
"""Headers SigV4 leaves unsigned (botocore's ``SIGNED_HEADERS_BLACKLIST``): hop-by-hop ones a
proxy may rewrite."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key, its secret and (temporary credentials) the session token."""

    access_key: str
    secret_key: str
    token: str | None = None

    def __repr__(self) -> str:  # never the secret in a log line or a traceback
        return f"Credentials(access_key={self.access_key!r}, secret_key=..., token=...)"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _signed(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers to sign, by lower-case name, values trimmed and inner whitespace folded."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lname = name.lower()
        if lname not in UNSIGNED_HEADERS:
            folded = " ".join(value.split())
            out[lname] = f"{out[lname]},{folded}" if lname in out else folded
    return out


def canonical_request(
    method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
) -> tuple[str, str]:
    """``(canonical request, signed header list)``; ``headers`` must hold ``host``."""
    signed = _signed(headers)
    names = sorted(signed)
    lines = "".join(f"{n}:{signed[n]}\n" for n in names)
    joined = ";".join(names)
    payload = hashlib.sha256(body).hexdigest()
    return f"{method}\n{path}\n{query}\n{lines}\n{joined}\n{payload}", joined


def signature(
    secret_key: str,
    amz_date: str,
    region: str,
    service: str,
    canonical: str,
) -> str:
    """The hex signature of ``canonical`` at ``amz_date`` (``YYYYMMDDTHHMMSSZ``)."""
    day = amz_date[:8]
    scope = f"{day}/{region}/{service}/aws4_request"
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{digest}"
    key = _hmac(("AWS4" + secret_key).encode("utf-8"), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def sign_headers(
    credentials: Credentials,
    *,
    region: str,
    service: str,
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    amz_date: str,
) -> dict[str, str]:
    """``headers`` plus ``Host``, ``X-Amz-Date``, ``X-Amz-Security-Token`` (when the credentials
    carry one) and the ``Authorization`` that signs them."""
    out = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "host")}
    out["Host"] = host
    out["X-Amz-Date"] = amz_date
    if credentials.token:
        out["X-Amz-Security-Token"] = credentials.token
    canonical, joined = canonical_request(method, path, "", out, body)
    sig = signature(credentials.secret_key, amz_date, region, service, canonical)
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={joined}, Signature={sig}"
    )
    return out

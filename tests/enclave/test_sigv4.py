"""SigV4 (enclave/sigv4.py) byte for byte against botocore's ``SigV4Auth`` (dev extra), for KMS
JSON requests with and without a session token, and header values botocore folds."""

from __future__ import annotations

import datetime
from unittest import mock

import botocore.auth as botocore_auth  # the dev extra: pip install -e '.[dev]'
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from enclave.sigv4 import Credentials, sign_headers

WHEN = datetime.datetime(2026, 12, 2, 5, 53, 27)
BODY = b'{"KeyId":"alias/signer","CiphertextBlob":"AQID","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}'


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//////////wEaDCzT+token=="])
@pytest.mark.parametrize("region", ["us-east-1", "eu-central-2"])
@pytest.mark.parametrize(
    "extra",
    [{}, {"User-Agent": "enclave/1", "X-Custom": "  a   b  "}],
    ids=["plain", "unsigned-and-folded"],
)
def test_our_sigv4_headers_are_botocores_byte_for_byte(
    token: str | None, region: str, extra: dict[str, str]
) -> None:
    host = f"kms.{region}.amazonaws.com"
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "TrentService.Decrypt",
        **extra,
    }
    creds = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    request = AWSRequest(method="POST", url=f"https://{host}/", data=BODY, headers=dict(headers))
    signer = botocore_auth.SigV4Auth(BotoCredentials(*creds, token), "kms", region)
    with mock.patch.object(botocore_auth, "get_current_datetime", return_value=WHEN):
        signer.add_auth(request)
    ours = sign_headers(
        Credentials(*creds, token),
        region=region,
        service="kms",
        method="POST",
        host=host,
        path="/",
        headers=headers,
        body=BODY,
        amz_date=WHEN.strftime("%Y%m%dT%H%M%SZ"),
    )
    theirs = dict(request.headers.items())
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours["X-Amz-Date"] == theirs["X-Amz-Date"]
    assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token")


def test_the_secret_never_shows_in_a_repr() -> None:
    creds = Credentials("AKID", "the-secret", "the-token")
    assert "the-secret" not in repr(creds) and "the-token" not in repr(creds)

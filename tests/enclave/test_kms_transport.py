"""The real KMS transport (issue 18): TLS inside the enclave with a pinned CA and SNI, SigV4,
``CiphertextForRecipient`` as CMS EnvelopedData, against the KMS double over real HTTPS on
127.0.0.1, written as the attacker: a tampered CMS, a wrong-PCR0 document, a bad SigV4
signature, a TLS certificate not from the pinned CA. The CMS reader is also pinned against
OpenSSL's ``cms -encrypt`` (an implementation that is not ours), both ways."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

import enclave.__main__ as app
from enclave.cms import CmsError, envelope, open_envelope
from enclave.kms import KmsError, load_sealed_keys, seal_bundle
from enclave.kms_double import TEST_CREDENTIALS, KmsDouble, make_tls_files
from enclave.kms_transport import KmsEndpoint, TransportError, load_credentials
from enclave.nsm import NsmAttestor
from enclave.sigv4 import Credentials
from tests.enclave.running import ANVIL_ADDRESS, ANVIL_KEY
from tests.enclave.test_nsm_kms import GENUINE, PATCHED, FakeNsmDevice, nsm

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def aws_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from enclave.attestor import create_dev_pki

    directory = tmp_path_factory.mktemp("aws-root")
    create_dev_pki(directory, "fake aws nitro root")
    return directory


@pytest.fixture
def kms(aws_root: Path) -> Iterator[KmsDouble]:
    double = KmsDouble((aws_root / "root.pem").read_bytes(), {"signer-key": GENUINE})
    double.start()
    yield double
    double.stop()


def bundle(tmp_path: Path, double: KmsDouble) -> Path:
    data_key, blob = double.generate_data_key("signer-key")
    path = tmp_path / "keys.kms.json"
    path.write_bytes(seal_bundle("signer-key", blob, data_key, f"{ANVIL_KEY}\n"))
    return path


# ---------------------------------------------------------------- CMS EnvelopedData


def _openssl_envelope(tmp_path: Path, content: bytes, keyid: bool) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enclave recipient")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(RSA_KEY.public_key()).serial_number(7).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(RSA_KEY.public_key()), False)
        .sign(RSA_KEY, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "r.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "m.bin").write_bytes(content)
    subprocess.run(
        ["openssl", "cms", "-encrypt", "-binary", "-aes256", "-in", str(tmp_path / "m.bin"),
         "-recip", str(tmp_path / "r.pem"), "-keyopt", "rsa_padding_mode:oaep",
         "-keyopt", "rsa_oaep_md:sha256", "-keyopt", "rsa_mgf1_md:sha256", "-outform", "DER",
         "-out", str(tmp_path / "e.der"), *(["-keyid"] if keyid else [])],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return (tmp_path / "e.der").read_bytes()


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")


@needs_openssl
@pytest.mark.parametrize("keyid", [False, True], ids=["issuer-serial", "subject-key-id"])
def test_openssls_oaep_sha256_aes256_envelope_opens(tmp_path: Path, keyid: bool) -> None:
    content = bytes(range(32))
    assert open_envelope(_openssl_envelope(tmp_path, content, keyid), RSA_KEY) == content


@needs_openssl
def test_openssl_opens_the_doubles_envelope(tmp_path: Path) -> None:
    """The double's envelope is real CMS: OpenSSL decrypts it with the recipient's key."""
    (tmp_path / "e.der").write_bytes(envelope(b"\x22" * 32, RSA_KEY.public_key()))
    (tmp_path / "k.pem").write_bytes(
        RSA_KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out = subprocess.run(
        ["openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in",
         str(tmp_path / "e.der"), "-inkey", str(tmp_path / "k.pem")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    assert out.stdout == b"\x22" * 32


@needs_openssl
def test_oaep_with_sha1_the_default_is_refused_not_guessed(tmp_path: Path) -> None:
    (tmp_path / "m.bin").write_bytes(b"k" * 32)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "r")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(RSA_KEY.public_key()).serial_number(8).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1)).sign(RSA_KEY, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "r.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    subprocess.run(
        ["openssl", "cms", "-encrypt", "-binary", "-aes256", "-in", str(tmp_path / "m.bin"),
         "-recip", str(tmp_path / "r.pem"), "-keyopt", "rsa_padding_mode:oaep",
         "-outform", "DER", "-out", str(tmp_path / "e.der")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    with pytest.raises(CmsError, match="SHA-256"):
        open_envelope((tmp_path / "e.der").read_bytes(), RSA_KEY)


def test_every_flipped_byte_of_an_envelope_is_refused_or_never_yields_the_content() -> None:
    """A tampered CMS (the relay, or a broken KMS reply): each single-byte change is a
    CmsError, or at worst opens to other bytes (then the sealed bundle's AES-GCM tag refuses
    them, next test); never the key, never a crash."""
    content = b"\x5a" * 32
    der = envelope(content, RSA_KEY.public_key())
    pkcs1 = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    at = der.index(hashlib.sha1(pkcs1).digest())
    key_id = range(at, at + 20)  # the recipient's identifier: we hold one key, it is not used
    refused = 0
    for i in range(len(der)):
        tampered = bytearray(der)
        tampered[i] ^= 0x01
        try:
            opened = open_envelope(bytes(tampered), RSA_KEY)
        except CmsError:
            refused += 1
            continue
        # Only the identifier, or the IV / ciphertext (other bytes out: the bundle's tag).
        assert opened != content or i in key_id, i
    assert refused >= len(der) - 20 - 64
    with pytest.raises(CmsError):
        open_envelope(der + b"\x00", RSA_KEY)
    with pytest.raises(CmsError):
        open_envelope(der[:-1], RSA_KEY)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(CmsError, match="does not open"):
        open_envelope(der, other)


def test_a_tampered_cms_from_kms_gives_no_key(
    tmp_path: Path, kms: KmsDouble, aws_root: Path
) -> None:
    attestor, _ = nsm(aws_root, GENUINE)
    path = bundle(tmp_path, kms)
    seen: list[bytes] = []

    def tamper(der: bytes) -> bytes:
        seen.append(der)
        return der[:-20] + bytes(b ^ 0xFF for b in der[-20:])  # the content's last blocks

    kms.tamper = tamper
    with pytest.raises(KmsError, match=r"CiphertextForRecipient does not open|sealed_keys"):
        load_sealed_keys(str(path), kms.endpoint(), attestor, time.time())
    assert seen  # the double did answer, with a real (then tampered) envelope


# ---------------------------------------------------------------- over HTTPS to the double


def test_the_genuine_image_gets_its_key_over_tls_sigv4_and_cms(
    tmp_path: Path, kms: KmsDouble, aws_root: Path
) -> None:
    attestor, _ = nsm(aws_root, GENUINE)
    lines, _ = load_sealed_keys(str(bundle(tmp_path, kms)), kms.endpoint(), attestor, time.time())
    assert lines == [ANVIL_KEY] and kms.released == 1 and kms.refusals == []


def test_a_wrong_pcr0_document_gets_no_key(tmp_path: Path, kms: KmsDouble, aws_root: Path) -> None:
    attestor, _ = nsm(aws_root, PATCHED)
    with pytest.raises(KmsError, match="pcr0"):
        load_sealed_keys(str(bundle(tmp_path, kms)), kms.endpoint(), attestor, time.time())
    assert kms.released == 0


@pytest.mark.parametrize(
    ("credentials", "why"),
    [
        (Credentials(TEST_CREDENTIALS.access_key, "a-guessed-secret", TEST_CREDENTIALS.token),
         "InvalidSignatureException"),
        (Credentials("AKIAUNKNOWN000000000", TEST_CREDENTIALS.secret_key, None),
         "UnrecognizedClientException"),
        (Credentials(TEST_CREDENTIALS.access_key, TEST_CREDENTIALS.secret_key, "stolen-token"),
         "UnrecognizedClientException"),
    ],
    ids=["wrong-secret", "unknown-key", "wrong-token"],
)  # fmt: skip
def test_a_bad_sigv4_signature_is_refused(
    tmp_path: Path, kms: KmsDouble, aws_root: Path, credentials: Credentials, why: str
) -> None:
    attestor, _ = nsm(aws_root, GENUINE)
    with pytest.raises(KmsError, match=why):
        load_sealed_keys(str(bundle(tmp_path, kms)), kms.endpoint(credentials), attestor, 0.0)
    assert kms.released == 0


def test_the_double_checks_the_signature_over_the_body_and_the_date(kms: KmsDouble) -> None:
    """A request re-sent with a changed body, or an old one replayed, does not verify."""
    from enclave.sigv4 import sign_headers

    body = b'{"KeyId":"signer-key"}'
    now = time.time()

    def signed(at: float) -> dict[str, str]:
        return sign_headers(
            TEST_CREDENTIALS, region=kms.region, service="kms", method="POST", host=kms.host,
            path="/", headers={"Content-Type": "application/x-amz-json-1.1",
                               "X-Amz-Target": "TrentService.Decrypt"},
            body=body, amz_date=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at)),
        )  # fmt: skip

    assert kms.check_signature(signed(now), body, now) is None
    changed = kms.check_signature(signed(now), body.replace(b"signer", b"other!"), now)
    assert changed is not None and changed[1]["__type"] == "InvalidSignatureException"
    replayed = kms.check_signature(signed(now - 3600), body, now)
    assert replayed is not None and replayed[1]["message"] == "request expired"
    unsigned_target = {k: v for k, v in signed(now).items()}
    unsigned_target["Authorization"] = unsigned_target["Authorization"].replace(
        "x-amz-target", "x-amz-targes"
    )
    assert kms.check_signature(unsigned_target, body, now) is not None


def test_a_tls_certificate_not_from_the_pinned_ca_is_refused(
    tmp_path: Path, kms: KmsDouble, aws_root: Path
) -> None:
    """The parent terminates TLS itself (its own CA, the right name): the handshake fails
    against the pinned bundle, nothing is sent, no key."""
    attestor, _ = nsm(aws_root, GENUINE)
    other = tmp_path / "other-ca"
    other.mkdir()
    pinned_elsewhere = make_tls_files(other, kms.host, "a parent's own CA")
    endpoint = KmsEndpoint(kms.address, kms.region, str(pinned_elsewhere), TEST_CREDENTIALS)
    with pytest.raises(KmsError, match=r"TLS .* refused"):
        load_sealed_keys(str(bundle(tmp_path, kms)), endpoint, attestor, time.time())
    assert kms.released == 0 and kms.refusals == []  # no request got through


def test_a_certificate_for_another_name_is_refused(
    tmp_path: Path, kms: KmsDouble, aws_root: Path
) -> None:
    """The pinned CA, but the enclave asks for another region's KMS (SNI and hostname check)."""
    attestor, _ = nsm(aws_root, GENUINE)
    endpoint = KmsEndpoint(kms.address, "eu-west-3", str(kms.ca_file), TEST_CREDENTIALS)
    with pytest.raises(KmsError, match=r"TLS .* refused"):
        load_sealed_keys(str(bundle(tmp_path, kms)), endpoint, attestor, time.time())
    assert kms.released == 0


# ---------------------------------------------------------------- the app, nitro mode


def _nitro_args(tmp_path: Path, double: KmsDouble, **over: Any) -> argparse.Namespace:
    creds = tmp_path / "aws-credentials.json"
    c = TEST_CREDENTIALS
    creds.write_bytes(orjson.dumps(
        {"AccessKeyId": c.access_key, "SecretAccessKey": c.secret_key, "Token": c.token}
    ))  # fmt: skip
    argv = ["--mode", "nitro", "--listen", f"unix://{tmp_path}/e.sock",
            "--key-bundle", str(bundle(tmp_path, double)), "--kms", double.address,
            "--kms-region", double.region, "--kms-ca", str(double.ca_file),
            "--kms-credentials", str(creds),
            "--audit-log", str(tmp_path / "audit.jsonl")]  # fmt: skip
    args = app._serve_parser().parse_args(argv)
    for key, value in over.items():
        setattr(args, key, value)
    return args


def _with_nsm(
    monkeypatch: pytest.MonkeyPatch, aws_root: Path, pcr0: bytes
) -> Callable[[], FakeNsmDevice]:
    """``/dev/nsm`` is the fake device (the ioctl layout of the real driver): the rest of the
    nitro start is the app's own code."""
    device = FakeNsmDevice(aws_root, pcr0)

    def attestor(path: str) -> NsmAttestor:
        return NsmAttestor(path, opener=lambda _: 99, ioctl=device.ioctl)

    monkeypatch.setattr(app, "NsmAttestor", attestor)
    return lambda: device


def test_nitro_mode_starts_with_its_keys_from_kms_over_tls(
    tmp_path: Path, kms: KmsDouble, aws_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_nsm(monkeypatch, aws_root, GENUINE)
    core, _, pcr0 = app._setup(_nitro_args(tmp_path, kms), time.time())
    assert pcr0 == GENUINE
    assert [k.address for k in core.keys.values()] == [ANVIL_ADDRESS]
    assert kms.released == 1


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"kms_ca": None}, "--kms-ca FILE"),
        ({"kms_credentials": None}, "--kms-credentials FILE"),
        ({"kms_region": "not a region"}, "not an AWS region"),
        ({"kms": "http://127.0.0.1:1/"}, "expected vsock://CID:PORT or tcp://HOST:PORT"),
    ],
)
def test_nitro_mode_without_the_whole_kms_transport_does_not_start(
    tmp_path: Path,
    kms: KmsDouble,
    aws_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    over: dict[str, Any],
    needle: str,
) -> None:
    _with_nsm(monkeypatch, aws_root, GENUINE)
    with pytest.raises(app.StartError, match=needle):
        app._setup(_nitro_args(tmp_path, kms, **over), time.time())
    assert kms.released == 0


def test_nitro_mode_with_a_patched_build_does_not_start(
    tmp_path: Path, kms: KmsDouble, aws_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_nsm(monkeypatch, aws_root, PATCHED)
    with pytest.raises(app.StartError, match="pcr0"):
        app._setup(_nitro_args(tmp_path, kms), time.time())
    assert kms.released == 0


def test_the_pinned_bundle_in_the_image_holds_amazons_roots_and_nothing_else() -> None:
    """``enclave/kms-ca.pem`` (what ``enclave/Dockerfile`` passes as ``--kms-ca``) loads as the
    only trust anchors: Amazon Root CA 1-4 and Starfield Services Root G2."""
    pinned = Path(app.__file__).with_name("kms-ca.pem")
    endpoint = KmsEndpoint("vsock://3:8000", "us-east-1", str(pinned), TEST_CREDENTIALS)
    context = endpoint.context()
    assert context.cert_store_stats()["x509_ca"] == 5
    names = sorted(
        dict(part[0] for part in cert["subject"])["commonName"] for cert in context.get_ca_certs()
    )
    assert names == [
        "Amazon Root CA 1", "Amazon Root CA 2", "Amazon Root CA 3", "Amazon Root CA 4",
        "Starfield Services Root Certificate Authority - G2",
    ]  # fmt: skip
    assert context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"[]",
        b'{"AccessKeyId": "AKID"}',
        b'{"AccessKeyId": 5, "SecretAccessKey": "s"}',
        b'{"AccessKeyId": "AKID", "SecretAccessKey": ["s"]}',
        b'{"AccessKeyId": "AKID", "SecretAccessKey": "s", "Token": 7}',
        b'{"AccessKeyId": "", "SecretAccessKey": "s"}',
    ],
    ids=["empty", "list", "no-secret", "int-key", "list-secret", "int-token", "blank-key"],
)
def test_a_malformed_credentials_file_is_a_clear_transport_error(
    tmp_path: Path, content: bytes
) -> None:
    """The parent writes the credentials file: any other shape than IMDS's (strings, the key id
    and secret present) is refused at load with the file named, never a crash at the first
    KMS call (an int token made sign_headers raise AttributeError outside every handler)."""
    path = tmp_path / "aws-credentials.json"
    path.write_bytes(content)
    with pytest.raises(TransportError, match=r"aws-credentials\.json"):
        load_credentials(str(path))


def test_a_missing_credentials_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match=r"nowhere\.json"):
        load_credentials(str(tmp_path / "nowhere.json"))

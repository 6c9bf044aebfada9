"""The NSM attestor against a fake ``/dev/nsm`` (the real ioctl layout, read and written through
memory as the driver does), per-document leaves, and keys sealed to the measurement through the
KMS double over a real HTTP socket on 127.0.0.1: a patched build with a forged PCR0 gets no key."""

from __future__ import annotations

import ctypes
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cbor2
import orjson
import pytest

from enclave.attestor import DevAttestor, create_dev_pki, measure_pcr0
from enclave.kms import KmsError, generate_sealed_keys, load_sealed_keys, seal_bundle
from enclave.kms_double import TEST_CREDENTIALS, KmsDouble
from enclave.nsm import NSM_IOCTL_RAW, NsmAttestor, NsmError
from signer_client.attestation import AttestationPolicy, verify_attestation
from signer_client.errors import AttestationError
from tests.enclave.running import ANVIL_ADDRESS, ANVIL_KEY, REPO

GENUINE = b"\x42" * 48  # the measurement the operator's key policy names
PATCHED = b"\x66" * 48  # a build with the policy check removed measures differently


class FakeNsmDevice:
    """Stands in for the driver behind the fd: decodes ``struct nsm_raw`` from the ioctl buffer,
    reads the CBOR request at ``request.addr``, writes the CBOR response to ``response.addr`` and
    its length back into ``response.len``; documents are signed under ``root`` (AWS's, in real
    life) with the PCR0 of the image that actually runs."""

    def __init__(self, pki: Path, pcr0: bytes) -> None:
        self.signer = DevAttestor.from_dir(pki, {0: pcr0, 1: b"\0" * 48, 2: b"\0" * 48})
        self.pcr0 = pcr0
        self.requests: list[Any] = []
        self.error: str | None = None

    def ioctl(self, fd: int, request: int, buf: bytearray, mutate: bool) -> int:
        assert fd == 99 and request == NSM_IOCTL_RAW and mutate and len(buf) == 32
        req_addr, req_len, resp_addr, resp_cap = struct.unpack("=QQQQ", bytes(buf))
        message = cbor2.loads(ctypes.string_at(req_addr, req_len))
        self.requests.append(message)
        if self.error is not None:
            reply: Any = {"Error": self.error}
        elif "Attestation" in message:
            a = message["Attestation"]
            doc = self.signer.document(a["nonce"], a["user_data"], a["public_key"], time.time())
            reply = {"Attestation": {"document": doc}}
        elif "DescribePCR" in message:
            reply = {"DescribePCR": {"lock": True, "data": self.pcr0}}
        else:
            reply = {"Error": "InvalidOperation"}
        out = cbor2.dumps(reply)
        assert len(out) <= resp_cap
        ctypes.memmove(resp_addr, out, len(out))
        buf[:] = struct.pack("=QQQQ", req_addr, req_len, resp_addr, len(out))
        return 0


@pytest.fixture(scope="module")
def aws_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stands in for the AWS Nitro root: only the NSM (here: the fake device) holds its key."""
    directory = tmp_path_factory.mktemp("aws-root")
    create_dev_pki(directory, "fake aws nitro root")
    return directory


def nsm(aws_root: Path, pcr0: bytes) -> tuple[NsmAttestor, FakeNsmDevice]:
    device = FakeNsmDevice(aws_root, pcr0)
    return NsmAttestor("/dev/nsm", opener=lambda path: 99, ioctl=device.ioctl), device


def test_the_ioctl_number_is_nsm_raw() -> None:
    assert NSM_IOCTL_RAW == 0xC0200A00  # _IOWR(0x0A, 0, struct nsm_raw) on 64-bit Linux


def test_an_nsm_document_carries_our_nonce_key_and_user_data_and_verifies(aws_root: Path) -> None:
    attestor, device = nsm(aws_root, GENUINE)
    doc = attestor.document(b"n" * 32, b"u" * 32, b"k" * 65, time.time())
    result = verify_attestation(
        doc, AttestationPolicy((aws_root / "root.pem").read_bytes(), GENUINE), nonce=b"n" * 32
    )
    assert result.public_key == b"k" * 65 and result.user_data == b"u" * 32
    assert device.requests[0] == {
        "Attestation": {"user_data": b"u" * 32, "nonce": b"n" * 32, "public_key": b"k" * 65}
    }
    assert attestor.pcr0() == GENUINE
    assert device.requests[1] == {"DescribePCR": {"index": 0}}


def test_an_nsm_error_and_a_missing_device_are_clear_errors(aws_root: Path) -> None:
    attestor, device = nsm(aws_root, GENUINE)
    device.error = "InvalidArgument"
    with pytest.raises(NsmError, match="InvalidArgument"):
        attestor.document(b"", b"", b"", 0.0)
    with pytest.raises(NsmError, match="512"):
        attestor.document(b"x" * 513, b"", b"", 0.0)
    with pytest.raises(NsmError, match="Nitro enclave"):
        NsmAttestor("/nonexistent/nsm")


class HostileNsmDevice:
    """A device (or a driver bug) answering with given raw bytes and a given length."""

    def __init__(self, reply: bytes, length: int | None = None) -> None:
        self.reply, self.length = reply, len(reply) if length is None else length

    def ioctl(self, fd: int, request: int, buf: bytearray, mutate: bool) -> int:
        req_addr, req_len, resp_addr, resp_cap = struct.unpack("=QQQQ", bytes(buf))
        ctypes.memmove(resp_addr, self.reply, min(len(self.reply), resp_cap))
        buf[:] = struct.pack("=QQQQ", req_addr, req_len, resp_addr, self.length)
        return 0


@pytest.mark.parametrize(
    ("reply", "length"),
    [
        (b"", 0),
        (b"\xa0", 1 << 40),  # a length beyond the buffer
        (b"\x5b\x7f\xff\xff\xff\xff\xff\xff\xff", None),  # a 2^63-byte string announced
        (b"\x81" * 0x3000, None),  # nesting deeper than cbor2 goes
        (b"\xff\xfe", None),  # not CBOR
        (cbor2.dumps([1, 2]), None),  # not a map
        (cbor2.dumps({"DescribePCR": {"data": 10**9}}), None),  # bytes(10**9): a gigabyte
        (cbor2.dumps({"DescribePCR": {"data": "a string"}}), None),
        (cbor2.dumps({"DescribePCR": {"data": b"short"}}), None),  # not a SHA-384 PCR
        (cbor2.dumps({"DescribePCR": []}), None),
        (cbor2.dumps({"Attestation": {"document": 5}}), None),
    ],
)
def test_a_malicious_device_reply_is_an_nsm_error_never_a_crash_or_an_allocation(
    reply: bytes, length: int | None
) -> None:
    device = HostileNsmDevice(reply, length)
    attestor = NsmAttestor("/dev/nsm", opener=lambda path: 99, ioctl=device.ioctl)
    with pytest.raises(NsmError):
        attestor.pcr0()
    with pytest.raises(NsmError):
        attestor.document(b"n", b"u", b"k", 0.0)


def test_a_failing_nsm_is_an_internal_error_answer_and_the_session_gets_no_channel_key() -> None:
    from enclave.core import EnclaveCore, Session
    from enclave.policy import Policy, PolicyConfig
    from signer_client.signing import LocalKey

    device = HostileNsmDevice(cbor2.dumps({"Error": "InternalError"}))
    attestor = NsmAttestor("/dev/nsm", opener=lambda path: 99, ioctl=device.ioctl)
    core = EnclaveCore([LocalKey(ANVIL_KEY)], Policy(PolicyConfig()), attestor=attestor)
    session = Session()
    client_key = "0x" + LocalKey(b"\x01" * 32).public_key.hex()
    params = {"nonce": "0x" + "ab" * 32, "client_key": client_key}
    reply = core.handle({"id": 1, "method": "attestation", "params": params}, 0.0, session)
    assert reply["error"]["code"] == "internal" and "InternalError" in reply["error"]["reason"]
    assert session.pending_key is None and session.mac_key is None
    assert "result" in core.handle({"id": 2, "method": "hello"}, 0.0, session)


def test_a_leaf_is_minted_per_document_so_a_25_hour_old_enclave_still_attests(
    aws_root: Path,
) -> None:
    started = time.time()
    attestor = DevAttestor.from_dir(aws_root, {0: GENUINE})
    policy = AttestationPolicy((aws_root / "root.pem").read_bytes(), GENUINE)
    first = attestor.document(b"a", b"", b"", started)
    verify_attestation(first, policy, nonce=b"a", now=started)
    later = started + 25 * 3600  # a reconnect a day and an hour later
    doc = attestor.document(b"b", b"", b"", later)
    verify_attestation(doc, policy, nonce=b"b", now=later)
    # ... whereas a document minted at start and replayed then fails: its leaf is long expired.
    with pytest.raises(AttestationError) as info:
        verify_attestation(first, policy, nonce=b"a", now=later)
    assert info.value.check in ("chain", "stale")


# ---------------------------------------------------------------- KMS


@pytest.fixture
def kms(aws_root: Path) -> Any:
    double = KmsDouble((aws_root / "root.pem").read_bytes(), {"signer-key": GENUINE})
    endpoint = double.start()
    yield double, endpoint
    double.stop()


def kms_args(double: KmsDouble, tmp_path: Path) -> list[str]:
    """The app's flags to reach ``double``: its address, region, test CA (pinned) and the
    credentials the parent hands in."""
    creds = tmp_path / "aws-credentials.json"
    c = TEST_CREDENTIALS
    creds.write_bytes(orjson.dumps(
        {"AccessKeyId": c.access_key, "SecretAccessKey": c.secret_key, "Token": c.token}
    ))  # fmt: skip
    return ["--kms", double.address, "--kms-region", double.region,
            "--kms-ca", str(double.ca_file), "--kms-credentials", str(creds)]  # fmt: skip


def bundle(tmp_path: Path, double: KmsDouble) -> Path:
    data_key, blob = double.generate_data_key("signer-key")
    path = tmp_path / "keys.kms.json"
    path.write_bytes(seal_bundle("signer-key", blob, data_key, f"{ANVIL_KEY}\n"))
    return path


def test_the_genuine_image_gets_its_keys_and_the_parent_holds_only_ciphertext(
    tmp_path: Path, kms: Any, aws_root: Path
) -> None:
    double, url = kms
    path = bundle(tmp_path, double)
    assert ANVIL_KEY[2:].encode() not in path.read_bytes()
    attestor, _ = nsm(aws_root, GENUINE)
    lines, _ = load_sealed_keys(str(path), url, attestor, time.time())
    assert lines == [ANVIL_KEY]
    assert double.released == 1


def test_a_patched_build_measures_differently_and_kms_refuses_the_key(
    tmp_path: Path, kms: Any, aws_root: Path
) -> None:
    double, url = kms
    attestor, _ = nsm(aws_root, PATCHED)  # the real NSM reports what really runs
    with pytest.raises(KmsError, match="pcr0"):
        load_sealed_keys(str(bundle(tmp_path, double)), url, attestor, time.time())
    assert double.released == 0


def test_a_patched_build_that_forges_its_pcr0_with_its_own_pki_is_refused(
    tmp_path: Path, kms: Any
) -> None:
    """The attacker cannot get the NSM to say GENUINE, so it signs a document itself."""
    double, url = kms
    create_dev_pki(tmp_path / "mine")
    forger = DevAttestor.from_dir(tmp_path / "mine", {0: GENUINE})
    with pytest.raises(KmsError, match="root"):
        load_sealed_keys(str(bundle(tmp_path, double)), url, forger, time.time())
    assert double.released == 0


def test_kms_never_releases_without_a_recipient(kms: Any) -> None:
    double, _ = kms
    _, blob = double.generate_data_key("signer-key")
    status, reply = double.decrypt({"KeyId": "signer-key", "CiphertextBlob": blob.hex()})
    assert status == 400 and reply["__type"] == "AccessDeniedException"


def test_the_app_with_a_forged_pcr0_and_dev_pki_gets_no_key_and_does_not_start(
    tmp_path: Path, kms: Any
) -> None:
    double, _ = kms
    create_dev_pki(tmp_path / "pki")
    args = [sys.executable, "-m", "enclave", "--listen", f"unix://{tmp_path}/e.sock",
            "--key-bundle", str(bundle(tmp_path, double)), *kms_args(double, tmp_path),
            "--pki-dir", str(tmp_path / "pki"), "--pcr0", GENUINE.hex()]  # fmt: skip
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "KMS refused" in result.stderr and double.released == 0


def test_the_app_gets_its_keys_from_kms_when_the_document_is_good(
    tmp_path: Path, aws_root: Path
) -> None:
    """Dev mode with the trusted root's PKI (the role the NSM plays in production): the app
    starts from the bundle alone and serves the sealed key's address."""
    double = KmsDouble((aws_root / "root.pem").read_bytes(), {"signer-key": measure_pcr0()})
    double.start()
    try:
        args = [sys.executable, "-m", "enclave", "--listen", f"unix://{tmp_path}/e.sock",
                "--key-bundle", str(bundle(tmp_path, double)), *kms_args(double, tmp_path),
                "--pki-dir", str(aws_root)]  # fmt: skip
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("listening on")
            import asyncio

            from signer_client import SignerClient

            async def hello() -> tuple[str, ...]:
                async with SignerClient(f"unix://{tmp_path}/e.sock") as client:
                    assert client.info is not None
                    return client.info.addresses

            assert asyncio.run(hello()) == (ANVIL_ADDRESS,)
        finally:
            proc.terminate()
            proc.wait(10)
            assert proc.stdout is not None
            proc.stdout.close()
    finally:
        double.stop()
    assert double.released == 1


def test_keys_generated_inside_are_sealed_and_only_the_genuine_image_reopens_them(
    tmp_path: Path, kms: Any, aws_root: Path
) -> None:
    _, url = kms
    path = tmp_path / "generated.kms.json"
    attestor, _ = nsm(aws_root, GENUINE)
    lines, _ = generate_sealed_keys(str(path), url, "signer-key", 2, attestor, time.time())
    assert len(lines) == 2
    assert all(line[2:].encode() not in path.read_bytes() for line in lines)  # ciphertext only
    again, _ = load_sealed_keys(str(path), url, attestor, time.time())
    assert again == lines
    patched, _ = nsm(aws_root, PATCHED)
    with pytest.raises(KmsError, match="pcr0"):
        load_sealed_keys(str(path), url, patched, time.time())
    with pytest.raises(KmsError, match="refusing to replace"):
        generate_sealed_keys(str(path), url, "signer-key", 1, attestor, time.time())
    with pytest.raises(KmsError, match="pcr0"):  # a patched build cannot mint keys either
        generate_sealed_keys(str(tmp_path / "p.json"), url, "signer-key", 1, patched, 0.0)


def test_the_app_generates_its_keys_inside_once_and_reloads_them(
    tmp_path: Path, aws_root: Path
) -> None:
    double = KmsDouble((aws_root / "root.pem").read_bytes(), {"signer-key": measure_pcr0()})
    double.start()
    bundle_path = tmp_path / "keys.kms.json"
    args = [sys.executable, "-m", "enclave", "--listen", f"unix://{tmp_path}/e.sock",
            "--key-bundle", str(bundle_path), *kms_args(double, tmp_path),
            "--pki-dir", str(aws_root),
            "--generate-keys", "1", "--kms-key-id", "signer-key",
            "--audit-log", str(tmp_path / "audit.jsonl")]  # fmt: skip
    addresses = []
    try:
        for _ in range(2):
            proc = subprocess.Popen(
                args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            assert proc.stdout is not None and proc.stderr is not None
            assert proc.stdout.readline().startswith("listening on")
            proc.terminate()
            proc.wait(10)
            addresses.append(proc.stderr.read())
            proc.stdout.close()
            proc.stderr.close()
    finally:
        double.stop()
    assert "generated 1 key(s) inside" in addresses[0]
    assert "generated" not in addresses[1]  # the second start loaded the sealed bundle
    assert double.released == 2  # GenerateDataKey once, Decrypt once

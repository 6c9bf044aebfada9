"""Start the real enclave app (``python -m enclave``) as a subprocess for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
OTHER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
OTHER_ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
ALLOWED_TO = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
ALLOWED_DELEGATE = "0x5FbDB2315678afecb367f032d93F642f64180aa3"  # anvil's first deployment
# anvil's fourth dev key: the auth key of the tests that use one ([policy] auth_address)
AUTH_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"
AUTH_ADDRESS = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
REPO = Path(__file__).resolve().parents[2]

POLICY_TOML = f"""
[policy]
chain_ids = [31337, 1]
allowed_to = ["{ALLOWED_TO}", "{OTHER_ADDRESS}"]
max_value = "1000000000000000000000"
max_gas = 1000000
max_fee_per_gas = 500000000000
max_priority_fee_per_gas = 50000000000
rate_per_second = 1000000
burst = 1000000
allowed_delegates = ["{ALLOWED_DELEGATE}"]
max_fee_per_blob_gas = 100000000000
"""


@dataclass
class Enclave:
    url: str
    process: subprocess.Popen[str]
    audit_log: Path
    pki_dir: Path
    args: list[str]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_enclave(
    workdir: Path,
    url: str,
    *,
    config: str = POLICY_TOML,
    extra: list[str] | None = None,
    extra_keys: tuple[str, ...] = (),
) -> Enclave:
    workdir.mkdir(parents=True, exist_ok=True)
    key_file = workdir / "keys.txt"
    keys = "".join(f"{k}\n" for k in (ANVIL_KEY, OTHER_KEY, *extra_keys))
    key_file.write_text(f"# anvil dev keys\n{keys}")
    config_file = workdir / "enclave.toml"
    config_file.write_text(config)
    pki_dir = workdir / "pki"
    if not (pki_dir / "root.pem").exists():
        from enclave.attestor import create_dev_pki

        create_dev_pki(pki_dir)
    audit_log = workdir / "audit.jsonl"
    args = [
        sys.executable, "-m", "enclave", "--listen", url, "--key-file", str(key_file),
        "--config", str(config_file), "--audit-log", str(audit_log), "--pki-dir", str(pki_dir),
        *(extra or []),
    ]  # fmt: skip
    proc = subprocess.Popen(
        args,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the server listens (or the process dies)
    if not line.startswith("listening on"):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise RuntimeError(f"enclave did not start: {line!r}")
    return Enclave(url, proc, audit_log, pki_dir, args)


@contextlib.contextmanager
def running_enclave(workdir: Path, url: str, **kwargs: object) -> Iterator[Enclave]:
    enclave = start_enclave(workdir, url, **kwargs)  # type: ignore[arg-type]
    try:
        yield enclave
    finally:
        enclave.stop()

"""``broadcaster demo`` (what ``make demo`` runs) completes and survives its reorgs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_runs_to_completion_and_every_intent_is_mined_once() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "broadcaster", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "injecting a reorg of depth 1" in out
    assert "injecting a reorg of depth 3" in out
    assert out.count("DROPPED by the reorg") == 5
    assert out.count("re-signed ->") == 5
    assert "reaction: reorg head frame read -> last RPC write" in out
    # The private round: builder only, signed by the auth key, replaced under the same uuid.
    bundles = re.findall(
        r"builder: eth_sendBundle for block #(\d+) \S+ uuid (\S+) .* by (\S+)", out
    )
    assert len(bundles) == 2, out
    (first_block, uuid, signer), (replaced_block, uuid_again, signer_again) = bundles
    assert uuid == uuid_again and signer == signer_again == "0x90F79bf6…"
    assert int(replaced_block) >= int(first_block)
    assert "(the replacement: same uuid)" in out and "refused by the builder: 0" in out
    assert "reaction: reorg head frame read -> replacement bundle written to the builder" in out
    assert "5 intents, nonces used 5 (expected 5), 3 reorgs survived, 5 re-signed" in out
    assert "PROBLEM" not in out
    # It ends with `broadcaster audit` over its own run: every transaction accounted for.
    assert "broadcaster audit --config broadcaster.toml --from-block 0:" in out
    audit = re.search(
        r"audit: (\d+) blocks, (\d+) signed by the enclave .* (\d+) foreign: (.*)", out
    )
    assert audit is not None, out
    assert int(audit[2]) == 5 and int(audit[3]) == 0, audit[0]
    assert audit[4] == "every transaction accounted for"
    assert "stopped everything" in out
    assert_drops_name_the_included_hash(out)


def assert_drops_name_the_included_hash(out: str) -> None:
    """Each DROPPED line names the hash its intent was included under; re-signed, a new one."""
    included: dict[str, str] = {}
    dropped: dict[str, str] = {}
    resigned = 0
    for line in out.splitlines():
        if m := re.search(
            r"((?:private )?intent nonce \d+): included in block #\d+ \S+ (0x[0-9a-f]{8})…", line
        ):
            included[m[1]] = m[2]
        elif m := re.search(
            r"((?:private )?intent nonce \d+): DROPPED by the reorg \(was (0x[0-9a-f]{8})…", line
        ):
            assert included.pop(m[1], None) == m[2], line
            dropped[m[1]] = m[2]
        elif m := re.search(
            r"((?:private )?intent nonce \d+): re-signed -> (0x[0-9a-f]{8})…", line
        ):
            assert m[2] != dropped[m[1]], line
            resigned += 1
    assert len(dropped) == resigned == 5

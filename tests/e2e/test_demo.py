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
    assert out.count("DROPPED by the reorg") == 4
    assert out.count("re-signed ->") == 4
    assert "reaction: reorg head frame read -> last RPC write" in out
    assert "4 intents, nonces used 4 (expected 4), 2 reorgs survived, 4 re-signed" in out
    assert "PROBLEM" not in out
    # It ends with `broadcaster audit` over its own run: every transaction accounted for.
    assert "broadcaster audit --config broadcaster.toml --from-block 0:" in out
    audit = re.search(
        r"audit: (\d+) blocks, (\d+) signed by the enclave .* (\d+) foreign: (.*)", out
    )
    assert audit is not None, out
    assert int(audit[2]) == 4 and int(audit[3]) == 0, audit[0]
    assert audit[4] == "every transaction accounted for"
    assert "stopped everything" in out
    assert_drops_name_the_included_hash(out)


def assert_drops_name_the_included_hash(out: str) -> None:
    """Each DROPPED line names the hash its intent was included under; re-signed, a new one."""
    included: dict[str, str] = {}
    dropped: dict[str, str] = {}
    resigned = 0
    for line in out.splitlines():
        if m := re.search(r"(intent nonce \d+): included in block #\d+ \S+ (0x[0-9a-f]{8})…", line):
            included[m[1]] = m[2]
        elif m := re.search(
            r"(intent nonce \d+): DROPPED by the reorg \(was (0x[0-9a-f]{8})…", line
        ):
            assert included.pop(m[1], None) == m[2], line
            dropped[m[1]] = m[2]
        elif m := re.search(r"(intent nonce \d+): re-signed -> (0x[0-9a-f]{8})…", line):
            assert m[2] != dropped[m[1]], line
            resigned += 1
    assert len(dropped) == resigned == 4

"""``broadcaster demo`` (what ``make demo`` runs) completes and survives its reorgs."""

from __future__ import annotations

import os
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
    assert "stopped everything" in out

"""`broadcaster replay` imports only what it needs (DESIGN.md §8; issue 12 item 6).

Run in a fresh interpreter: the test process itself has imported everything already.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).parents[2] / "fixtures" / "recordings" / "anvil-reorg-depth1.jsonl.gz"
HEAVY = ("aiohttp", "web3", "prometheus_client", "eth_account", "coincurve", "broadcaster.tx")

PROBE = """
import os, sys
from broadcaster.cli.main import main
real = sys.stdout
sys.stdout = open(os.devnull, "w")
rc = main(["replay", sys.argv[1], "--json"])
sys.stdout = real
names = sys.argv[2:]
heavy = sorted(m for m in sys.modules for h in names if m == h or m.startswith(h + "."))
print(rc, " ".join(heavy))
"""


def test_replay_imports_no_service_stack() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(FIXTURE), *HEAVY],
        capture_output=True,
        text=True,
        check=True,
    )
    rc, _, heavy = done.stdout.strip().partition(" ")
    assert rc == "0"
    assert heavy == ""


def test_other_commands_still_parse() -> None:
    from broadcaster.cli.main import build_parser, build_replay_parser

    full = build_parser().parse_args(["check-config", "x.toml"])
    assert full.command == "check-config"
    light = build_replay_parser().parse_args(["replay", "f.jsonl", "--no-verify"])
    assert light.command == "replay" and light.no_verify

"""``broadcaster audit``: the exact flags, and a clear error (exit 2) when it cannot run."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from broadcaster.cli.audit import run_audit
from broadcaster.cli.main import build_parser
from broadcaster.settings import render_config

DEV = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def config(tmp_path: Path) -> Path:
    text = render_config(
        chain_id=31337,
        clients=[("a", "ws://127.0.0.1:1")],
        rpcs=[("a", "http://127.0.0.1:1")],
        signer_url="unix:///tmp/none.sock",
        accounts=[DEV],
        api_listen="127.0.0.1:8650",
        tokens=["t"],
        metrics_listen="127.0.0.1:9650",
        journal_path=tmp_path / "j.db",
    )
    path = tmp_path / "b.toml"
    path.write_text(text)
    return path


def test_the_command_line_of_design_section_7_parses() -> None:
    args = build_parser().parse_args(
        ["audit", "--config", "c.toml", "--from-block", "5", "--to-block", "9", "--json"]
    )
    assert (args.config, args.from_block, args.to_block, args.json) == ("c.toml", 5, 9, True)
    args = build_parser().parse_args(["audit", "--config", "c.toml", "--from-block", "0"])
    assert args.to_block is None and args.json is False


def test_no_journal_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["audit", "--config", str(config(tmp_path)), "--from-block", "0"]
    )
    assert run_audit(args, io.StringIO()) == 2
    assert f"no journal at {tmp_path / 'j.db'}" in capsys.readouterr().err


def test_a_backwards_range_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "j.db").touch()
    argv = ["audit", "--config", str(config(tmp_path)), "--from-block", "9", "--to-block", "3"]
    assert run_audit(build_parser().parse_args(argv), io.StringIO()) == 2
    assert "--from-block" in capsys.readouterr().err


def test_no_rpc_answering_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "j.db").touch()
    argv = ["audit", "--config", str(config(tmp_path)), "--from-block", "0", "--to-block", "1"]
    assert run_audit(build_parser().parse_args(argv), io.StringIO()) == 2
    assert "no endpoint answered" in capsys.readouterr().err

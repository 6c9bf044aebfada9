"""``broadcaster record`` argument handling (no network)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from broadcaster.cli.record import add_record_arguments, clients_from_args, run_record


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="broadcaster record")
    add_record_arguments(parser)
    return parser.parse_args(list(argv))


def test_clients_come_from_the_config_then_the_flags(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'chain_id = 1\n[[clients]]\nname = "a"\nurl = "ws://127.0.0.1:1"\n'
        '[[clients]]\nname = "b"\nurl = "ws://127.0.0.1:2"\n'
    )
    args = parse("--config", str(config), "--client", "c=ws://127.0.0.1:3", "--out", "x.jsonl")
    assert clients_from_args(args) == [
        ("a", "ws://127.0.0.1:1"),
        ("b", "ws://127.0.0.1:2"),
        ("c", "ws://127.0.0.1:3"),
    ]
    assert (args.duration, args.heads, args.out) == (None, None, Path("x.jsonl"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--client", "nourl"), "expected NAME=URL"),
        (("--client", "a=ws://x", "--client", "a=ws://y"), "given twice"),
    ],
)
def test_bad_client_flags_are_reported(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clients_from_args(parse(*argv, "--out", "x"))


def test_a_config_client_without_a_url_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[clients]]\nname = "a"\n')
    with pytest.raises(ValueError, match=r"clients\[0\] needs string name and url"):
        clients_from_args(parse("--config", str(config), "--out", "x"))


def test_run_record_without_clients_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_record(parse("--out", str(tmp_path / "x.jsonl"), "--client", "bad")) == 2
    assert "NAME=URL" in capsys.readouterr().err

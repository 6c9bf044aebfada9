"""The example config loads, and config errors name the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def test_the_example_config_loads() -> None:
    config = load_config(str(REPO / "config" / "enclave.example.toml"))
    assert config.policy.chain_ids == (31337,)
    assert config.policy.max_value == 10**20
    assert config.audit_path == "enclave-audit.jsonl"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[policy]\nmax_gas = 'lots'\n", "policy.max_gas"),
        ("[policy]\nallowed_to = ['0x12']\n", "policy.allowed_to[0]"),
        ("[policy]\nbump = 5\n", "policy.bump"),
        ("mode = 'cloud'\n", "mode"),
    ],
)
def test_a_bad_value_is_reported_with_its_key_path(tmp_path: Path, text: str, path: str) -> None:
    file = tmp_path / "e.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=path.replace("[", r"\[").replace("]", r"\]")):
        load_config(str(file))

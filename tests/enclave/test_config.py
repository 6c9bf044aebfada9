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
        (
            "[policy.allowed_selectors]\n'0x" + "11" * 20 + "' = 5\n",
            "policy.allowed_selectors.0x" + "11" * 20,
        ),
        ("[policy.allowed_selectors]\n'0x" + "11" * 20 + "' = ['0x12']\n", "policy"),
        ("[policy]\nnonce_window = 2\n", "policy"),
    ],
)
def test_a_bad_value_is_reported_with_its_key_path(tmp_path: Path, text: str, path: str) -> None:
    file = tmp_path / "e.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=path.replace("[", r"\[").replace("]", r"\]")):
        load_config(str(file))


def test_the_optional_calldata_and_cumulative_value_rules_load(tmp_path: Path) -> None:
    file = tmp_path / "e.toml"
    to = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
    file.write_text(
        "[policy]\nmax_value_per_window = '1000'\nvalue_window_seconds = 60\n"
        f"[policy.allowed_selectors]\n'{to}' = ['0xA9059CBB', '0x']\n"
    )
    policy = load_config(str(file)).policy
    assert policy.max_value_per_window == 1000 and policy.value_window_seconds == 60.0
    assert policy.allowed_selectors == ((to.lower(), ("0xa9059cbb", "0x")),)

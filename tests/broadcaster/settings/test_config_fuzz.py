"""Garbage in, ConfigError out: the loader never raises anything else (hypothesis)."""

from __future__ import annotations

import copy
import datetime
import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadcaster.settings import Config, ConfigError, config_from_dict, parse_config
from tests.broadcaster.settings.test_config import MINIMAL

FRAGMENTS = [
    "chain_id = ", "fork_choice = ", "finality_depth = ", "[[clients]]", "[[rpcs]]", "[[accounts]]",
    "[signer]", "[fees]", "[api]", "[metrics]", "[journal]", "[heads]", "[cpu]", "[clients]",
    "name = ", "url = ", "address = ", "bump_percent = ", "listen = ", "tokens = ", "path = ",
    "pinning = ", "watchdog_seconds = ", "pcr0 = ", "private_key = ", '"ws://127.0.0.1:1"',
    '"vsock://3:5000"', '"unix:///x"', '"tcp://h:1"', '"127.0.0.1:9650"', "[", "]", "{", "}",
    "=", ",", ".", '"', "'", "\n", " ", "#", "1", "-1", "0x", "1e999", "nan", "inf", "true",
    "1979-05-27T07:32:00Z", '"""', "[[", "]]", "a.b.c", "\\u0000", "\t",
]  # fmt: skip


def _check(make: Any) -> None:
    try:
        config = make()
    except ConfigError as exc:
        assert exc.problems
        assert all(isinstance(p.path, str) and p.message for p in exc.problems)
        str(exc)
    else:
        assert isinstance(config, Config)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=60))
def test_random_toml_ish_text_only_ever_raises_config_error(parts: list[str]) -> None:
    _check(lambda: parse_config("".join(parts)))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_mutated_valid_text_only_ever_raises_config_error(junk: str) -> None:
    _check(lambda: parse_config(MINIMAL + junk))
    _check(lambda: parse_config(junk + MINIMAL))


TOML_SCALARS = (
    st.text(max_size=20)
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.datetimes()
    | st.dates()
    | st.times()
    | st.sampled_from(["ws://127.0.0.1:1", "http://x", "vsock://1:2", "0x" + "ab" * 20, "a:1"])
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(
    ["chain_id", "fork_choice", "finality_depth", "clients", "rpcs", "signer", "accounts", "fees",
     "api", "metrics", "journal", "heads", "cpu", "name", "url", "address", "listen", "tokens",
     "path", "bump_percent", "priority_fee_wei", "max_fee_cap_wei", "pinning", "watchdog_seconds",
     "timeout_seconds", "pcr0", "attestation_root", "rate_per_token", "max_message_bytes", "x"]
)  # fmt: skip


def _containers(node: Any) -> list[Any]:
    found = [node]
    values = node.values() if isinstance(node, dict) else node
    for value in values:
        if isinstance(value, dict | list):
            found += _containers(value)
    return found


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_a_valid_document_with_random_edits_only_ever_raises_config_error(data: Any) -> None:
    document = copy.deepcopy(tomllib.loads(MINIMAL))
    for _ in range(data.draw(st.integers(1, 4))):
        target = data.draw(st.sampled_from(_containers(document)))
        if isinstance(target, dict):
            key = data.draw(KEYS)
            if key in target and data.draw(st.booleans()):
                del target[key]
            else:
                target[key] = data.draw(TOML_VALUES)
        elif target and data.draw(st.booleans()):
            target[data.draw(st.integers(0, len(target) - 1))] = data.draw(TOML_VALUES)
        else:
            target.append(data.draw(TOML_VALUES))
    _check(lambda: config_from_dict(document))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(KEYS, TOML_VALUES, max_size=8))
def test_random_documents_only_ever_raise_config_error(document: dict[str, Any]) -> None:
    _check(lambda: config_from_dict(document))


def test_toml_dates_where_strings_belong_are_reported_as_dates() -> None:
    document = tomllib.loads(MINIMAL)
    document["journal"]["path"] = datetime.date(2024, 1, 1)
    with pytest.raises(ConfigError) as info:
        config_from_dict(document)
    assert [str(p) for p in info.value.problems] == [
        "journal.path: expected a string, got a date/time (2024-01-01)"
    ]

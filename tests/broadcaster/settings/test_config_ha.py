"""[journal] url (PostgreSQL) and [ha] (active/standby): what loads, and every error's key path."""

# ruff: noqa: E501  (the error-message table reads best one case per line)

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broadcaster.cli.check_config import describe_config
from broadcaster.settings import ConfigError, config_from_dict, render_config
from broadcaster.settings.model import HaConfig, JournalConfig
from tests.broadcaster.settings.test_config import minimal

URL = "postgresql://broadcaster:secret@127.0.0.1:5432/broadcaster"


def ha(data: dict[str, Any], **table: Any) -> dict[str, Any]:
    data["journal"] = {"url": URL}
    data["ha"] = table
    return data


def test_a_postgresql_journal_with_ha_loads() -> None:
    config = config_from_dict(ha(minimal(), instance="a", lease_seconds=1.5))
    assert config.journal == JournalConfig(url=URL)
    assert config.journal.target == URL
    assert config.ha == HaConfig("a", 1.5)
    described = describe_config(config)
    assert "secret" not in described and "PostgreSQL" in described


def test_ha_defaults_to_a_two_second_lease_and_is_off_without_its_table() -> None:
    assert config_from_dict(ha(minimal(), instance="b")).ha == HaConfig("b", 2.0)
    data = minimal()
    data["journal"] = {"url": URL}
    assert config_from_dict(data).ha is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["journal"].update(url=URL), "journal: set either path (SQLite) or url (PostgreSQL), not both"),
        (lambda d: d.update(journal={"url": "mysql://x"}), 'journal.url: expected a postgresql:// URL, got scheme "mysql"'),
        (lambda d: d.update(ha={"instance": "a"}), 'ha: needs a PostgreSQL journal ([journal] url = "postgresql://...")'),
        (lambda d: ha(d, instance=""), "ha.instance: must be a non-empty name of at most 64 characters"),
        (lambda d: ha(d, instance="a", lease_seconds=0.1), "ha.lease_seconds: must be between 0.2 and 300 seconds, got 0.1"),
        (lambda d: ha(d, instance="a", lease_seconds=0), "ha.lease_seconds: must be greater than 0, got 0"),
        (lambda d: ha(d, instance="a", lease=2), "ha.lease: unknown key (known keys: instance, lease_seconds)"),
    ],
)  # fmt: skip
def test_every_problem_names_its_key(change: Any, message: str) -> None:
    data = minimal()
    change(data)
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    assert message in [str(p) for p in caught.value.problems]


def test_render_config_writes_the_ha_keys(tmp_path: Path) -> None:
    import tomllib

    text = render_config(
        chain_id=1, clients=[("a", "ws://127.0.0.1:1")], rpcs=[("a", "http://127.0.0.1:1")],
        signer_url="unix:///x", accounts=[], api_listen="127.0.0.1:2", tokens=["t"],
        metrics_listen="127.0.0.1:3", journal_path="unused", journal_url=URL,
        ha_instance="a", lease_seconds=1.0,
    )  # fmt: skip
    data = tomllib.loads(text)
    assert data["journal"] == {"url": URL}
    assert data["ha"] == {"instance": "a", "lease_seconds": 1.0}


@pytest.mark.parametrize(
    "url",
    [
        "postgresq://broadcaster:hunter2@db.internal/broadcaster",  # a typo in the scheme
        "broadcaster:hunter2@db.internal/broadcaster",  # no scheme at all
        "postgresql://broadcaster:hunter2@[::1/broadcaster",  # an unclosed IPv6 bracket
    ],
)
def test_a_bad_journal_url_is_refused_without_showing_its_password(url: str) -> None:
    data = minimal()
    data["journal"] = {"url": url}
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    assert "journal.url" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_check_config_hides_a_password_given_as_a_query_parameter() -> None:
    url = "postgresql://broadcaster@127.0.0.1:5432/broadcaster?sslmode=disable&password=hunter2"
    data = minimal()
    data["journal"] = {"url": url}
    described = describe_config(config_from_dict(data))
    assert "hunter2" not in described and "sslmode=disable" in described


def test_a_multi_host_url_of_a_managed_database_loads() -> None:
    url = "postgresql://broadcaster:secret@db1:5432,db2:5432/broadcaster?target_session_attrs=read-write"
    data = minimal()
    data["journal"] = {"url": url}
    config = config_from_dict(data)
    assert config.journal.url == url
    assert "secret" not in describe_config(config)


def test_the_audit_copy_may_be_enabled_on_a_postgresql_journal_off_by_default_there() -> None:
    assert config_from_dict(ha(minimal(), instance="a")).audit.enabled is False
    data = ha(minimal(), instance="a")
    data["audit"] = {"enabled": True}
    assert config_from_dict(data).audit.enabled is True
    text = render_config(
        chain_id=1, clients=[("a", "ws://127.0.0.1:1")], rpcs=[("r", "http://127.0.0.1:1")],
        signer_url="unix:///tmp/s.sock", accounts=["0x" + "11" * 20], api_listen="127.0.0.1:2",
        tokens=["t"], metrics_listen="127.0.0.1:3", journal_path=Path("j.db"), journal_url=URL,
        ha_instance="a", audit_enabled=True,
    )  # fmt: skip
    assert "enabled = true" in text
    import tomllib

    assert config_from_dict(tomllib.loads(text)).audit.enabled is True  # what render writes loads

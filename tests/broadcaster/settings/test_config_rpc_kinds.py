"""``[[rpcs]] kind`` and ``[routing] private`` (DESIGN.md 5a): what check-config accepts."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path
from typing import Any

import pytest

from broadcaster.cli.check_config import run_check_config
from broadcaster.settings import ConfigError, config_from_dict, render_config
from tests.broadcaster.settings.test_config import MINIMAL


def data(*rpcs: dict[str, Any], private: bool | None = None) -> dict[str, Any]:
    doc = tomllib.loads(MINIMAL)
    doc["rpcs"] = list(rpcs)
    if private is not None:
        doc["routing"] = {"private": private}
    return doc


def problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(doc)
    return [str(p) for p in info.value.problems]


PUBLIC = {"name": "pub", "url": "http://127.0.0.1:8545"}
BUILDER = {"name": "bld", "url": "http://127.0.0.1:9000", "kind": "builder"}
PRIVATE = {"name": "prv", "url": "http://127.0.0.1:9001", "kind": "private"}


def test_an_rpc_without_kind_is_public_and_routing_defaults_to_public_intents() -> None:
    config = config_from_dict(data(PUBLIC))
    assert config.rpcs[0].kind == "public" and config.rpcs[0].auth is None
    assert config.routing.private is False
    assert config.public_rpcs == config.rpcs and config.private_rpcs == ()


def test_kinds_split_the_rpcs_into_public_ones_and_private_ones() -> None:
    config = config_from_dict(data(PUBLIC, BUILDER, PRIVATE))
    assert [r.name for r in config.public_rpcs] == ["pub"]
    assert [(r.name, r.kind) for r in config.private_rpcs] == [
        ("bld", "builder"),
        ("prv", "private"),
    ]


def test_a_builders_only_deployment_loads_with_private_routing() -> None:
    config = config_from_dict(data(BUILDER, private=True))
    assert config.public_rpcs == () and config.routing.private is True


def test_a_builders_only_deployment_without_private_routing_is_refused() -> None:
    (problem,) = problems(data(BUILDER))
    assert problem.startswith('routing.private: no [[rpcs]] has kind = "public"')


def test_private_routing_without_any_private_endpoint_is_refused() -> None:
    (problem,) = problems(data(PUBLIC, private=True))
    assert problem.startswith('routing.private: is true but no [[rpcs]] has kind = "private"')


def test_an_unknown_kind_is_named_with_its_key_path() -> None:
    (problem,) = problems(data(PUBLIC, {**BUILDER, "kind": "relay"}))
    assert problem == 'rpcs[1].kind: expected "public" or "private" or "builder", got "relay"'


def test_flashbots_auth_is_accepted_on_http_builders_and_private_rpcs() -> None:
    config = config_from_dict(
        data(PUBLIC, {**BUILDER, "auth": "flashbots"}, {**PRIVATE, "auth": "flashbots"})
    )
    assert [(r.name, r.auth) for r in config.rpcs] == [
        ("pub", None),
        ("bld", "flashbots"),
        ("prv", "flashbots"),
    ]


def test_flashbots_auth_is_refused_on_public_and_websocket_endpoints_saying_why() -> None:
    (public,) = problems(data({**PUBLIC, "auth": "flashbots"}, {**PUBLIC, "name": "p2"}))
    assert public.startswith("rpcs[0].auth: only private and builder endpoints")
    ws = {**BUILDER, "url": "ws://127.0.0.1:9000", "auth": "flashbots"}
    (problem,) = problems(data(PUBLIC, ws))
    assert problem == 'rpcs[1].auth: auth = "flashbots" needs an http(s):// url'


def test_check_config_says_what_flashbots_auth_needs(tmp_path: Path) -> None:
    text = MINIMAL + (
        '\n[[rpcs]]\nname = "bld"\nurl = "http://127.0.0.1:9000"\nkind = "builder"\n'
        'auth = "flashbots"\n'
    )
    path = tmp_path / "c.toml"
    path.write_text(text)
    out = io.StringIO()
    assert run_check_config(path, out=out) == 0, out.getvalue()
    assert "auth: X-Flashbots-Signature on bld" in out.getvalue()
    assert "[policy] auth_address" in out.getvalue()


def test_render_config_writes_kinds_and_routing_the_loader_reads() -> None:
    text = render_config(
        chain_id=31337,
        clients=[("a", "ws://127.0.0.1:8545")],
        rpcs=[("bld", "http://127.0.0.1:9000", "builder")],
        signer_url="unix:///run/enclave.sock",
        accounts=["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"],
        api_listen="127.0.0.1:8650",
        tokens=["change-me"],
        metrics_listen="127.0.0.1:9650",
        journal_path="x.db",
        routing_private=True,
    )
    config = config_from_dict(tomllib.loads(text))
    assert config.rpcs[0].kind == "builder" and config.routing.private


def test_check_config_names_each_kind_and_where_chain_reads_go(tmp_path: Any, capsys: Any) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        MINIMAL + '\n[[rpcs]]\nname = "bld"\nurl = "http://127.0.0.1:9000"\nkind = "builder"\n'
    )
    assert run_check_config(str(path)) == 0
    out = capsys.readouterr().out
    assert "bld=http://127.0.0.1:9000 (builder)" in out
    assert "chain reads: 1 public rpcs + the clients" in out

"""broadcaster.settings: the TOML file of DESIGN.md section 7, every error with its key path."""

# ruff: noqa: E501  (the error-message tables read best one case per line)

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from broadcaster.cli.check_config import run_check_config
from broadcaster.settings import (
    Config,
    ConfigError,
    ListenAddress,
    checksum_address,
    config_from_dict,
    load_config,
    parse_config,
    render_config,
)

REPO = Path(__file__).resolve().parents[3]
DEV_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

MINIMAL = f"""
chain_id = 31337
[[clients]]
name = "a"
url = "ws://127.0.0.1:8545"
[[rpcs]]
name = "a"
url = "http://127.0.0.1:8545"
[signer]
url = "unix:///run/enclave.sock"
[[accounts]]
address = "{DEV_ADDRESS}"
[api]
listen = "127.0.0.1:8650"
tokens = ["change-me"]
[metrics]
listen = "127.0.0.1:9650"
[journal]
path = "broadcaster.db"
"""


def minimal() -> dict[str, Any]:
    return tomllib.loads(MINIMAL)


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return [str(p) for p in info.value.problems]


def only_problem(data: dict[str, Any]) -> str:
    found = problems(data)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- valid files


def test_the_minimal_file_of_design_section_7_loads_with_documented_defaults() -> None:
    config = parse_config(MINIMAL, base_dir=Path("/srv"))
    assert config.chain_id == 31337
    assert config.fork_choice == "latest"
    assert config.finality_depth == 64
    assert [(c.name, c.url) for c in config.clients] == [("a", "ws://127.0.0.1:8545")]
    assert config.signer.endpoint.scheme == "unix"
    assert config.accounts[0].address == DEV_ADDRESS
    assert config.fees.bump_percent == 10
    assert config.fees.max_fee_cap_wei is None
    assert config.api.listen == ListenAddress("127.0.0.1", 8650)
    assert config.api.tokens == ("change-me",)
    assert config.journal.path == Path("/srv/broadcaster.db")
    assert config.heads.watchdog_seconds == 30.0
    assert config.cpu.pinning == ()
    assert config.cpu.slice_us == 300
    assert config.cpu.yield_after_reaction is True
    assert config.audit.enabled is True
    assert config.audit.stop_signing_on_foreign is False
    assert config.audit.poll_seconds == 1.0


def test_the_audit_section_sets_stop_signing_on_foreign() -> None:
    data = minimal()
    data["audit"] = {"stop_signing_on_foreign": True, "poll_seconds": 0.5, "enabled": True}
    config = config_from_dict(data)
    assert config.audit.stop_signing_on_foreign is True
    assert config.audit.poll_seconds == 0.5


def test_a_zero_slice_leaves_the_kernel_default() -> None:
    data = minimal()
    data["cpu"] = {"slice_us": 0, "yield_after_reaction": False}
    config = config_from_dict(data)
    assert config.cpu.slice_us is None
    assert config.cpu.yield_after_reaction is False


@pytest.mark.parametrize("name", ["broadcaster.example.toml", "demo.toml"])
def test_the_shipped_example_files_are_valid(name: str) -> None:
    config = load_config(REPO / "config" / name)
    assert config.source == REPO / "config" / name


def test_the_example_file_sets_and_comments_every_key_the_loader_knows() -> None:
    text = (REPO / "config/broadcaster.example.toml").read_text()
    data = tomllib.loads(text)
    for table in ("signer", "fees", "api", "metrics", "journal", "heads", "cpu", "audit"):
        assert table in data, table
    assert set(data["signer"]) >= {
        "url",
        "timeout_seconds",
        "attestation_root",
        "pcr0",
        "policy_hash",
        "mode",
    }
    assert set(data["fees"]) == {
        "bump_percent",
        "priority_fee_wei",
        "max_fee_cap_wei",
        "presign_replacements",
        "max_gap_fill",
    }
    assert set(data["cpu"]) == {"pinning", "slice_us", "yield_after_reaction"}
    assert set(data["audit"]) == {"enabled", "stop_signing_on_foreign", "poll_seconds"}
    assert set(data["api"]) == {
        "listen",
        "tokens",
        "max_message_bytes",
        "rate_per_token",
        "rate_burst",
        "max_connections_per_token",
        "tenants",
    }
    assert set(data["api"]["tenants"][0]) == {"name", "token", "accounts"}
    keys_ = set(data["api"]["tenants"][0])
    assert all(f"`{k}`" in text for k in keys_)
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    keys = {key for value in data.values() if isinstance(value, dict) for key in value}
    keys |= {key for value in data.values() if isinstance(value, list) for key in value[0]}
    keys |= {key for key, value in data.items() if not isinstance(value, dict | list)}
    keys |= set(data)
    undocumented = sorted(k for k in keys if f"`{k}`" not in comments)
    assert not undocumented, f"keys no comment names in backticks: {undocumented}"


def test_the_demo_file_has_three_clients_and_three_rpcs_on_loopback() -> None:
    config = load_config(REPO / "config/demo.toml")
    assert len(config.clients) == len(config.rpcs) == 3
    assert all("127.0.0.1" in c.url for c in config.clients + config.rpcs)  # type: ignore[operator]


def test_render_config_writes_what_the_loader_reads(tmp_path: Path) -> None:
    text = render_config(
        chain_id=31337,
        clients=[("a", "ws://127.0.0.1:40001"), ("b", "ws://127.0.0.1:40002")],
        rpcs=[("a", "http://127.0.0.1:40001"), ("b", "ws://127.0.0.1:40002")],
        signer_url=f"unix://{tmp_path}/enclave.sock",
        accounts=[DEV_ADDRESS.lower()],
        api_listen="127.0.0.1:40003",
        tokens=['tok"en\\1'],
        metrics_listen="127.0.0.1:40004",
        journal_path=tmp_path / "j.db",
        fork_choice="first-seen",
        watchdog_seconds=2.5,
        header="generated by a test",
    )
    path = tmp_path / "c.toml"
    path.write_text(text)
    config = load_config(path)
    assert [c.name for c in config.clients] == ["a", "b"]
    assert config.rpcs[1].url == "ws://127.0.0.1:40002"
    assert config.fork_choice == "first-seen"
    assert config.api.tokens == ('tok"en\\1',)
    assert config.accounts[0].address == DEV_ADDRESS
    assert config.journal.path == tmp_path / "j.db"
    assert config.heads.watchdog_seconds == 2.5
    assert config.metrics.listen == ListenAddress("127.0.0.1", 40004)


def test_a_relative_journal_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(MINIMAL)
    assert load_config(tmp_path / "c.toml").journal.path == tmp_path / "broadcaster.db"


def test_config_values_are_frozen() -> None:
    config = parse_config(MINIMAL)
    with pytest.raises(AttributeError):
        config.chain_id = 1  # type: ignore[misc]
    assert isinstance(config, Config)


# ---------------------------------------------------------------- every error, with its path


def test_every_problem_is_reported_at_once_with_its_key_path() -> None:
    data = minimal()
    data["clients"].append({"name": "b", "url": "http://x"})
    data["fees"] = {"bump_percent": 5}
    data["chain_id"] = "1"
    data["fork_choice"] = "longest"
    found = problems(data)
    assert found == [
        'chain_id: expected an integer, got a string ("1")',
        'fork_choice: expected "latest" or "first-seen", got "longest"',
        'clients[1].url: expected ws:// or wss://, got "http://x"',
        "fees.bump_percent: must be at least 10, got 5",
    ]


def test_config_error_text_lists_every_problem() -> None:
    data = minimal()
    del data["chain_id"]
    del data["journal"]
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, source="x.toml")
    text = str(info.value)
    assert text.startswith("x.toml: 2 configuration errors")
    assert "chain_id: missing (required)" in text
    assert "journal: missing (required table [journal])" in text


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["fees"].update(bump_precent=12), 'fees.bump_precent: unknown key (did you mean "bump_percent"?)'),
        (lambda d: d.update(finalty_depth=3), 'finalty_depth: unknown key (did you mean "finality_depth"?)'),
        (lambda d: d["clients"][0].update(uri="ws://a"), 'clients[0].uri: unknown key (did you mean "url"?)'),
        (lambda d: d["api"].update(zzz=1), "api.zzz: unknown key (known keys: listen, tokens, tenants, max_message_bytes, rate_per_token, rate_burst, max_connections_per_token)"),
    ],
)  # fmt: skip
def test_unknown_keys_are_errors_with_a_did_you_mean_hint(mutate: Any, expected: str) -> None:
    data = minimal()
    data.setdefault("fees", {})
    mutate(data)
    assert only_problem(data) == expected


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(finality_depth=True), "finality_depth: expected an integer, got a boolean (true)"),
        (lambda d: d.update(finality_depth=0), "finality_depth: must be at least 1, got 0"),
        (lambda d: d.update(chain_id=2**64), f"chain_id: must be at most {2**64 - 1}, got {2**64}"),
        (lambda d: d.update(clients={"name": "a"}), "clients: expected one or more [[clients]] tables, got a table"),
        (lambda d: d.update(rpcs=[]), "rpcs: expected one or more [[rpcs]] tables, got an empty array"),
        (lambda d: d.update(rpcs=[1]), "rpcs[0]: expected a table, got an integer"),
        (lambda d: d.update(signer="unix:///x"), 'signer: expected a table ([signer]), got a string ("unix:///x")'),
        (lambda d: d["api"].update(tokens="t"), 'api.tokens: expected an array of strings, got a string ("t")'),
        (lambda d: d["api"].update(tokens=[]), "api.tokens: needs at least one token, or [[api.tenants]] (clients send it as a bearer token)"),
        (lambda d: d["api"].update(tokens=["a b"]), "api.tokens[0]: must be non-empty, without spaces"),
        (lambda d: d["api"].update(tokens=["t", "t"]), "api.tokens: contains duplicates"),
        (lambda d: d["api"].update(rate_per_token=0), "api.rate_per_token: must be greater than 0, got 0"),
        (lambda d: d["api"].update(rate_per_token=float("nan")), "api.rate_per_token: expected a number, got a float (nan)"),
        (lambda d: d["api"].update(max_message_bytes=10), "api.max_message_bytes: must be at least 1024, got 10"),
        (lambda d: d["api"].update(listen="8650"), 'api.listen: expected "host:port", got "8650"'),
        (lambda d: d["api"].update(listen="::1:8650"), 'api.listen: an IPv6 host needs brackets ("[::1]:9650"), got "::1:8650"'),
        (lambda d: d["metrics"].update(listen="127.0.0.1:99999"), 'metrics.listen: port must be 1..65535, got "99999"'),
        (lambda d: d["metrics"].update(listen="127.0.0.1:8650"), "metrics.listen: same address as api.listen (127.0.0.1:8650)"),
        (lambda d: d["journal"].update(path=""), "journal.path: must not be empty"),
        (lambda d: d.update(heads={"watchdog_seconds": -1}), "heads.watchdog_seconds: must be at least 0, got -1"),
        (lambda d: d.update(cpu={"pinning": [0, 0]}), "cpu.pinning: lists a CPU twice: [0, 0]"),
        (lambda d: d.update(cpu={"pinning": [-1]}), "cpu.pinning: values must be 0..4095, got [-1]"),
        (lambda d: d.update(cpu={"pinning": ["0"]}), 'cpu.pinning: expected an array of integers, got an array (["0"])'),
        (lambda d: d.update(cpu={"slice_us": 50}), "cpu.slice_us: must be 0 (the kernel's default) or 100..100000"),
        (lambda d: d.update(cpu={"slice_us": 100_001}), "cpu.slice_us: must be at most 100000, got 100001"),
        (lambda d: d.update(cpu={"slice_us": -1}), "cpu.slice_us: must be at least 0, got -1"),
        (lambda d: d.update(cpu={"yield_after_reaction": "yes"}), 'cpu.yield_after_reaction: expected true or false, got a string ("yes")'),
        (lambda d: d.update(audit={"stop_signing_on_foreign": "yes"}), 'audit.stop_signing_on_foreign: expected true or false, got a string ("yes")'),
        (lambda d: d.update(audit={"poll_seconds": 0}), "audit.poll_seconds: must be greater than 0, got 0"),
        (lambda d: d.update(audit={"stop_signing": True}), 'audit.stop_signing: unknown key (did you mean "stop_signing_on_foreign"?)'),
        (lambda d: d.update(fees={"priority_fee_wei": 10, "max_fee_cap_wei": 5}), "fees.max_fee_cap_wei: is below fees.priority_fee_wei (10)"),
        (lambda d: d["clients"].append({"name": "a", "url": "ws://b"}), 'clients[1].name: duplicate name "a" (also clients[0].name)'),
        (lambda d: d["rpcs"][0].update(name="has space"), "rpcs[0].name: use 1-64 letters, digits, '_', '.', '-' (it becomes a metric label), got \"has space\""),
        (lambda d: d["rpcs"][0].update(url="ftp://x"), 'rpcs[0].url: expected http:// or https:// or ws:// or wss://, got "ftp://x"'),
        (lambda d: d["rpcs"][0].update(url="http://:8545"), 'rpcs[0].url: no host in "http://:8545"'),
        (lambda d: d["clients"][0].update(url="ws://h:notaport"), "clients[0].url: invalid URL \"ws://h:notaport\": Port could not be cast to integer value as 'notaport'"),
        (lambda d: d["clients"][0].pop("url"), "clients[0].url: missing (required)"),
        (lambda d: d.pop("accounts"), "accounts: missing (at least one [[accounts]] entry is required)"),
    ],
)  # fmt: skip
def test_each_bad_value_gets_one_clear_message(mutate: Any, expected: str) -> None:
    data = minimal()
    mutate(data)
    assert only_problem(data) == expected


# ---------------------------------------------------------------- signer URLs


@pytest.mark.parametrize(
    ("url", "scheme"),
    [("vsock://16:5000", "vsock"), ("unix:///run/e.sock", "unix"), ("tcp://127.0.0.1:7000", "tcp")],
)
def test_the_three_signer_url_forms_are_accepted(url: str, scheme: str) -> None:
    data = minimal()
    data["signer"]["url"] = url
    assert config_from_dict(data).signer.endpoint.scheme == scheme


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("vsock://16", "expected vsock://CID:PORT"),
        ("vsock://x:5000", "CID must be an integer"),
        ("vsock://16:port", "port must be an integer"),
        ("unix://relative.sock", "must be absolute"),
        ("tcp://127.0.0.1", "expected tcp://host:port"),
        ("tcp://127.0.0.1:70000", "out of range"),
        ("http://127.0.0.1:7000", "unknown scheme"),
        ("/run/e.sock", "expected vsock://CID:PORT, unix:///path or tcp://host:port"),
    ],
)
def test_bad_signer_urls_say_what_is_wrong(url: str, fragment: str) -> None:
    data = minimal()
    data["signer"]["url"] = url
    message = only_problem(data)
    assert message.startswith("signer.url: ")
    assert fragment in message


def test_attestation_needs_both_root_and_pcr0() -> None:
    data = minimal()
    data["signer"]["attestation_root"] = "root.pem"
    assert only_problem(data) == "signer.pcr0: attestation needs both attestation_root and pcr0"
    data["signer"]["pcr0"] = "ab" * 48
    config = config_from_dict(data, base_dir=Path("/etc/b"))
    assert config.signer.attestation_root == Path("/etc/b/root.pem")
    assert config.signer.pcr0 == "ab" * 48
    data["signer"]["pcr0"] = "ab"
    assert only_problem(data).startswith("signer.pcr0: expected 96 hex digits")


def test_the_pinned_policy_hash_and_mode_are_checked_by_key_path() -> None:
    data = minimal()
    data["signer"]["policy_hash"] = "0x1234"
    assert only_problem(data).startswith("signer.policy_hash: expected 0x and 64 hex digits")
    data["signer"]["policy_hash"] = "0x" + "AB" * 32
    assert config_from_dict(data).signer.policy_hash == "0x" + "ab" * 32
    data["signer"]["mode"] = "prod"
    assert only_problem(data) == "signer.mode: expected 'dev' or 'nitro', got 'prod'"
    data["signer"]["mode"] = "nitro"  # without attestation pins: an unattested signer
    assert only_problem(data).startswith('signer.mode: mode = "nitro" needs attestation_root')
    data["signer"]["attestation_root"] = "root.pem"
    data["signer"]["pcr0"] = "ab" * 48
    assert config_from_dict(data).signer.mode == "nitro"


# ---------------------------------------------------------------- accounts and keys


def test_addresses_are_accepted_checksummed_or_lowercase_and_stored_checksummed() -> None:
    data = minimal()
    data["accounts"] = [{"address": DEV_ADDRESS.lower()}]
    assert config_from_dict(data).accounts[0].address == DEV_ADDRESS
    assert checksum_address(DEV_ADDRESS.lower()) == DEV_ADDRESS


def test_a_wrong_checksum_is_refused() -> None:
    data = minimal()
    data["accounts"][0]["address"] = DEV_ADDRESS.replace("f39F", "F39F")
    assert only_problem(data) == (
        f"accounts[0].address: bad EIP-55 checksum (expected {DEV_ADDRESS}, "
        "or write it all lowercase)"
    )


def test_duplicate_and_malformed_accounts_are_refused() -> None:
    data = minimal()
    data["accounts"] += [{"address": DEV_ADDRESS.lower()}, {"address": "0x1234"}]
    assert problems(data) == [
        "accounts[1].address: duplicate account (also accounts[0])",
        'accounts[2].address: expected 0x followed by 40 hex digits, got "0x1234"',
    ]


@pytest.mark.parametrize("field", ["private_key", "key", "secret", "mnemonic", "privateKey"])
def test_key_looking_fields_are_refused_because_keys_live_in_the_signer(field: str) -> None:
    data = minimal()
    data["accounts"][0][field] = "whatever"
    assert only_problem(data) == (
        f"accounts[0].{field}: not allowed: keys live in the signer "
        "(python -m enclave --key-file), never in this file"
    )


def test_a_private_key_pasted_anywhere_is_refused_without_echoing_it() -> None:
    data = minimal()
    data["accounts"][0]["address"] = DEV_KEY
    data["journal"]["path"] = DEV_KEY[2:]
    found = problems(data)
    assert found == [
        "accounts[0].address: looks like a private key (32 bytes of hex): keys live in the "
        "signer (python -m enclave --key-file), never in this file",
        "journal.path: looks like a private key (32 bytes of hex): keys live in the signer "
        "(python -m enclave --key-file), never in this file",
    ]
    assert not any(DEV_KEY[2:] in p for p in found)


def test_a_hex_api_token_is_not_mistaken_for_a_private_key() -> None:
    data = minimal()
    data["api"]["tokens"] = ["ab" * 32]
    assert config_from_dict(data).api.tokens == ("ab" * 32,)


# ---------------------------------------------------------------- files and check-config


def test_file_level_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("chain_id = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "latin1.toml").write_bytes(b'name = "\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "latin1.toml")
    (tmp_path / "deep.toml").write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "deep.toml")


def test_check_config_prints_every_error_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        MINIMAL.replace('url = "ws://', 'url = "http://').replace("chain_id", "chainid")
    )
    assert run_check_config(path) == 1
    err = capsys.readouterr().err
    assert f"{path}: 3 errors" in err
    assert 'chainid: unknown key (did you mean "chain_id"?)' in err
    assert "chain_id: missing (required)" in err
    assert 'clients[0].url: expected ws:// or wss://, got "http://127.0.0.1:8545"' in err


def test_check_config_summarises_a_valid_file_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_check_config(REPO / "config/demo.toml") == 0
    out = capsys.readouterr().out
    assert "demo.toml: OK" in out
    assert "clients (3): a=ws://127.0.0.1:8545" in out
    assert "metrics: http://127.0.0.1:9650/metrics" in out


# ---------------------------------------------------------------- [[api.tenants]]

TENANT_A = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TENANT_B = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def with_tenants(*tenants: dict[str, Any], tokens: bool = True) -> dict[str, Any]:
    data = minimal()
    if not tokens:
        data["api"].pop("tokens")
    data["api"]["tenants"] = list(tenants)
    return data


def test_tenants_load_with_lowercase_accounts_and_tokens_become_optional() -> None:
    data = with_tenants(
        {"name": "bot-a", "token": "a" * 64, "accounts": [TENANT_A]},
        {"name": "bot-b", "token": "token-b", "accounts": [TENANT_B.lower()]},
        tokens=False,
    )
    data["api"]["max_connections_per_token"] = 8
    api = config_from_dict(data).api
    assert api.tokens == ()
    assert [(t.name, t.token, t.accounts) for t in api.tenants] == [
        ("bot-a", "a" * 64, (TENANT_A.lower(),)),  # 64 hex digits: a token, not a private key
        ("bot-b", "token-b", (TENANT_B.lower(),)),
    ]
    assert api.max_connections_per_token == 8
    assert config_from_dict(minimal()).api.max_connections_per_token == 256


@pytest.mark.parametrize(
    ("tenants", "expected"),
    [
        ([{"name": "a", "token": "t1", "accounts": [TENANT_A]}, {"name": "b", "token": "t2", "accounts": [TENANT_A]}],
         f"api.tenants[1].accounts[0]: {TENANT_A} already belongs to api.tenants[0] (an account has one tenant)"),
        ([{"name": "a", "token": "t1", "accounts": [TENANT_A]}, {"name": "a", "token": "t2", "accounts": [TENANT_B]}],
         "api.tenants[1].name: duplicate tenant name (also api.tenants[0])"),
        ([{"name": "a", "token": "t1", "accounts": [TENANT_A]}, {"name": "b", "token": "t1", "accounts": [TENANT_B]}],
         "api.tenants[1].token: same token as api.tenants[0]"),
        ([{"name": "a", "token": "t/1", "accounts": [TENANT_A]}],
         'api.tenants[0].token: must not contain "/", "?" or "#" (clients may send it as the URL path)'),
        ([{"name": "a", "token": "t1", "accounts": []}], "api.tenants[0].accounts: needs at least one account"),
        ([{"name": "a", "token": "t1", "accounts": ["0x12"]}],
         'api.tenants[0].accounts[0]: expected 0x followed by 40 hex digits, got "0x12"'),
        ([{"name": "a", "token": "t1"}], "api.tenants[0].accounts: missing (required)"),
        ([{"name": "a", "token": "t1", "accounts": [TENANT_A], "acounts": []}],
         'api.tenants[0].acounts: unknown key (did you mean "accounts"?)'),
        ([{"name": "a", "token": "change-me", "accounts": [TENANT_A]}],
         "api.tenants[0].token: is also in api.tokens (full access)"),
    ],
)  # fmt: skip
def test_each_bad_tenant_is_reported_with_its_key_path(
    tenants: list[dict[str, Any]], expected: str
) -> None:
    data = with_tenants(*tenants)
    data["api"]["tokens"] = ["change-me"]
    assert only_problem(data) == expected


def test_render_config_writes_tenants_that_load_back() -> None:
    from broadcaster.settings import render_config

    text = render_config(
        chain_id=1,
        clients=[("a", "ws://127.0.0.1:1")],
        rpcs=[("a", "http://127.0.0.1:1")],
        signer_url="unix:///tmp/x.sock",
        accounts=[TENANT_A],
        api_listen="127.0.0.1:2",
        tokens=[],
        tenants=[("bot-a", "tok-a", [TENANT_A])],
        max_connections_per_token=3,
        metrics_listen="127.0.0.1:3",
        journal_path="j.db",
    )
    api = parse_config(text).api
    assert api.tokens == () and api.max_connections_per_token == 3
    assert [(t.name, t.accounts) for t in api.tenants] == [("bot-a", (TENANT_A.lower(),))]

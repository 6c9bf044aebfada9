"""Reading the service's one TOML configuration file (DESIGN.md section 7) into its values.

:func:`load_config` reads the file with the standard library's :mod:`tomllib` and checks *all* of
it before giving up: a :class:`ConfigError` carries every :class:`ConfigProblem` found, each with
its key path (``clients[1].url``; array indices count from 0, as in TOML tools and jq). Unknown
keys are errors (a typo must never silently fall back to a default) with a "did you mean" hint.

Private keys never live in this file: they live in the signer (``python -m enclave --key-file``).
A key named like a secret (``private_key``, ``mnemonic``...) or a value that looks like a 32-byte
private key is refused with a message saying so. ``config/broadcaster.example.toml`` documents
every key; ``broadcaster check-config FILE`` (:mod:`broadcaster.cli.check_config`) prints
the result.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sha3  # safe-pysha3: keccak256 for the EIP-55 checksum

from broadcaster.scheduling import SLICE_MAX_US, SLICE_MIN_US
from broadcaster.settings.model import (
    DEFAULT_FINALITY_DEPTH,
    DEFAULT_SLICE_US,
    MIN_BUMP_PERCENT,
    RPC_KINDS,
    AccountConfig,
    ApiConfig,
    AuditConfig,
    ClientConfig,
    Config,
    ConfigError,
    ConfigProblem,
    CpuConfig,
    FeesConfig,
    HaConfig,
    HeadsConfig,
    JournalConfig,
    ListenAddress,
    MetricsConfig,
    RoutingConfig,
    RpcConfig,
    SignerConfig,
    TenantConfig,
)
from broadcaster.settings.reader import ConfigReader, quote
from signer_client.endpoints import parse_endpoint

__all__ = ["checksum_address", "config_from_dict", "load_config", "parse_config"]

# ---------------------------------------------------------------- value checks (pure)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_POLICY_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_PCR0 = re.compile(r"(0x)?[0-9a-fA-F]{96}")


@functools.lru_cache(maxsize=16_384)
def checksum_address(address: str) -> str:
    """EIP-55 mixed-case checksum of a ``0x`` + 40-hex address.

    Cached: every intent and every answer about one names its addresses, a handful of senders
    and recipients account for nearly all of them, and the keccak costs ~10 µs each time.
    """
    lower = address[2:].lower()
    digest: str = sha3.keccak_256(lower.encode()).hexdigest()
    return "0x" + "".join(
        c.upper() if int(d, 16) >= 8 else c for c, d in zip(lower, digest, strict=False)
    )


def _listen(text: str) -> ListenAddress | str:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        return f'expected "host:port", got {quote(text)}'
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return f'an IPv6 host needs brackets ("[::1]:9650"), got {quote(text)}'
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        return f"port must be 1..65535, got {quote(port_text)}"
    return ListenAddress(host, int(port_text))


def _url(text: str, schemes: tuple[str, ...]) -> str | None:
    """``None`` when ``text`` is a URL with one of ``schemes``, a host and a valid port."""
    expected = " or ".join(f"{s}://" for s in schemes)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        return f"invalid URL {quote(text)}: {exc}"
    if parts.scheme not in schemes:
        return f"expected {expected}, got {quote(text)}"
    if not parts.hostname:
        return f"no host in {quote(text)}"
    if port == 0:
        return f"port must be 1..65535, got {quote(text)}"
    return None


def _address(text: str) -> str:
    """The checksummed address, or raise ``ValueError`` saying what is wrong."""
    if re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", text):
        raise ValueError(
            "this is 32 bytes, a private key, not an address: keys live in the signer, never in "
            "this file (treat that key as exposed)"
        )
    if not _ADDRESS.fullmatch(text):
        raise ValueError(f"expected 0x followed by 40 hex digits, got {quote(text)}")
    checksummed = checksum_address(text)
    if text != checksummed and text[2:] != text[2:].lower():
        raise ValueError(f"bad EIP-55 checksum (expected {checksummed}, or write it all lowercase)")
    return checksummed


# ---------------------------------------------------------------- the document

_TOP = (
    "chain_id",
    "fork_choice",
    "finality_depth",
    "clients",
    "rpcs",
    "signer",
    "accounts",
    "fees",
    "api",
    "metrics",
    "journal",
    "heads",
    "cpu",
    "routing",
    "ha",
    "audit",
)


def _entries(
    r: ConfigReader, data: dict[str, Any], key: str, allowed: tuple[str, ...]
) -> list[Any]:
    """``[[key]]`` entries as ``(path, table)`` pairs, after checking their keys."""
    out = []
    for index, entry in enumerate(r.array_of_tables(data, key)):
        path = f"{key}[{index}]"
        r.known_keys(entry, path, allowed)
        out.append((path, entry))
    return out


def _endpoints(
    r: ConfigReader,
    data: dict[str, Any],
    key: str,
    schemes: tuple[str, ...],
    extra: tuple[str, ...] = (),
) -> list[Any]:
    """``(name, url)`` per entry; with ``extra`` keys allowed, ``((path, entry), (name, url))``."""
    result: list[Any] = []
    seen: dict[str, str] = {}
    for path, entry in _entries(r, data, key, ("name", "url", *extra)):
        name = r.string(entry, "name", path)
        url = r.string(entry, "url", path)
        if name is not None:
            if not _NAME.fullmatch(name):
                r.problem(
                    f"{path}.name",
                    f"use 1-64 letters, digits, '_', '.', '-' (it becomes a metric label), "
                    f"got {quote(name)}",
                )
            elif name in seen:
                r.problem(f"{path}.name", f"duplicate name {quote(name)} (also {seen[name]}.name)")
            else:
                seen[name] = path
        if url is not None and (error := _url(url, schemes)) is not None:
            r.problem(f"{path}.url", error)
        if name is not None and url is not None:
            result.append(((path, entry), (name, url)) if extra else (name, url))
    return result


def _rpcs(r: ConfigReader, data: dict[str, Any]) -> list[RpcConfig]:
    """``[[rpcs]]``: name, url, ``kind`` (section 5a) and optional ``auth``."""
    named = _endpoints(r, data, "rpcs", ("http", "https", "ws", "wss"), ("kind", "auth"))
    out: list[RpcConfig] = []
    for (path, entry), (name, url) in named:
        kind = r.choice(entry, "kind", path, RPC_KINDS, default="public")
        auth = r.choice(entry, "auth", path, ("flashbots", "none"), default="none")
        if kind is None or auth is None:
            continue
        if auth == "flashbots" and kind == "public":
            r.problem(f"{path}.auth", 'only private and builder endpoints take auth = "flashbots"')
            continue
        if auth == "flashbots" and not url.startswith(("http://", "https://")):
            # X-Flashbots-Signature signs each request body: an HTTP header per request, which a
            # websocket (headers only at its handshake) cannot carry.
            r.problem(f"{path}.auth", 'auth = "flashbots" needs an http(s):// url')
            continue
        out.append(
            RpcConfig(
                name,
                url,
                "builder" if kind == "builder" else "private" if kind == "private" else "public",
                "flashbots" if auth == "flashbots" else None,
            )
        )
    return out


def _signer(r: ConfigReader, table: dict[str, Any] | None, base: Path) -> SignerConfig | None:
    url = r.string(table, "url", "signer")
    endpoint = None
    if url is not None:
        try:
            endpoint = parse_endpoint(url)
        except ValueError as exc:
            r.problem("signer.url", str(exc))
    timeout = r.number(table, "timeout_seconds", "signer", default=2.0, positive=True)
    connect = r.number(table, "connect_timeout_seconds", "signer", default=2.0, positive=True)
    in_flight = r.integer(table, "max_in_flight", "signer", default=256, low=1, high=65536)
    root = r.string(table, "attestation_root", "signer", required=False)
    pcr0 = r.string(table, "pcr0", "signer", required=False)
    if pcr0 is not None and not _PCR0.fullmatch(pcr0):
        r.problem("signer.pcr0", "expected 96 hex digits (the enclave image's SHA-384 PCR0)")
        pcr0 = None
    if (root is None) != (pcr0 is None) and not r.has_problem("signer.pcr0"):
        missing = "pcr0" if root is not None else "attestation_root"
        r.problem(f"signer.{missing}", "attestation needs both attestation_root and pcr0")
    policy_hash = r.string(table, "policy_hash", "signer", required=False)
    if policy_hash is not None and not _POLICY_HASH.fullmatch(policy_hash):
        r.problem("signer.policy_hash", "expected 0x and 64 hex digits (hello's policy_hash)")
        policy_hash = None
    mode = r.string(table, "mode", "signer", required=False)
    if mode is not None and mode not in ("dev", "nitro"):
        r.problem("signer.mode", f"expected 'dev' or 'nitro', got {mode!r}")
        mode = None
    if mode == "nitro" and (root is None or pcr0 is None) and not r.has_problem("signer.pcr0"):
        r.problem(
            "signer.mode",
            'mode = "nitro" needs attestation_root and pcr0: an unattested signer proves nothing',
        )
    if url is None or endpoint is None or timeout is None or connect is None or in_flight is None:
        return None
    return SignerConfig(
        url=url,
        endpoint=endpoint,
        timeout_seconds=timeout,
        connect_timeout_seconds=connect,
        max_in_flight=in_flight,
        attestation_root=None if root is None else base / root,
        pcr0=None if pcr0 is None else pcr0.removeprefix("0x").lower(),
        policy_hash=None if policy_hash is None else policy_hash.lower(),
        mode=mode,
    )


def _accounts(r: ConfigReader, data: dict[str, Any]) -> list[AccountConfig]:
    out: list[AccountConfig] = []
    seen: dict[str, str] = {}
    for path, entry in _entries(r, data, "accounts", ("address",)):
        text = r.string(entry, "address", path)
        if text is None or r.has_problem(f"{path}.address"):  # e.g. flagged as a private key
            continue
        try:
            address = _address(text)
        except ValueError as exc:
            r.problem(f"{path}.address", str(exc))
            continue
        if address in seen:
            r.problem(f"{path}.address", f"duplicate account (also {seen[address]})")
            continue
        seen[address] = path
        out.append(AccountConfig(address))
    return out


def _fees(r: ConfigReader, table: dict[str, Any] | None) -> FeesConfig | None:
    bump = r.integer(table, "bump_percent", "fees", default=MIN_BUMP_PERCENT, low=MIN_BUMP_PERCENT)
    tip = r.integer(table, "priority_fee_wei", "fees", default=1_000_000_000, low=0)
    cap = r.integer(table, "max_fee_cap_wei", "fees", required=False, low=1)
    if cap is not None and tip is not None and cap < tip:
        r.problem("fees.max_fee_cap_wei", f"is below fees.priority_fee_wei ({tip})")
    presign = r.boolean(table, "presign_replacements", "fees", True)
    gap_fill = r.integer(table, "max_gap_fill", "fees", default=4, low=0, high=1024)
    if bump is None or tip is None or gap_fill is None:
        return None
    return FeesConfig(bump, tip, cap, presign, gap_fill)


def _cpu(r: ConfigReader, table: dict[str, Any] | None) -> CpuConfig | None:
    pinning = r.int_list(table, "pinning", "cpu", low=0, high=4095)
    if pinning is not None and len(set(pinning)) != len(pinning):
        r.problem("cpu.pinning", f"lists a CPU twice: {pinning}")
    slice_us = r.integer(
        table, "slice_us", "cpu", default=DEFAULT_SLICE_US, low=0, high=SLICE_MAX_US
    )
    if slice_us is not None and 0 < slice_us < SLICE_MIN_US:
        r.problem(
            "cpu.slice_us", f"must be 0 (the kernel's default) or {SLICE_MIN_US}..{SLICE_MAX_US}"
        )
        slice_us = None
    yield_after = r.boolean(table, "yield_after_reaction", "cpu", True)
    if pinning is None or slice_us is None:
        return None
    return CpuConfig(tuple(pinning), slice_us or None, yield_after)


def _token_problem(token: str) -> str | None:
    if not token.strip() or token != token.strip() or " " in token:
        return "must be non-empty, without spaces"
    if "/" in token or "?" in token or "#" in token:
        return 'must not contain "/", "?" or "#" (clients may send it as the URL path)'
    return None


def _tenants(r: ConfigReader, table: dict[str, Any] | None) -> list[TenantConfig] | None:
    """``[[api.tenants]] name, token, accounts``; an account belongs to one tenant at most (an
    intent's owner is the tenant of its sender)."""
    if table is None or "tenants" not in table:
        return []
    value = table["tenants"]
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        r.problem("api.tenants", "expected [[api.tenants]] tables (name, token, accounts)")
        return None
    out: list[TenantConfig] = []
    names: dict[str, str] = {}
    owners: dict[str, str] = {}
    ok = True
    for index, entry in enumerate(value):
        path = f"api.tenants[{index}]"
        r.known_keys(entry, path, ("name", "token", "accounts"))
        name = r.string(entry, "name", path)
        token = r.string(entry, "token", path)
        accounts = r.string_list(entry, "accounts", path)
        if name is not None:
            if not _NAME.fullmatch(name):
                r.problem(f"{path}.name", f"expected letters, digits, _ . - (got {quote(name)})")
            elif name in names:
                r.problem(f"{path}.name", f"duplicate tenant name (also {names[name]})")
            names.setdefault(name, path)
        if token is not None and (problem := _token_problem(token)) is not None:
            r.problem(f"{path}.token", problem)
        checked: list[str] = []
        if accounts is not None:
            if not accounts:
                r.problem(f"{path}.accounts", "needs at least one account")
            for i, text in enumerate(accounts):
                try:
                    address = _address(text).lower()
                except ValueError as exc:
                    r.problem(f"{path}.accounts[{i}]", str(exc))
                    continue
                if address in owners:
                    r.problem(
                        f"{path}.accounts[{i}]",
                        f"{text} already belongs to {owners[address]} (an account has one tenant)",
                    )
                    continue
                owners[address] = path
                checked.append(address)
        if name is None or token is None or accounts is None:
            ok = False
            continue
        out.append(TenantConfig(name, token, tuple(checked)))
    return out if ok else None


def _api(r: ConfigReader, table: dict[str, Any] | None) -> ApiConfig | None:
    listen = r.parsed(table, "listen", "api", _listen)
    tenants = _tenants(r, table)
    tokens: list[str] | None = []
    if table is not None and ("tokens" in table or not tenants):
        tokens = r.string_list(table, "tokens", "api")
    if tokens is not None:
        if not tokens and not tenants and table is not None:
            r.problem(
                "api.tokens",
                "needs at least one token, or [[api.tenants]] (clients send it as a bearer token)",
            )
        for index, token in enumerate(tokens):
            if (problem := _token_problem(token)) is not None:
                r.problem(f"api.tokens[{index}]", problem)
        if len(set(tokens)) != len(tokens):
            r.problem("api.tokens", "contains duplicates")
        for index, tenant in enumerate(tenants or ()):
            if tenant.token in tokens:
                r.problem(f"api.tenants[{index}].token", "is also in api.tokens (full access)")
        seen: dict[str, int] = {}
        for index, tenant in enumerate(tenants or ()):
            if tenant.token in seen:
                r.problem(
                    f"api.tenants[{index}].token",
                    f"same token as api.tenants[{seen[tenant.token]}]",
                )
            seen.setdefault(tenant.token, index)
    size = r.integer(table, "max_message_bytes", "api", default=1 << 20, low=1024, high=64 << 20)
    rate = r.number(table, "rate_per_token", "api", default=10_000.0, positive=True)
    burst = r.integer(table, "rate_burst", "api", default=20_000, low=1)
    per_token = r.integer(
        table, "max_connections_per_token", "api", default=256, low=1, high=1_000_000
    )
    if listen is None or tokens is None or size is None or rate is None or burst is None:
        return None
    if tenants is None or per_token is None:
        return None
    return ApiConfig(listen, tuple(tokens), size, rate, burst, tuple(tenants), per_token)


def _journal(r: ConfigReader, table: dict[str, Any] | None, base: Path) -> JournalConfig | None:
    if table is None:
        return None
    has_path, has_url = "path" in table, "url" in table
    if has_path and has_url:
        r.problem("journal", "set either path (SQLite) or url (PostgreSQL), not both")
        return None
    if has_url:
        url = r.string(table, "url", "journal")
        if url is None:
            return None
        if not url.startswith(("postgresql://", "postgres://")):
            # Only the scheme is shown: the rest may hold a password.
            scheme = url.partition("://")[0] if "://" in url else url[:0]
            shown = f"scheme {quote(scheme[:20])}" if scheme else "no scheme"
            r.problem("journal.url", f"expected a postgresql:// URL, got {shown}")
            return None
        try:  # (libpq checks the rest; a multi-host "h1:5432,h2:5432" is fine)
            urlsplit(url)
        except ValueError as exc:
            r.problem("journal.url", f"is not a valid URL ({exc})")
            return None
        return JournalConfig(url=url)
    path = r.string(table, "path", "journal")
    if path == "":
        r.problem("journal.path", "must not be empty")
    if not path:
        return None
    return JournalConfig(path=base / path)


def _ha(
    r: ConfigReader, table: dict[str, Any] | None, journal: JournalConfig | None
) -> HaConfig | None:
    if table is None:
        return None
    instance = r.string(table, "instance", "ha")
    if instance is not None and (not instance.strip() or len(instance) > 64):
        r.problem("ha.instance", "must be a non-empty name of at most 64 characters")
    lease = r.number(table, "lease_seconds", "ha", default=2.0, positive=True)
    if lease is not None and not 0.2 <= lease <= 300:
        r.problem("ha.lease_seconds", f"must be between 0.2 and 300 seconds, got {lease:g}")
    if journal is not None and journal.url is None:
        r.problem("ha", 'needs a PostgreSQL journal ([journal] url = "postgresql://...")')
    if instance is None or lease is None:
        return None
    return HaConfig(instance=instance, lease_seconds=float(lease))


def _build(r: ConfigReader, data: dict[str, Any], base: Path) -> Config | None:
    r.known_keys(data, "", _TOP)
    chain_id = r.integer(data, "chain_id", "", low=1, high=(1 << 64) - 1)
    fork = r.choice(data, "fork_choice", "", ("latest", "first-seen"), default="latest")
    depth = r.integer(data, "finality_depth", "", default=DEFAULT_FINALITY_DEPTH, low=1, high=8192)
    clients = _endpoints(r, data, "clients", ("ws", "wss"))
    rpcs = _rpcs(r, data)
    routing_t = r.table(data, "routing", ("private",), required=False)
    private_default = r.boolean(routing_t, "private", "routing", default=False)
    if private_default and not any(rpc.kind != "public" for rpc in rpcs) and rpcs:
        r.problem(
            "routing.private",
            'is true but no [[rpcs]] has kind = "private" or "builder": every intent '
            "would be refused",
        )
    if rpcs and not private_default and all(rpc.kind != "public" for rpc in rpcs):
        r.problem(
            "routing.private",
            'no [[rpcs]] has kind = "public": set private = true (a builders/private-only '
            'deployment), or every intent without "private": true would be refused',
        )
    signer = _signer(r, r.table(data, "signer", _SIGNER), base)
    accounts = _accounts(r, data)
    fees = _fees(r, r.table(data, "fees", _FEES, required=False))
    api = _api(r, r.table(data, "api", _API))
    metrics_t = r.table(data, "metrics", ("listen",))
    metrics = r.parsed(metrics_t, "listen", "metrics", _listen)
    journal_t = r.table(data, "journal", ("path", "url"))
    journal = _journal(r, journal_t, base)
    ha = _ha(r, r.table(data, "ha", ("instance", "lease_seconds"), required=False), journal)
    heads_t = r.table(data, "heads", ("watchdog_seconds",), required=False)
    watchdog = r.number(heads_t, "watchdog_seconds", "heads", default=30.0, positive=False)
    cpu = _cpu(r, r.table(data, "cpu", _CPU, required=False))
    audit_t = r.table(data, "audit", _AUDIT, required=False)
    # The audit copy lives in the journal, SQLite or PostgreSQL, keyed by log (each [ha]
    # instance's enclave keeps its own). Off by default on PostgreSQL: an operator turns it on.
    on_postgres = journal is not None and journal.url is not None
    audit_on = r.boolean(audit_t, "enabled", "audit", not on_postgres)
    audit = AuditConfig(
        enabled=audit_on,
        stop_signing_on_foreign=r.boolean(audit_t, "stop_signing_on_foreign", "audit", False),
        poll_seconds=r.number(audit_t, "poll_seconds", "audit", default=1.0, positive=True) or 1.0,
    )
    if api is not None and metrics is not None and api.listen == metrics:
        r.problem("metrics.listen", f"same address as api.listen ({metrics})")
    if r.problems:
        return None
    assert chain_id is not None and fork is not None and depth is not None
    assert signer is not None and fees is not None and api is not None
    assert metrics is not None and journal is not None and cpu is not None
    return Config(
        chain_id=chain_id,
        fork_choice="latest" if fork == "latest" else "first-seen",
        finality_depth=depth,
        clients=tuple(ClientConfig(n, u) for n, u in clients),
        rpcs=tuple(rpcs),
        signer=signer,
        accounts=tuple(accounts),
        fees=fees,
        api=api,
        metrics=MetricsConfig(metrics),
        journal=journal,
        heads=HeadsConfig(watchdog or None),
        cpu=cpu,
        routing=RoutingConfig(private_default),
        ha=ha,
        audit=audit,
    )


_SIGNER = (
    "url",
    "policy_hash",
    "mode",
    "timeout_seconds",
    "connect_timeout_seconds",
    "max_in_flight",
    "attestation_root",
    "pcr0",
)
_FEES = (
    "bump_percent",
    "priority_fee_wei",
    "max_fee_cap_wei",
    "presign_replacements",
    "max_gap_fill",
)
_AUDIT = ("enabled", "stop_signing_on_foreign", "poll_seconds")
_CPU = ("pinning", "slice_us", "yield_after_reaction")
_API = (
    "listen",
    "tokens",
    "tenants",
    "max_message_bytes",
    "rate_per_token",
    "rate_burst",
    "max_connections_per_token",
)


def _section_order(problem: tuple[str, str]) -> int:
    """Problems grouped by top-level section, in the order the example file has them."""
    top = re.split(r"[.\[]", problem[0], maxsplit=1)[0]
    return _TOP.index(top) if top in _TOP else len(_TOP)


def parse_config(text: str, *, base_dir: Path | None = None, source: str | None = None) -> Config:
    """Parse TOML text; relative paths in it resolve against ``base_dir`` (default: cwd)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem("", f"not valid TOML: {exc}")], source) from exc
    except RecursionError as exc:  # tomllib recurses on nested arrays / inline tables
        raise ConfigError([ConfigProblem("", "not valid TOML: nested too deeply")], source) from exc
    return config_from_dict(data, base_dir=base_dir, source=source)


def config_from_dict(
    data: dict[str, Any], *, base_dir: Path | None = None, source: str | None = None
) -> Config:
    """Check an already-parsed TOML document (``tomllib``'s dict) and build the :class:`Config`."""
    reader = ConfigReader()
    reader.scan_secrets(data)
    config = _build(reader, data, base_dir if base_dir is not None else Path())
    if reader.problems or config is None:
        problems = sorted(reader.problems, key=_section_order)
        raise ConfigError([ConfigProblem(p, m) for p, m in problems], source)
    return config


def load_config(path: str | Path) -> Config:
    """Read and check one TOML file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem("", f"cannot read: {exc.strerror or exc}")], str(path)
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = ConfigProblem("", f"not UTF-8 (byte {exc.start}): TOML files are UTF-8")
        raise ConfigError([problem], str(path)) from exc
    config = parse_config(text, base_dir=path.resolve().parent, source=str(path))
    return dataclasses.replace(config, source=path)

"""Writing a valid config file from values (the demo and the tests render theirs, real ports in)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

# ---------------------------------------------------------------- writing a config


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # JSON string escapes are valid TOML basic strings
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def render_config(
    *,
    chain_id: int,
    clients: Sequence[tuple[str, str]],
    rpcs: Sequence[tuple[str, str] | tuple[str, str, str] | tuple[str, str, str, str]],
    signer_url: str,
    accounts: Sequence[str],
    api_listen: str,
    tokens: Sequence[str],
    metrics_listen: str,
    journal_path: str | Path,
    fork_choice: str = "latest",
    finality_depth: int = 64,
    bump_percent: int = 10,
    watchdog_seconds: float | None = None,
    header: str = "",
    presign_replacements: bool = True,
    rate_per_token: float | None = None,
    rate_burst: int | None = None,
    tenants: Sequence[tuple[str, str, Sequence[str]]] = (),
    max_connections_per_token: int | None = None,
    routing_private: bool | None = None,
    journal_url: str | None = None,
    ha_instance: str | None = None,
    lease_seconds: float | None = None,
    stop_signing_on_foreign: bool | None = None,
    audit_enabled: bool | None = None,
) -> str:
    """A config file (TOML text) from values: ``clients``/``rpcs`` are ``(name, url)`` pairs
    (an rpc may be ``(name, url, kind)``, section 5a; ``routing_private``: ``[routing] private``),
    ``tenants`` ``(name, token, accounts)`` triples (``tokens`` may then be empty).

    What it writes is what :func:`broadcaster.settings.loader.parse_config` reads (a test
    round-trips it).
    """
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [
        f"chain_id = {_toml(chain_id)}",
        f"fork_choice = {_toml(fork_choice)}",
        f"finality_depth = {_toml(finality_depth)}",
    ]
    for section, pairs in (("clients", clients), ("rpcs", rpcs)):
        for name, url, *rest in pairs:
            lines += ["", f"[[{section}]]", f"name = {_toml(name)}", f"url = {_toml(url)}"]
            lines += [f"kind = {_toml(k)}" for k in rest[:1]]
            lines += [f"auth = {_toml(a)}" for a in rest[1:2] if a]  # (name, url, kind, auth)
    lines += ["", "[signer]", f"url = {_toml(signer_url)}"]
    for address in accounts:
        lines += ["", "[[accounts]]", f"address = {_toml(address)}"]
    lines += ["", "[fees]", f"bump_percent = {_toml(bump_percent)}"]
    if not presign_replacements:
        lines += ["presign_replacements = false"]
    lines += ["", "[api]", f"listen = {_toml(api_listen)}"]
    if tokens or not tenants:
        lines += [f"tokens = {_toml(list(tokens))}"]
    if rate_per_token is not None:
        lines += [f"rate_per_token = {_toml(float(rate_per_token))}"]
    if rate_burst is not None:
        lines += [f"rate_burst = {_toml(rate_burst)}"]
    if max_connections_per_token is not None:
        lines += [f"max_connections_per_token = {_toml(max_connections_per_token)}"]
    for name, token, tenant_accounts in tenants:
        lines += ["", "[[api.tenants]]", f"name = {_toml(name)}", f"token = {_toml(token)}"]
        lines += [f"accounts = {_toml(list(tenant_accounts))}"]
    lines += ["", "[metrics]", f"listen = {_toml(metrics_listen)}"]
    if routing_private is not None:
        lines += ["", "[routing]", f"private = {_toml(routing_private)}"]
    if journal_url is not None:
        lines += ["", "[journal]", f"url = {_toml(journal_url)}"]
    else:
        lines += ["", "[journal]", f"path = {_toml(journal_path)}"]
    if ha_instance is not None:
        lines += ["", "[ha]", f"instance = {_toml(ha_instance)}"]
        if lease_seconds is not None:
            lines += [f"lease_seconds = {_toml(float(lease_seconds))}"]
    if watchdog_seconds is not None:
        lines += ["", "[heads]", f"watchdog_seconds = {_toml(watchdog_seconds)}"]
    if stop_signing_on_foreign is not None or audit_enabled is not None:
        lines += ["", "[audit]"]
        if audit_enabled is not None:
            lines += [f"enabled = {_toml(audit_enabled)}"]
        if stop_signing_on_foreign is not None:
            lines += [f"stop_signing_on_foreign = {_toml(stop_signing_on_foreign)}"]
    return "\n".join(lines) + "\n"

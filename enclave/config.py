"""Configuration of the enclave app: one TOML file (``config/enclave.example.toml``), every key
optional, command-line flags override it. Errors name the key path that is wrong.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

from enclave.policy import PolicyConfig
from signer_client.signing import LocalKey

__all__ = ["ConfigError", "EnclaveConfig", "load_config", "load_keys", "parse_keys"]

KEYS_ENV = "ENCLAVE_KEYS"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class EnclaveConfig:
    listen: str | None = None
    key_file: str | None = None
    mode: str = "dev"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    audit_path: str | None = None
    audit_fsync: bool = False
    audit_before_reply: bool = True
    pki_dir: str | None = None
    pcr0: str | None = None


_POLICY_INTS = (
    "max_value",
    "max_gas",
    "max_fee_per_gas",
    "max_priority_fee_per_gas",
    "bump_percent",
    "burst",
    "nonce_window",
    "max_value_per_window",
    "max_fee_per_blob_gas",
)


def _is_address(a: object) -> bool:
    """``0x`` and 40 hex digits (bytes.fromhex would also skip spaces)."""
    return (
        isinstance(a, str)
        and a.startswith("0x")
        and len(a) == 42
        and all(c in "0123456789abcdefABCDEF" for c in a[2:])
    )


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{path}: expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    raise ConfigError(f"{path}: expected an integer (or a decimal / 0x string), got {value!r}")


def _policy(raw: dict[str, Any]) -> PolicyConfig:
    known = set(PolicyConfig.__dataclass_fields__)
    for key in raw:
        if key not in known:
            raise ConfigError(f"policy.{key}: unknown key")
    kwargs: dict[str, Any] = {}
    if "chain_ids" in raw:
        kwargs["chain_ids"] = tuple(
            _int(c, f"policy.chain_ids[{i}]") for i, c in enumerate(raw["chain_ids"])
        )
    if "allowed_to" in raw:
        addresses = raw["allowed_to"]
        for i, a in enumerate(addresses):
            if not _is_address(a):
                raise ConfigError(f"policy.allowed_to[{i}]: expected a 0x address")
        kwargs["allowed_to"] = tuple(addresses)
    if "allowed_delegates" in raw:
        delegates = raw["allowed_delegates"]
        if not isinstance(delegates, list):
            raise ConfigError("policy.allowed_delegates: expected an array of 0x addresses")
        for i, a in enumerate(delegates):
            if not _is_address(a):
                raise ConfigError(f"policy.allowed_delegates[{i}]: expected a 0x address")
        kwargs["allowed_delegates"] = tuple(delegates)
    if "auth_address" in raw:
        if not _is_address(raw["auth_address"]):
            raise ConfigError("policy.auth_address: expected a 0x address")
        kwargs["auth_address"] = raw["auth_address"]
    for key in _POLICY_INTS:
        if key in raw:
            kwargs[key] = _int(raw[key], f"policy.{key}")
    for key in ("allow_self", "allow_create"):
        if key in raw:
            kwargs[key] = bool(raw[key])
    if "rate_per_second" in raw:
        kwargs["rate_per_second"] = float(raw["rate_per_second"])
    if "value_window_seconds" in raw:
        kwargs["value_window_seconds"] = float(raw["value_window_seconds"])
    if "allowed_selectors" in raw:
        table = raw["allowed_selectors"]
        if not isinstance(table, dict):
            raise ConfigError("policy.allowed_selectors: expected a table of address = [selectors]")
        rules = []
        for to, selectors in table.items():
            path = f"policy.allowed_selectors.{to}"
            if not (isinstance(selectors, list) and all(isinstance(x, str) for x in selectors)):
                raise ConfigError(f"{path}: expected an array of 0x-hex 4-byte selectors")
            rules.append((to, tuple(selectors)))
        kwargs["allowed_selectors"] = tuple(rules)
    try:
        return PolicyConfig(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"policy: {exc}") from exc


def load_config(path: str | None) -> EnclaveConfig:
    if path is None:
        return EnclaveConfig()
    with open(path, "rb") as f:
        try:
            raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    audit = raw.get("audit", {})
    attestation = raw.get("attestation", {})
    for key in raw:
        if key not in ("listen", "key_file", "mode", "policy", "audit", "attestation"):
            raise ConfigError(f"{key}: unknown key")
    mode = str(raw.get("mode", "dev"))
    if mode not in ("dev", "nitro"):
        raise ConfigError("mode: expected 'dev' or 'nitro'")
    return EnclaveConfig(
        listen=raw.get("listen"),
        key_file=raw.get("key_file"),
        mode=mode,
        policy=_policy(raw.get("policy", {})),
        audit_path=audit.get("path"),
        audit_fsync=bool(audit.get("fsync", False)),
        audit_before_reply=bool(audit.get("before_reply", True)),
        pki_dir=attestation.get("pki_dir"),
        pcr0=attestation.get("pcr0") or None,
    )


def load_keys(key_file: str | None, *, allow_env: bool) -> list[LocalKey]:
    """Keys from ``key_file`` (0x-hex, one per line, ``#`` comments) or, in dev, ``$ENCLAVE_KEYS``
    (comma or whitespace separated). Nitro deployments decrypt keys via KMS instead."""
    if key_file is not None:
        with open(key_file, encoding="ascii") as f:
            lines = [line.split("#", 1)[0].strip() for line in f]
        texts = [line for line in lines if line]
    elif allow_env and os.environ.get(KEYS_ENV):
        texts = os.environ[KEYS_ENV].replace(",", " ").split()
    else:
        raise ConfigError(f"no keys: pass --key-file FILE (or set {KEYS_ENV} in dev mode)")
    return parse_keys(texts)


def parse_keys(texts: list[str]) -> list[LocalKey]:
    """0x-hex private keys; errors name the key's position, never its text."""
    keys = []
    for i, text in enumerate(texts, 1):
        try:
            keys.append(LocalKey(text))
        except ValueError as exc:
            raise ConfigError(f"key {i}: {exc}") from None
    if not keys:
        raise ConfigError("the key source holds no keys")
    return keys

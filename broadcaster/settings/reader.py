"""The checking reader behind :mod:`broadcaster.settings.loader`.

:class:`ConfigReader` wraps the parsed TOML document with typed getters that *record* problems
(key path + message) instead of raising, so one pass reports everything wrong with a file.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["ConfigReader", "quote"]


_T = TypeVar("_T")
_MISSING: Any = object()
_SECRET_NAME = re.compile(
    r"(?i)private|secret|mnemonic|seed|passphrase|password|keystore|^(key|keys|pk|priv|sk)$"
)
_SECRET_VALUE = re.compile(r"(0x)?[0-9a-fA-F]{64}")
_TOKEN_PATH = re.compile(r"api\.tokens|api\.tenants\[\d+\]\.token")
_KEYS_ELSEWHERE = "keys live in the signer (python -m enclave --key-file), never in this file"


def quote(value: object) -> str:
    """A value as messages show it, TOML-like (strings in double quotes), cut to a short length."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | list | dict):
        text = json.dumps(_shallow(value), ensure_ascii=False, default=str)
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _shallow(value: object, depth: int = 0) -> object:
    """A bounded copy for :func:`quote`, which shows 60 characters: at most 30 levels, 30 items
    per container and 200 characters per string survive. Serialising an arbitrarily deep value
    whole overflows the C stack of ``json``'s encoder (a segfault, not a RecursionError)."""
    if isinstance(value, str):
        return value[:200]
    if isinstance(value, dict):
        if depth >= 30:
            return "..."
        return {str(k): _shallow(v, depth + 1) for k, v in list(value.items())[:30]}
    if isinstance(value, list):
        if depth >= 30:
            return ["..."]
        return [_shallow(v, depth + 1) for v in value[:30]]
    return value


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_str(v: object) -> bool:
    return isinstance(v, str)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_str_list(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_int_list(v: object) -> bool:
    return isinstance(v, list) and all(_is_int(x) for x in v)


class ConfigReader:
    """Typed getters over the parsed document that record problems instead of raising.

    A getter returns ``None`` when the value is unusable (and says why, once), so one pass finds
    every problem. A table that is absent is passed on as ``None``: its keys then take their
    defaults, and a required one is not reported a second time under the missing table.
    """

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def has_problem(self, path: str) -> bool:
        return any(p == path for p, _ in self.problems)

    def scan_secrets(self, data: dict[str, Any]) -> None:
        """Flag values shaped like a 32-byte private key anywhere (API tokens and the pinned
        policy hash, a keccak256 digest, excepted)."""
        stack: list[tuple[str, object]] = [("", data)]
        while stack:
            path, value = stack.pop()
            if isinstance(value, dict):
                stack.extend((_join(path, str(k)), v) for k, v in value.items())
            elif isinstance(value, list) and path != "api.tokens":
                stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
            elif isinstance(value, str) and _TOKEN_PATH.fullmatch(path):
                continue  # a bearer token may well be 32 random bytes in hex
            elif (
                isinstance(value, str)
                and path != "signer.policy_hash"
                and _SECRET_VALUE.fullmatch(value)
            ):
                self.problem(path, f"looks like a private key (32 bytes of hex): {_KEYS_ELSEWHERE}")

    def known_keys(self, table: dict[str, Any], path: str, allowed: Sequence[str]) -> None:
        for key in table:
            if key in allowed:
                continue
            where = _join(path, key)
            if _SECRET_NAME.search(key):
                if not self.has_problem(where):  # scan_secrets may have flagged its value
                    self.problem(where, f"not allowed: {_KEYS_ELSEWHERE}")
                continue
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f'did you mean "{close[0]}"?' if close else "known keys: " + ", ".join(allowed)
            self.problem(where, f"unknown key ({hint})")

    def _get(self, table: dict[str, Any] | None, key: str, path: str, required: bool) -> Any:
        if table is None:
            return _MISSING
        if key not in table:
            if required:
                self.problem(_join(path, key), "missing (required)")
            return _MISSING
        return table[key]

    def _typed(
        self,
        table: dict[str, Any] | None,
        key: str,
        path: str,
        default: Any,
        kind: str,
        ok: Callable[[object], bool],
        required: bool = True,
    ) -> Any:
        value = self._get(table, key, path, required and default is _MISSING)
        if value is _MISSING:
            return None if default is _MISSING else default
        if not ok(value):
            self.problem(_join(path, key), f"expected {kind}, got {_kind(value)} ({quote(value)})")
            return None
        return value

    def table(
        self, data: dict[str, Any], key: str, allowed: Sequence[str], required: bool = True
    ) -> dict[str, Any] | None:
        value = self._get(data, key, "", False)
        if value is _MISSING:
            if required:
                self.problem(key, f"missing (required table [{key}])")
            return None
        if not isinstance(value, dict):
            self.problem(key, f"expected a table ([{key}]), got {_kind(value)} ({quote(value)})")
            return None
        self.known_keys(value, key, allowed)
        return value

    def array_of_tables(self, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
        value = self._get(data, key, "", False)
        if value is _MISSING:
            self.problem(key, f"missing (at least one [[{key}]] entry is required)")
            return []
        if not isinstance(value, list) or not value:
            got = "an empty array" if value == [] else f"{_kind(value)}"
            self.problem(key, f"expected one or more [[{key}]] tables, got {got}")
            return []
        out = []
        for index, entry in enumerate(value):
            if isinstance(entry, dict):
                out.append(entry)
            else:
                self.problem(f"{key}[{index}]", f"expected a table, got {_kind(entry)}")
        return out

    def string(
        self, table: dict[str, Any] | None, key: str, path: str, required: bool = True
    ) -> str | None:
        result: str | None = self._typed(table, key, path, _MISSING, "a string", _is_str, required)
        return result

    def boolean(self, table: dict[str, Any] | None, key: str, path: str, default: bool) -> bool:
        result = self._typed(table, key, path, default, "true or false", _is_bool, False)
        return bool(result) if result is not None else default

    def integer(
        self,
        table: dict[str, Any] | None,
        key: str,
        path: str,
        *,
        default: Any = _MISSING,
        required: bool = True,
        low: int | None = None,
        high: int | None = None,
    ) -> int | None:
        value = self._typed(table, key, path, default, "an integer", _is_int, required)
        if value is None or value is default:
            return None if value is None else int(value)
        return self._range(_join(path, key), int(value), low, high)

    def number(
        self, table: dict[str, Any] | None, key: str, path: str, *, default: float, positive: bool
    ) -> float | None:
        value = self._typed(table, key, path, default, "a number", _is_number)
        if value is None:
            return None
        if value < 0 or (positive and value == 0):
            bound = "greater than 0" if positive else "at least 0"
            self.problem(_join(path, key), f"must be {bound}, got {quote(value)}")
            return None
        return float(value)

    def _range(self, where: str, value: int, low: int | None, high: int | None) -> int | None:
        if low is not None and value < low:
            self.problem(where, f"must be at least {low}, got {value}")
            return None
        if high is not None and value > high:
            self.problem(where, f"must be at most {high}, got {value}")
            return None
        return value

    def choice(
        self, table: dict[str, Any], key: str, path: str, options: Sequence[str], default: str
    ) -> str | None:
        value = self.string(table, key, path, required=False)
        if value is None:
            return None if self.has_problem(_join(path, key)) else default
        if value not in options:
            listed = " or ".join(f'"{o}"' for o in options)
            self.problem(_join(path, key), f"expected {listed}, got {quote(value)}")
            return None
        return value

    def parsed(
        self, table: dict[str, Any] | None, key: str, path: str, parse: Callable[[str], _T | str]
    ) -> _T | None:
        """A required string turned into a value by ``parse``, which returns an error text."""
        text = self.string(table, key, path)
        if text is None:
            return None
        result = parse(text)
        if isinstance(result, str):
            self.problem(_join(path, key), result)
            return None
        return result

    def string_list(self, table: dict[str, Any] | None, key: str, path: str) -> list[str] | None:
        value: list[str] | None = self._typed(
            table, key, path, _MISSING, "an array of strings", _is_str_list
        )
        return value

    def int_list(
        self, table: dict[str, Any] | None, key: str, path: str, low: int, high: int
    ) -> list[int] | None:
        value: list[int] | None = self._typed(
            table, key, path, [], "an array of integers", _is_int_list
        )
        if value is None:
            return None
        bad = [x for x in value if not low <= x <= high]
        if bad:
            self.problem(_join(path, key), f"values must be {low}..{high}, got {bad}")
            return None
        return value

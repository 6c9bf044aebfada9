"""What the doctor's checks read and what they return.

:class:`Host` is the one seam: every check reads files through ``host.read(...)`` relative to a
filesystem root (``/`` on a real machine, a fixture tree in tests, a bind-mounted host root in a
container) and asks it for the few things that are not files (this process's CPU affinity, its
environment, whether uvloop loads). A missing or unreadable file reads as ``None`` and the check
reports ``unknown``: containers and non-Linux systems hide much of ``/proc`` and ``/sys``, and an
audit must never crash on them.

A :class:`Finding` is one line of the report: a stable check id, a status, the value seen, and a
short *why* an operator can act on at 3 a.m.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Finding",
    "Host",
    "Status",
    "format_cpulist",
    "parse_cpulist",
    "probe_uvloop",
]


class Status(enum.StrEnum):
    """How a check came out; ``fail`` makes ``broadcaster doctor`` exit 1."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result. ``why`` says what it costs and what to do (empty when ``ok``)."""

    id: str
    title: str
    status: Status
    value: str
    why: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "title": self.title,
            "status": str(self.status),
            "value": self.value,
            "why": self.why,
        }


def probe_uvloop() -> str:
    """uvloop's version if it imports and makes a loop (what ``broadcaster run`` does); raises
    :class:`ImportError` (or whatever loop creation raises) otherwise."""
    import uvloop

    loop = uvloop.new_event_loop()
    try:
        kind = type(loop).__module__
    finally:
        loop.close()
    if not kind.startswith("uvloop"):  # pragma: no cover - would mean a broken install
        raise ImportError(f"uvloop.new_event_loop() made a {kind} loop")
    return str(getattr(uvloop, "__version__", "(version unknown)"))


def _own_affinity() -> frozenset[int] | None:
    getter = getattr(os, "sched_getaffinity", None)  # Linux only
    if getter is None:  # pragma: no cover - non-Linux
        return None
    return frozenset(getter(0))


@dataclass(frozen=True, slots=True)
class Host:
    """The machine under audit, as files under ``root`` plus a few injectable probes."""

    root: Path = Path("/")
    affinity: Callable[[], frozenset[int] | None] = _own_affinity
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    uvloop: Callable[[], str] = probe_uvloop

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def read(self, rel: str) -> str | None:
        """The file's text, stripped; ``None`` when it is missing or unreadable."""
        try:
            return self.path(rel).read_text(encoding="utf-8", errors="replace").strip()
        except (OSError, ValueError):
            return None

    def glob(self, pattern: str) -> list[Path]:
        """Paths under the root matching ``pattern`` (relative, e.g. ``sys/class/net/*``), sorted
        naturally (``cpu2`` before ``cpu10``)."""
        try:
            found = list(self.root.glob(pattern.lstrip("/")))
        except OSError:
            return []
        return sorted(found, key=lambda p: [int(t) if t.isdigit() else t for t in _DIGITS(str(p))])

    def status_field(self, name: str) -> str | None:
        """A field of ``/proc/self/status`` (``Cpus_allowed_list``...), or ``None``."""
        text = self.read("proc/self/status")
        if text is None:
            return None
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key == name:
                return value.strip()
        return None

    def allowed_cpus(self) -> frozenset[int] | None:
        """CPUs this process may run on: ``sched_getaffinity``, else ``Cpus_allowed_list``."""
        try:
            cpus = self.affinity()
        except OSError:
            cpus = None
        if cpus is not None:
            return cpus
        listed = self.status_field("Cpus_allowed_list")
        return _cpulist_or_none(listed)

    def online_cpus(self) -> frozenset[int] | None:
        return _cpulist_or_none(self.read("sys/devices/system/cpu/online"))

    def numa_nodes(self) -> dict[int, frozenset[int]] | None:
        """NUMA node id -> its CPUs, from ``/sys/devices/system/node/node*/cpulist``."""
        nodes: dict[int, frozenset[int]] = {}
        for path in self.glob("sys/devices/system/node/node[0-9]*"):
            cpus = _cpulist_or_none(self.read(str(path.relative_to(self.root) / "cpulist")))
            nodes[int(path.name[4:])] = cpus if cpus is not None else frozenset()
        return nodes or None


_DIGITS = re.compile(r"(\d+)").split


def parse_cpulist(text: str) -> frozenset[int]:
    """A kernel CPU list (``0-3,8,10-11``; ``0-7:2/4`` group syntax too; empty or ``(null)``:
    none) as a set. Raises :class:`ValueError` on anything else.

    Format: Documentation/admin-guide/kernel-parameters.rst, "CPU lists".
    """
    text = text.strip()
    cpus: set[int] = set()
    if not text or text == "(null)":
        return frozenset()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        span, _, group = part.partition(":")
        lo_text, dash, hi_text = span.partition("-")
        lo = int(lo_text)
        hi = int(hi_text) if dash else lo
        if hi < lo:
            raise ValueError(f"bad CPU range {part!r}")
        used, size = 1, 1
        if group:
            used_text, _, size_text = group.partition("/")
            used, size = int(used_text), int(size_text)
            if not 0 < used <= size:
                raise ValueError(f"bad CPU group {part!r}")
        cpus.update(c for c in range(lo, hi + 1) if (c - lo) % size < used)
    return frozenset(cpus)


def _cpulist_or_none(text: str | None) -> frozenset[int] | None:
    if text is None:
        return None
    try:
        return parse_cpulist(text)
    except ValueError:
        return None


def format_cpulist(cpus: Iterable[int]) -> str:
    """The inverse of :func:`parse_cpulist` (``{0, 1, 2, 5}`` -> ``0-2,5``); ``none`` if empty."""
    ordered = sorted(set(cpus))
    if not ordered:
        return "none"
    parts: list[str] = []
    start = prev = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(parts)

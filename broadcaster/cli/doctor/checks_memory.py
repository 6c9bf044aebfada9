"""Memory checks: transparent hugepages and swap.

Both turn an ordinary memory access on the event-loop thread into a wait of microseconds to
milliseconds: THP through compaction and khugepaged's page collapsing (the seed's "+50 µs
compaction stalls", 004 §5.1), swap through a disk read on touch.
"""

from __future__ import annotations

import re

from broadcaster.cli.doctor.model import Finding, Host, Status

__all__ = ["check_swap", "check_thp_defrag", "check_thp_enabled", "selected_choice"]

_THP = "sys/kernel/mm/transparent_hugepage"
_MISSING = "file missing (container, non-Linux or kernel without THP)"


def selected_choice(text: str) -> str | None:
    """The bracketed choice of a sysfs selector: ``always [madvise] never`` -> ``madvise``."""
    match = re.search(r"\[([^\]]+)\]", text)
    if match:
        return match.group(1)
    words = text.split()
    return words[0] if len(words) == 1 else None


def _thp_mode(host: Host, name: str) -> str | None:
    text = host.read(f"{_THP}/{name}")
    return None if text is None else selected_choice(text)


def check_thp_enabled(host: Host) -> Finding:
    """``always`` warns: faults may compact and khugepaged collapses pages under the process."""
    title = "transparent hugepages"
    mode = _thp_mode(host, "enabled")
    if mode is None:
        return Finding("thp.enabled", title, Status.UNKNOWN, "unknown", _MISSING)
    if mode == "always":
        return Finding(
            "thp.enabled",
            title,
            Status.WARN,
            mode,
            "Transparent hugepages = always: khugepaged compaction and page collapsing stall the "
            "event loop for tens of µs to ms; set madvise or never "
            f"(echo madvise > /{_THP}/enabled).",
        )
    return Finding("thp.enabled", title, Status.OK, mode)


def check_thp_defrag(host: Host) -> Finding:
    """``defrag = always`` makes a faulting thread compact memory synchronously (direct
    compaction, milliseconds): ``fail`` when THP is ``always`` (every anonymous fault may do it),
    ``warn`` when ``madvise`` (only regions that ask, e.g. glibc's hugetlb tunable)."""
    title = "THP defrag"
    mode = _thp_mode(host, "defrag")
    enabled = _thp_mode(host, "enabled")
    if mode is None:
        return Finding("thp.defrag", title, Status.UNKNOWN, "unknown", _MISSING)
    if mode != "always" or enabled == "never":
        return Finding("thp.defrag", title, Status.OK, mode)
    why = (
        "THP defrag = always: a page fault that finds no free huge page stops the faulting "
        "thread to compact memory (direct compaction, ms-long stalls on the event loop); "
        f"set defer+madvise or madvise (echo madvise > /{_THP}/defrag)."
    )
    status = Status.FAIL if enabled == "always" else Status.WARN
    return Finding("thp.defrag", title, status, f"{mode} (enabled: {enabled or 'unknown'})", why)


def _size(kib: int) -> str:
    for unit, scale in (("GiB", 1 << 20), ("MiB", 1 << 10)):
        if kib >= scale:
            return f"{kib / scale:.1f} {unit}"
    return f"{kib} KiB"


def check_swap(host: Host) -> Finding:
    """Swap on with ``vm.swappiness`` above 10 warns (the kernel readily swaps out idle pages of
    a service that waits for reorgs); swap off, or swappiness <= 10, is ok."""
    title = "swap"
    swaps = host.read("proc/swaps")
    swappiness_text = host.read("proc/sys/vm/swappiness")
    swappiness = int(swappiness_text) if swappiness_text and swappiness_text.isdigit() else None
    if swaps is None:
        return Finding("mem.swap", title, Status.UNKNOWN, "unknown", "/proc/swaps missing")
    size = used = devices = 0
    for line in swaps.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
            devices += 1
            size += int(fields[2])
            used += int(fields[3])
    shown = "unknown" if swappiness is None else str(swappiness)
    if devices == 0:
        return Finding("mem.swap", title, Status.OK, f"off (swappiness {shown})")
    value = f"on: {devices} device(s), {_size(size)}, {_size(used)} used, swappiness {shown}"
    if swappiness is not None and swappiness <= 10:
        return Finding("mem.swap", title, Status.OK, value)
    return Finding(
        "mem.swap",
        title,
        Status.WARN,
        value,
        "Swap is on: a page of the service swapped out while it waits for a reorg costs a disk "
        "read (ms) when the reorg arrives; swapoff -a, or sysctl vm.swappiness=1.",
    )

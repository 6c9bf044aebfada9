"""Rows, the table, the JSON file and the deltas against the previous run.

A row is a plain dict (the JSON keeps it as is)::

    {"key": "reaction.e2e.1.vs_raw", "section": "reaction", "figure": "...", "unit": "µs",
     "ours": "broadcaster", "ours_p50": 612.0, "ours_p99": 1480.0,
     "peer": "hand-written (raw websockets)", "peer_p50": 1390.0, "peer_p99": 2710.0,
     "ratio": 2.27, "target": "faster than the peer (p50 and p99)", "met": true,
     "n": 200, "note": "...", "error": null}

``ratio`` is always "how many times better than the peer": ``peer / ours`` for latencies,
``ours / peer`` for rates. ``met`` is ``None`` for informational rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "deltas",
    "format_deltas",
    "format_table",
    "pct",
    "row",
    "signing_rows",
]

Row = dict[str, Any]


def pct(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def row(
    key: str,
    figure: str,
    *,
    unit: str,
    ours: str,
    ours_p50: float | None,
    ours_p99: float | None = None,
    peer: str | None = None,
    peer_p50: float | None = None,
    peer_p99: float | None = None,
    higher_is_better: bool = False,
    target: str = "(informational)",
    met: bool | None = None,
    n: int | None = None,
    note: str = "",
    error: str | None = None,
) -> Row:
    ratio = None
    if ours_p50 and peer_p50:
        ratio = round(ours_p50 / peer_p50 if higher_is_better else peer_p50 / ours_p50, 2)
    return {
        "key": key,
        "section": key.split(".", 1)[0],
        "figure": figure,
        "unit": unit,
        "ours": ours,
        "ours_p50": _round(ours_p50),
        "ours_p99": _round(ours_p99),
        "peer": peer,
        "peer_p50": _round(peer_p50),
        "peer_p99": _round(peer_p99),
        "ratio": ratio,
        "target": target,
        "met": met if error is None else False,
        "n": n,
        "note": note,
        "error": error,
    }


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return round(value, 1) if abs(value) < 10_000 else float(round(value))


_P50_LE = re.compile(r"p50\s*<=\s*([\d.]+)\s*us")
_X_FASTER = re.compile(r">=\s*([\d.]+)\s*x")


def signing_rows(rows: Sequence[dict[str, Any]]) -> list[Row]:
    """``bench.signing.run()`` rows in this table's shape; targets read from their text."""
    out = []
    for i, r in enumerate(rows):
        target = str(r.get("target", ""))
        p50, ratio = r.get("p50_us"), r.get("ratio")
        met: bool | None = None
        if target.startswith("p50") and (m := _P50_LE.search(target)) and p50 is not None:
            met = p50 <= float(m[1])
        elif (m := _X_FASTER.search(target)) and ratio is not None:
            met = ratio >= float(m[1])
        out.append(
            row(
                f"signing.{i}",
                str(r.get("figure", "")),
                unit="µs",
                ours="this project",
                ours_p50=p50,
                ours_p99=r.get("p99_us"),
                peer=r.get("peer"),
                peer_p50=r.get("peer_p50_us"),
                peer_p99=r.get("peer_p99_us"),
                target=target,
                met=met,
            )
        )
    return out


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("heads/s", "intents/s", "tx/s"):
        return f"{value:,.0f}"
    if unit == "MB":
        return f"{value:.1f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def format_table(rows: Sequence[Row]) -> str:
    head = (
        f"{'figure':<64} {'unit':>9} {'ours p50':>10} {'ours p99':>10} {'peer p50':>10} "
        f"{'peer p99':>10} {'ratio':>7}  {'met':<6} target / peer"
    )
    lines = [head, "-" * len(head)]
    section = None
    for r in rows:
        if r["section"] != section:
            section = r["section"]
            lines.append(f"[{section}]")
        met = {True: "yes", False: "MISSED", None: "-"}[r["met"]]
        if r["error"]:
            met = "ERROR"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        unit = r["unit"]
        figure = r["figure"] if len(r["figure"]) <= 64 else r["figure"][:61] + "..."
        lines.append(
            f"{figure:<64} {unit:>9} {_num(r['ours_p50'], unit):>10} "
            f"{_num(r['ours_p99'], unit):>10} {_num(r['peer_p50'], unit):>10} "
            f"{_num(r['peer_p99'], unit):>10} {ratio:>7}  {met:<6} {r['target']}"
            + (f" / {r['peer']}" if r["peer"] else "")
        )
        if r["note"]:
            lines.append(f"{'':<4}{r['note']}")
        if r["error"]:
            lines.append(f"{'':<4}error: {r['error'][:300]}")
    return "\n".join(lines)


def deltas(rows: Sequence[Row], previous: Sequence[Row]) -> list[dict[str, Any]]:
    """Per row present in both runs: relative change of ours p50/p99 (+ = larger number)."""
    before = {r["key"]: r for r in previous}
    out = []
    for r in rows:
        p = before.get(r["key"])
        if p is None:
            continue
        change: dict[str, Any] = {"key": r["key"], "figure": r["figure"], "unit": r["unit"]}
        for field in ("ours_p50", "ours_p99"):
            new, old = r.get(field), p.get(field)
            change[field] = (new, old)
            change[field + "_pct"] = (
                round(100 * (new - old) / old, 1) if new is not None and old else None
            )
        out.append(change)
    return out


def format_deltas(changes: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'figure':<64} {'unit':>9} {'p50 now':>10} {'was':>10} {'Δ':>8} "
             f"{'p99 now':>10} {'was':>10} {'Δ':>8}"]  # fmt: skip
    for c in changes:
        unit = c["unit"]
        cells = []
        for field in ("ours_p50", "ours_p99"):
            new, old = c[field]
            d = c[field + "_pct"]
            cells.append(
                f"{_num(new, unit):>10} {_num(old, unit):>10} "
                f"{(f'{d:+.1f}%' if d is not None else '-'):>8}"
            )
        figure = c["figure"] if len(c["figure"]) <= 64 else c["figure"][:61] + "..."
        lines.append(f"{figure:<64} {unit:>9} " + " ".join(cells))
    return "\n".join(lines)

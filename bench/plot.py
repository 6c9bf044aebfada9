"""The PNG: reaction-latency distributions of every implementation (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["plot_reaction"]


def _ecdf(ax: object, samples: Sequence[float], label: str, color: object) -> None:
    ordered = sorted(samples)
    n = len(ordered)
    ys = [(i + 1) / n for i in range(n)]
    ax.step(  # type: ignore[attr-defined]
        ordered, ys, where="post", label=f"{label} (n={n})", color=color
    )


def plot_reaction(
    path: Path, series: Mapping[int, Mapping[str, Sequence[float]]], title: str
) -> None:
    """``series``: dropped txs -> {label: samples in µs}; one panel per number of txs."""
    ks = [k for k in sorted(series) if any(series[k].values())]
    labels = sorted({label for k in ks for label in series[k]})
    palette = plt.get_cmap("tab10")
    colors = {label: palette(i % 10) for i, label in enumerate(labels)}  # same color everywhere
    fig, axes = plt.subplots(1, max(1, len(ks)), figsize=(6.5 * max(1, len(ks)), 5), squeeze=False)
    for ax, k in zip(axes[0], ks, strict=False):
        for label, samples in series[k].items():
            if samples:
                _ecdf(ax, samples, label, colors[label])
        ax.set_xscale("log")
        ax.set_xlabel("µs (log)")
        ax.set_ylabel("fraction of trials ≤ x")
        ax.set_title(f"{k} tx dropped by one reorg")
        ax.axhline(0.5, color="grey", lw=0.5, ls=":")
        ax.axhline(0.99, color="grey", lw=0.5, ls=":")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

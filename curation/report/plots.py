"""The report's figures, drawn with matplotlib (Agg, no display) and returned as PNG bytes."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import matplotlib

matplotlib.use("Agg")  # a report is built on headless nodes; never open a window
import matplotlib.pyplot as plt

KEPT_COLOR, REJECTED_COLOR, AFTER_COLOR = "#2b7bba", "#d95f02", "#1b9e77"


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def histogram(title: str, kept: list[float], rejected: list[float],
              thresholds: dict[str, float] | None = None, bins: int = 30) -> bytes:
    """Kept and rejected rows stacked, so what a threshold threw away is visible beside what stayed.

    `thresholds` maps "min"/"max" to the configured filter value, drawn as a dashed line.
    """
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    values = [v for v in kept + rejected if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi == lo:  # a constant column (random weights, one image): give the bar some width
        lo, hi = lo - 0.5, hi + 0.5
    ax.hist([kept, rejected], bins=bins, range=(lo, hi), stacked=True, color=[KEPT_COLOR, REJECTED_COLOR],
            label=[f"kept ({len(kept)})", f"rejected ({len(rejected)})"])
    for kind, value in (thresholds or {}).items():
        ax.axvline(value, color="black", linestyle="--", linewidth=1)
        ax.annotate(f"{kind} {value:g}", (value, ax.get_ylim()[1] * 0.92), fontsize=8, ha="left")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    return _png(fig)


def funnel(stages: list[str], kept: list[int], inputs: int) -> bytes:
    """Rows left after each stage, as a share of the inputs."""
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(stages) + 1.0))
    y = list(range(len(stages)))[::-1]
    ax.barh(y, kept, color=KEPT_COLOR)
    for yi, k in zip(y, kept):
        ax.annotate(f"{k} ({100.0 * k / inputs if inputs else 0:.1f}%)", (k, yi), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(y, stages)
    ax.set_xlim(0, max([inputs, *kept, 1]) * 1.25)
    ax.set_xlabel("images kept after the stage")
    ax.set_title(f"funnel: {inputs} inputs", fontsize=10)
    return _png(fig)


def rejects(counts: dict[str, int]) -> bytes:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(items) + 1.0))
    y = list(range(len(items)))[::-1]
    ax.barh(y, [v for _, v in items], color=REJECTED_COLOR)
    ax.set_yticks(y, [k for k, _ in items])
    ax.set_xlabel("images rejected")
    ax.set_title("rejects by reason", fontsize=10)
    return _png(fig)


def cluster_sizes(before: Counter, after: Counter) -> bytes:
    """Per top-level cluster, rows that reached sampling and draws taken; sorted by size before.

    Balanced sampling caps the big clusters, so the 'after' bars should be flatter than 'before'.
    """
    order = [c for c, _ in sorted(before.items(), key=lambda kv: (-kv[1], kv[0]))]
    x = list(range(len(order)))
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.2), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.42
    axes[0].bar([i - width / 2 for i in x], [before[c] for c in order], width, color=KEPT_COLOR, label="before")
    axes[0].bar([i + width / 2 for i in x], [after.get(c, 0) for c in order], width, color=AFTER_COLOR,
                label="after (draws)")
    axes[0].set_xlabel("level-1 cluster, largest first")
    axes[0].set_ylabel("images")
    axes[0].set_xticks(x, [str(c) for c in order], fontsize=7, rotation=90 if len(order) > 20 else 0)
    axes[0].legend(fontsize=8)
    axes[0].set_title("cluster sizes", fontsize=10)
    sizes_before, sizes_after = list(before.values()), [after.get(c, 0) for c in order]
    top = max(sizes_before + sizes_after + [1])
    axes[1].hist([sizes_before, sizes_after], bins=min(20, top), range=(0, top + 1),
                 color=[KEPT_COLOR, AFTER_COLOR], label=["before", "after"])
    axes[1].set_xlabel("cluster size")
    axes[1].set_ylabel("clusters")
    axes[1].legend(fontsize=8)
    axes[1].set_title("distribution of cluster sizes", fontsize=10)
    return _png(fig)

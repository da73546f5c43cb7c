"""docs/benchmark.png: the results table as a bar chart."""

from __future__ import annotations

import datetime
from pathlib import Path

from tests.benchmark.common import MiB
from tests.benchmark.report import fmt_rate
from tests.benchmark.results import Results, Row


def plot(
    results: Results, path: Path, *, size: int, started_at: datetime.datetime, quick: bool
) -> None:
    """Bars of the median MB/s per row, one block per scenario, on a log scale: page-cache
    and WAN reads differ by orders of magnitude. Rows measured by time only are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "rangefs": "#1f77b4",
        "s3fs": "#ff7f0e",
        "rclone": "#2ca02c",
        "boto3": "#9467bd",
    }
    # One block per scenario: a header line, then one bar per tool.
    items: list[tuple[str, Row | None]] = []
    for row in results.rows.values():
        if not row.chart:
            continue
        if not items or items[-1][0] != row.scenario:
            items.append((row.scenario, None))
        items.append((row.scenario, row))
    values = [row.mbps or 0.0 if row else 0.0 for _, row in items]
    positive = [v for v in values if v > 0] or [1.0]
    low, high = min(positive) / 2, max(positive) * 5
    fig, ax = plt.subplots(figsize=(10, 0.27 * len(items) + 1.2))
    ys = list(range(len(items)))[::-1]
    labels = []
    for y, (scenario, row), value in zip(ys, items, values, strict=True):
        if row is None:
            labels.append(scenario)
            continue
        labels.append(row.label)
        ax.barh(y, value, color=colors.get(row.tool, "#888888"), height=0.75)
        text = fmt_rate(value) if value else ("error" if row.error else "not measured")
        ax.text(max(value, low) * 1.06, y, text, va="center", fontsize=7)
    ax.set_yticks(ys, labels, fontsize=7.5)
    for tick, (_, row) in zip(ax.get_yticklabels(), items, strict=True):
        if row is None:
            tick.set_fontweight("bold")
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(-0.7, len(items) - 0.3)
    ax.set_xlabel("MB/s, median (log scale)")
    ax.set_title(
        f"rangefs and peers on one SeaweedFS, {size // MiB} MiB object "
        f"({started_at:%Y-%m-%d}{', quick run' if quick else ''})",
        fontsize=10,
    )
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

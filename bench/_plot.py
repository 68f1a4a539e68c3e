"""The PNG of ``bounded.py drift --plot``: live coordinates and RSS over rows, a line per run.

matplotlib is imported here only (the ``bench`` extra, not a runtime dependency), with the
Agg backend: no display is needed and none is looked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_drift(results: dict[str, dict[str, Any]], path: str, title: str) -> None:
    """Two panels over rows learned: live coordinates, and the process's RSS (MB)."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6), sharex=True, dpi=100)
    # bounded runs often lie on top of each other: a line style each keeps them apart
    styles = ("-", "--", ":", "-.")
    for i, (name, r) in enumerate(results.items()):
        rows = [t["rows"] / 1e6 for t in r["trace"]]
        style = {"linestyle": styles[i % len(styles)], "marker": ".", "label": name}
        top.plot(rows, [t["live"] / 1e6 for t in r["trace"]], **style)
        bottom.plot(rows, [t["rss_mb"] for t in r["trace"]], **style)
    top.set_ylabel("live coordinates (millions)")
    bottom.set_ylabel("RSS (MB)")
    bottom.set_xlabel("rows learned (millions)")
    top.set_title(title, fontsize=10)
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    top.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)

"""Small seeded data sets the tests make for themselves (never ../shared)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def criteo_lines(rows: int, seed: int = 0, missing: float = 0.1, vocab: int = 50,
                 labeled: bool = True) -> list[str]:
    """Criteo-format TSV lines from a known logistic model over Zipf-ish tokens."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1.0, size=(39, vocab))
    lines = []
    for _ in range(rows):
        ranks = np.minimum(rng.zipf(1.3, size=39) - 1, vocab - 1)
        miss = rng.random(39) < missing
        margin = -1.5 + sum(weights[f, r] for f, r in enumerate(ranks) if not miss[f]) * 0.3
        y = int(rng.random() < 1 / (1 + np.exp(-margin)))
        cols = [str(y)] if labeled else []
        for f in range(39):
            if miss[f]:
                cols.append("")
            elif f < 13:
                cols.append(str(int(ranks[f]) * 3 - (1 if f == 1 and ranks[f] == 0 else 0)))
            else:
                cols.append(f"{(int(ranks[f]) * 2654435761 + f) & 0xFFFFFFFF:08x}")
        lines.append("\t".join(cols))
    return lines


def write_criteo(path: Path, rows: int, seed: int = 0, **kw: object) -> Path:
    text = "\n".join(criteo_lines(rows, seed, **kw)) + "\n"  # type: ignore[arg-type]
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path

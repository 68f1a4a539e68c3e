"""A small hyperparameter grid for the learners: one progressive pass per setting.

    python bench/tune_learners.py /tmp/syn200k.tsv --rows 200000 [--learners rda,fobos]

The file is parsed once (Criteo TSV by default); each setting then learns the same batches
from scratch and prints its progressive logloss, AUC, non-zero weights and time. Grids are
kept small on purpose: the figures only pick the defaults in ``ftrl_core/optimizers``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from typing import Any

import numpy as np

from ftrl_core.fields import FieldRegistry
from ftrl_core.metrics import exact_auc, logloss
from ftrl_core.optimizers import OPTIMIZERS
from ftrl_core.readers import FeatureOptions, open_reader

#: per learner: (fixed parameters, {parameter: values to cross}); {} first = the defaults
GRIDS: dict[str, list[tuple[dict[str, Any], dict[str, list[Any]]]]] = {
    "ftrl": [
        ({"alpha": 0.2, "beta": 1.0, "l1": 1.0, "l2": 1.0}, {}),
        ({"beta": 1.0, "l2": 1.0}, {"alpha": [0.1, 0.2, 0.3], "l1": [0.0, 1.0, 5.0]}),
    ],
    "rda": [({}, {}), ({}, {"gamma": [0.1, 0.25, 0.5, 1.0], "lambda": [0.0, 1e-5, 5e-5]})],
    "fobos": [
        ({"rate": "global"}, {}),
        ({"rate": "global"}, {"eta": [0.5, 1.0, 2.0, 4.0], "lambda": [0.0, 1e-5, 3e-5]}),
        ({"rate": "adaptive"}, {}),
        ({"rate": "adaptive"}, {"alpha": [0.1, 0.15, 0.2, 0.4], "lambda": [0.0, 3e-6, 1e-5, 1e-4]}),
    ],
    "tg": [
        ({"rate": "global"}, {}),
        (
            {"rate": "global"},
            {"eta": [2.0], "gravity": [1e-5, 3e-5], "k": [1, 10], "theta": [math.inf, 1.0]},
        ),
        ({"rate": "adaptive"}, {}),
        ({"rate": "adaptive"}, {"gravity": [1e-5, 1e-4], "k": [1, 10], "theta": [math.inf, 0.5]}),
    ],
}


def load(path: str, fmt: str, rows: int) -> list[Any]:
    batches = []
    seen = 0
    for batch in open_reader(path, fmt, FieldRegistry(), FeatureOptions()):
        if seen + batch.rows > rows:
            batch = batch.slice(0, rows - seen)
        batches.append(batch)
        seen += batch.rows
        if seen >= rows:
            break
    return batches


def run(name: str, params: dict[str, Any], batches: list[Any]) -> dict[str, float]:
    opt = OPTIMIZERS[name](**params)
    start = time.perf_counter()
    ps, ys = [], []
    for batch in batches:
        p, _ = opt.learn(batch)
        ps.append(p)
        ys.append(batch.labels)
    seconds = time.perf_counter() - start
    p_all, y_all = np.concatenate(ps), np.concatenate(ys)
    _, w = opt.live_weights()
    return {
        "logloss": logloss(y_all, p_all),
        "auc": exact_auc(y_all, p_all),
        "nnz": int(np.count_nonzero(w)),
        "seconds": seconds,
    }


def settings(name: str) -> list[dict[str, Any]]:
    out = []
    for fixed, grid in GRIDS[name]:
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            out.append({**fixed, **dict(zip(keys, values, strict=True))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="training file (Criteo TSV unless --format says otherwise)")
    ap.add_argument("--rows", type=int, default=200_000, help="rows to learn (default 200k)")
    ap.add_argument("--format", default="criteo")
    ap.add_argument(
        "--learners", default=",".join(GRIDS), help=f"comma-separated subset of {','.join(GRIDS)}"
    )
    args = ap.parse_args()
    batches = load(args.data, args.format, args.rows)
    n = sum(b.rows for b in batches)
    y = np.concatenate([b.labels for b in batches])
    ctr = float(y.mean())
    print(f"{n} rows, CTR {ctr:.4f}, constant predictor logloss {logloss(y, np.full(n, ctr)):.6f}")
    print(f"{'learner':8s} {'logloss':>9s} {'auc':>7s} {'nnz':>8s} {'s':>5s}  parameters")
    for name in args.learners.split(","):
        best: tuple[float, dict[str, Any]] | None = None
        for params in settings(name):
            r = run(name, params, batches)
            shown = " ".join(f"{k}={v}" for k, v in params.items())
            print(
                f"{name:8s} {r['logloss']:9.6f} {r['auc']:7.4f} {r['nnz']:8d} "
                f"{r['seconds']:5.1f}  {shown}",
                flush=True,
            )
            if best is None or r["logloss"] < best[0]:
                best = (r["logloss"], params)
        if best is not None:
            print(f"best {name}: {best[0]:.6f} with {best[1]}", flush=True)


if __name__ == "__main__":
    main()

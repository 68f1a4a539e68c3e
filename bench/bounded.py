"""Bounded memory: what admission and eviction save, and what they cost in logloss.

    python bench/bounded.py admit DATA.tsv [--optimizer ftrl]
    python bench/bounded.py drift DRIFT.tsv [--evict-idle 200000] [--max-coordinates 1000000]
        [--plot FILE.png]

``admit``: for none / bloom:1 / bloom:2 / poisson:0.03 / poisson:0.1, the live coordinates,
the bytes (state table + admission filter; per live coordinate) and the progressive
validation logloss over DATA (every row predicted before it is learned).

``drift``: on a stream whose vocabulary drifts (the bench kit's ``gen_ctr.py --rows
1000000 --drift-every 100000 --drift-frac 0.25``), live coordinates and the process's RSS
every ``--every`` rows for no eviction / --evict-idle / --max-coordinates, and the logloss
over the last ``--window`` rows; ``--plot FILE.png`` draws the live coordinates and RSS over
rows, one line per run (needs matplotlib: the ``bench`` extra).

Every configuration runs in a fresh process (this script, re-invoked), so RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: bloom:2:262144 is bloom:2 with a 2 MB filter instead of the default 8 MB
ADMITS = ("none", "bloom:1", "bloom:2", "bloom:2:262144", "poisson:0.03", "poisson:0.1")


def rss_mb() -> float:
    """The current resident set size (not the peak: memory handed back shows)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def one_run(data: str, flags: dict[str, Any], every: int, window: int) -> dict[str, Any]:
    """Train over ``data`` in this process; the figures as a dict."""
    sys.path.insert(0, str(ROOT))
    from ftrl_core.readers import open_reader
    from ftrl_core.trainer import RECYCLE, prefetch
    from service.learner_options import LearnerOptions

    model = LearnerOptions(keep_names=False, **flags).build_model("criteo")
    reader = open_reader(data, "criteo", model.registry, model.options, recycle=RECYCLE)
    losses = np.zeros(window)  # a ring of the last ``window`` rows' log losses
    rows, next_report, trace = 0, every, []
    for batch in prefetch(reader):
        p = np.clip(model.learn(batch), 1e-15, 1 - 1e-15)
        y = batch.labels
        loss = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        idx = (rows + np.arange(loss.size)) % window
        losses[idx] = loss
        rows += loss.size
        if rows >= next_report:
            trace.append({"rows": rows, "live": model.optimizer.table.size,
                          "rss_mb": round(rss_mb(), 1)})
            next_report += every
    mem = model.memory()
    bounds = model.optimizer.bounds
    counts = {} if bounds is None else bounds.counts(model.optimizer.table)
    return {"rows": rows, "logloss": model.metrics.logloss,
            "logloss_last_window": float(losses[: min(rows, window)].mean()),
            "live": mem["live_coordinates"], "table_bytes": mem["table_bytes"],
            "filter_bytes": mem["filter_bytes"],
            "bytes_per_coordinate": mem["bytes_per_coordinate"], "rss_mb": rss_mb(),
            "trace": trace, **counts}


def in_child(data: str, flags: dict[str, Any], every: int, window: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "_one", data, json.dumps(flags), str(every), str(window)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr}")
    return dict(json.loads(res.stdout))


def admit(args: argparse.Namespace) -> None:
    print(f"{'admit':>15} {'coordinates':>12} {'table MB':>9} {'filter MB':>9} "
          f"{'B/coord':>8} {'logloss':>9} {'dLogloss':>9}")
    base = None
    for policy in ADMITS:
        flags = {"optimizer": args.optimizer}
        if policy != "none":
            flags["admit"] = policy
        r = in_child(args.data, flags, 1 << 62, 1)
        base = r["logloss"] if base is None else base
        print(f"{policy:>15} {r['live']:>12,} {r['table_bytes'] / 2**20:>9.1f} "
              f"{r['filter_bytes'] / 2**20:>9.1f} {r['bytes_per_coordinate']:>8.1f} "
              f"{r['logloss']:>9.6f} {r['logloss'] - base:>+9.6f}")


def drift(args: argparse.Namespace) -> None:
    runs = {"none": {}, f"--evict-idle {args.evict_idle}": {"evict_idle": str(args.evict_idle)},
            f"--max-coordinates {args.max_coordinates}":
                {"max_coordinates": args.max_coordinates}}
    results = {}
    for name, flags in runs.items():
        results[name] = in_child(args.data, {"optimizer": args.optimizer, **flags},
                                 args.every, args.window)
    names = list(results)
    print("rows        " + "".join(f"{n:>28}" for n in names))
    print("            " + "".join(f"{'live coords   RSS MB':>28}" for _ in names))
    for k, point in enumerate(results[names[0]]["trace"]):
        cells = []
        for n in names:
            t = results[n]["trace"][k]
            cells.append(f"{t['live']:>16,} {t['rss_mb']:>10.1f}")
        print(f"{point['rows']:>10,}  " + "".join(f"{c:>28}" for c in cells))
    for n in names:
        r = results[n]
        print(f"{n:>28}: logloss over the last {min(r['rows'], args.window):,} rows "
              f"{r['logloss_last_window']:.6f}, all rows {r['logloss']:.6f}, live "
              f"{r['live']:,}, table {r['table_bytes'] / 2**20:.1f} MB, evicted "
              f"{r.get('evicted', 0):,}")
    if args.plot:
        from _plot import plot_drift  # matplotlib only when a plot is asked for

        plot_drift(results, args.plot, f"{Path(args.data).name}, {args.optimizer}")
        print(f"plot: {args.plot}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        _, _, data, flags, every, window = sys.argv
        print(json.dumps(one_run(data, json.loads(flags), int(every), int(window))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("admit", help="admission policies on a TSV")
    a.add_argument("data")
    a.add_argument("--optimizer", default="ftrl")
    d = sub.add_parser("drift", help="eviction on a drifting stream")
    d.add_argument("data")
    d.add_argument("--optimizer", default="ftrl")
    d.add_argument("--evict-idle", type=int, default=200_000)
    d.add_argument("--max-coordinates", type=int, default=1_000_000)
    d.add_argument("--every", type=int, default=100_000, help="rows between two reports")
    d.add_argument("--window", type=int, default=1_000_000,
                   help="the logloss is reported over the last this many rows")
    d.add_argument("--plot", metavar="FILE.png",
                   help="draw live coordinates and RSS over rows, one line per run")
    args = p.parse_args()
    admit(args) if args.mode == "admit" else drift(args)


if __name__ == "__main__":
    main()

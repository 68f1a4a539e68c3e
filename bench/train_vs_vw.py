"""`ctr train` against Vowpal Wabbit FTRL on the same file, in the same run, as ratios.

    python bench/train_vs_vw.py /tmp/syn1m.tsv [--shared ../shared] [--repeats 3]

For each repeat, interleaved: VW (bench kit's vw_ftrl.sh, 2 threads, its own wall time of
the learning run, text conversion excluded) and one `ctr train` process (wall time of the
whole process: start-up, reading the text file, hashing, learning, metrics out). Both use
FTRL alpha 0.2, beta 1, l1 1, l2 1 and the same features (missing tokens on). Prints each
run and the median ratio. Then each stage alone: start-up (a `ctr train` process on a
10-row head of the file: imports, loading the cached kernels, writing metrics), parse and
hash alone (with one thread, with as many as `ctr train` uses, and one per core), the
learner alone (pre-parsed rows in memory), and predicting those rows again with what it
learned, in rows per second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from _common import DEFAULT_SHARED, head, run_ctr_train, run_vw

T = TypeVar("T")
R = TypeVar("R")


def startup_seconds(data: str, tmp: Path, repeats: int = 3) -> float:
    """Best wall time of `ctr train` on the first 10 rows: the fixed cost of a run."""
    small = head(Path(data), 10, tmp / "head10.tsv")
    return min(run_ctr_train(str(small), "--alpha", "0.2", out_dir=tmp)["wall_seconds"]
               for _ in range(repeats))


def best_seconds(prepare: Callable[[], T], run: Callable[[T], R], repeats: int = 3
                 ) -> tuple[float, R]:
    """The fastest of ``repeats`` timed calls of ``run`` on what an untimed ``prepare``
    made, and the last call's result."""
    best = float("inf")
    for _ in range(repeats):
        made = prepare()
        start = time.perf_counter()
        result = run(made)
        best = min(best, time.perf_counter() - start)
    return best, result


def parse_alone(data: str, threads: int) -> float:
    """Rows/s of reading, parsing and hashing the file (nothing learned), best of 3."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ftrl_core.fields import FieldRegistry
    from ftrl_core.readers import FeatureOptions, open_reader
    from ftrl_core.trainer import RECYCLE

    seconds, rows = best_seconds(
        lambda: open_reader(data, "criteo", FieldRegistry(), FeatureOptions(),
                            recycle=RECYCLE, threads=threads),
        lambda reader: sum(b.rows for b in reader))
    return rows / seconds


def learner_alone(data: str) -> tuple[float, float, float]:
    """(rows/s, feature updates/s) of FTRL on batches already parsed into memory; then
    rows/s of predicting those batches again with the model learned (a table of the whole
    file's coordinates, 24 MB for syn1m, beyond the per-core caches: what a serving model's
    lookups meet). Each the best of 3."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ftrl_core.fields import FieldRegistry
    from ftrl_core.optimizers import FTRLProximal
    from ftrl_core.readers import FeatureOptions, open_reader

    batches = list(open_reader(data, "criteo", FieldRegistry(), FeatureOptions()))

    def learn(opt: FTRLProximal) -> FTRLProximal:
        for b in batches:
            opt.learn(b)
        return opt

    def predict(opt: FTRLProximal) -> None:
        for b in batches:
            opt.predict(b)

    learning, learned = best_seconds(lambda: FTRLProximal(alpha=0.2), learn)
    predicting, _ = best_seconds(lambda: learned, predict)
    rows = sum(b.rows for b in batches)
    nnz = sum(b.nnz for b in batches)
    return rows / learning, nnz / learning, rows / predicting


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="Criteo-format TSV (e.g. syn1m from gen_ctr.py)")
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    # the machine may be shared: the load says how far the figures can be trusted
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.repeats):
            vw = run_vw(a.shared, a.data, keep_empty=True)
            ours = run_ctr_train(a.data, "--alpha", "0.2", out_dir=Path(tmp))
            ratio = ours["wall_rows_per_second"] / vw["rows_per_second"]
            ratios.append(ratio)
            print(f"run {i + 1}: vw {vw['rows_per_second']:,.0f} rows/s "
                  f"(logloss {vw['logloss']:.6f}) | ctr train {ours['wall_rows_per_second']:,.0f}"
                  f" rows/s wall, {ours['rows_per_second']:,.0f} rows/s in-loop "
                  f"(logloss {ours['logloss']:.6f}) | ratio {ratio:.2f}x", flush=True)
        print(f"median ratio ctr/vw (wall, whole process): {statistics.median(ratios):.2f}x "
              "(target >= 2.0x)")
        print("stages alone:")
        print(f"  start-up (ctr train on 10 rows, whole process): "
              f"{startup_seconds(a.data, Path(tmp)):.2f} s")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ftrl_core.trainer import parse_threads

    threads = parse_threads()
    for n in sorted({1, threads, os.cpu_count() or 1}):
        print(f"  parse+hash alone, {n} thread(s){' (as ctr train)' if n == threads else ''}: "
              f"{parse_alone(a.data, n):,.0f} rows/s")
    rows_s, upd_s, predict_s = learner_alone(a.data)
    print(f"  learner alone (FTRL, pre-parsed): {rows_s:,.0f} rows/s, "
          f"{upd_s / 1e6:.1f}M feature updates/s")
    print(f"  predictions alone (the learned model, pre-parsed): {predict_s:,.0f} rows/s")
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()

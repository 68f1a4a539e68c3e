"""`ctr train` against Vowpal Wabbit FTRL on the same file, in the same run, as ratios.

    python bench/train_vs_vw.py /tmp/syn1m.tsv [--shared ../shared] [--repeats 3]

For each repeat, interleaved: VW (bench kit's vw_ftrl.sh, 2 threads, its own wall time of
the learning run, text conversion excluded) and one `ctr train` process (wall time of the
whole process: start-up, reading the text file, hashing, learning, metrics out). Both use
FTRL alpha 0.2, beta 1, l1 1, l2 1 and the same features (missing tokens on). Prints each
run and the median ratio. Also measures the learner alone (pre-parsed rows in memory) in
feature updates per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import DEFAULT_SHARED, run_ctr_train, run_vw


def learner_alone(data: str) -> tuple[float, float]:
    """(rows/s, feature updates/s) of FTRL on batches already parsed into memory."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ftrl_core.fields import FieldRegistry
    from ftrl_core.optimizers import FTRLProximal
    from ftrl_core.readers import FeatureOptions, open_reader

    batches = list(open_reader(data, "criteo", FieldRegistry(), FeatureOptions()))
    best = float("inf")
    for _ in range(3):
        opt = FTRLProximal(alpha=0.2)
        start = time.perf_counter()
        for b in batches:
            opt.learn(b)
        best = min(best, time.perf_counter() - start)
    rows = sum(b.rows for b in batches)
    nnz = sum(b.nnz for b in batches)
    return rows / best, nnz / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="Criteo-format TSV (e.g. syn1m from gen_ctr.py)")
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
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
    rows_s, upd_s = learner_alone(a.data)
    print(f"learner alone (FTRL, pre-parsed): {rows_s:,.0f} rows/s, "
          f"{upd_s / 1e6:.1f}M feature updates/s")


if __name__ == "__main__":
    main()

"""Progressive logloss of `ctr train` against VW FTRL on the same rows, both feature choices.

    python bench/quality.py /tmp/syn1m.tsv ../shared/data/criteo_sample.tsv.gz [--shared ../shared]

FTRL alpha 0.2, beta 1, l1 1, l2 1 everywhere. For each file: VW with missing tokens
(to_vw.py --keep-empty) and without; `ctr train` with its defaults (missing tokens) and with
--drop-missing. Targets (issue 3): ctr default <= min(VW both) + 0.0002; ctr --drop-missing
<= VW without missing tokens + 0.0002.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import DEFAULT_SHARED, run_ctr_train, run_vw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+")
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    a = ap.parse_args()
    print(f"{'data':<28}{'vw keep-empty':>14}{'vw dropped':>12}{'ctr default':>13}"
          f"{'ctr --drop-missing':>20}  checks")
    with tempfile.TemporaryDirectory() as tmp:
        for data in a.data:
            vw_keep = run_vw(a.shared, data, keep_empty=True)["logloss"]
            vw_drop = run_vw(a.shared, data)["logloss"]
            ours = run_ctr_train(data, "--alpha", "0.2", out_dir=Path(tmp))["logloss"]
            ours_drop = run_ctr_train(data, "--alpha", "0.2", "--drop-missing",
                                      out_dir=Path(tmp))["logloss"]
            best = min(vw_keep, vw_drop)
            ok1 = ours <= best + 0.0002
            ok2 = ours_drop <= vw_drop + 0.0002
            print(f"{Path(data).name:<28}{vw_keep:>14.6f}{vw_drop:>12.6f}{ours:>13.6f}"
                  f"{ours_drop:>20.6f}  default-vs-best {ours - best:+.6f} "
                  f"({'ok' if ok1 else 'MISS'}), drop-vs-vw {ours_drop - vw_drop:+.6f} "
                  f"({'ok' if ok2 else 'MISS'})", flush=True)


if __name__ == "__main__":
    main()

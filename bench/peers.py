"""`ctr train` against its peers (Vowpal Wabbit, River, scikit-learn) on the same rows, in one run.

    python bench/peers.py /tmp/syn1m.tsv [--rows N] [--river-rows 100000] [--shared ../shared]

Every learner sees the same features: a bias plus one categorical token per field, integer
columns as tokens (I5 = "24" is the token I5_24), and, unless said otherwise, a "missing"
token for an empty field, as ``ctr train`` does by default. Every figure is progressive:
each row is predicted before it is learned.

- ``ctr train`` FTRL alpha 0.2, beta 1, l1 1, l2 1 (the same hyperparameters as VW and
  River), default features and ``--drop-missing``; timed as a whole process (start-up,
  reading the text, hashing, learning, metrics out); AUC as ctr reports it.
- VW FTRL, the same hyperparameters, ``-b 24``, the bench kit's ``to_vw.py`` features with
  and without ``--keep-empty``; timed like ``vw_ftrl.sh``: the VW process alone, the text
  conversion excluded; logloss and AUC from its ``-p`` predictions, non-zeros from
  ``--readable_model``.
- River ``LogisticRegression(optimizer=FTRLProximal(...))``, the same hyperparameters, the
  bias as an FTRL feature (``intercept_lr=0``), ``predict_proba_one`` then ``learn_one``.
  It learns under 10k rows/s, so it gets the first ``--river-rows`` rows and ``ctr train``
  is run again on that same prefix for the comparison.
- scikit-learn ``SGDClassifier(loss="log_loss", penalty="l1")`` on ``FeatureHasher``
  tokens, ``partial_fit`` in mini-batches of 1,000, each batch predicted before it is fitted;
  its own unregularised intercept is the bias. Its setting (``SKLEARN``) was picked on the
  first 100k rows of syn1m from a handful; it is not FTRL and has no alpha/l1 to match.

River and scikit-learn are timed end to end in this process, reading and splitting the text
in Python included (their users have to); the table says so. A peer whose package is not
installed prints "not installed" (``pip install -e '.[bench]'`` installs them).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import DEFAULT_SHARED, run_ctr_train

from ftrl_core.metrics import exact_auc, logloss

#: FTRL-Proximal everywhere it exists (VW, River, ctr): the bench kit's standard setting
FTRL = {"alpha": 0.2, "beta": 1.0, "l1": 1.0, "l2": 1.0}
#: scikit-learn's setting, the best progressive logloss on the first 100k rows of syn1m of
#: ten tried (learning rate constant 0.01-0.1, invscaling with eta0 0.05-1 and power_t
#: 0.15-0.5, optimal; alpha 1e-7 to 1e-5); 2^22 hashed slots, as 2^24 makes every
#: partial_fit call cost a pass over a 128 MB coefficient vector
SKLEARN = {"alpha": 1e-7, "learning_rate": "constant", "eta0": 0.02, "power_t": 0.5,
           "hash_bits": 22}
SKLEARN_BATCH = 1000
INTS, CATS = 13, 26


@dataclass
class Result:
    learner: str
    features: str
    rows: int
    seconds: float
    logloss: float
    auc: float | None = None
    nnz: int | None = None
    timing: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


def write_prefix(data: str, rows: int, out: Path) -> str:
    """The first ``rows`` lines of ``data`` in ``out`` (every learner then reads a file)."""
    with open(data, "rb") as src, open(out, "wb") as dst:
        dst.writelines(itertools.islice(src, rows))
    return str(out)


def criteo_rows(path: str, limit: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """(label, tokens) per line: "I1_16", "C3_a9b8..."; an empty field is its missing token
    "I2_" (the same one-hot meaning as ctr's default and to_vw.py --keep-empty)."""
    names = [f"I{j + 1}_" for j in range(INTS)] + [f"C{j + 1}_" for j in range(CATS)]
    with open(path, encoding="ascii") as fh:
        for line in itertools.islice(fh, limit):
            cols = line.rstrip("\n").split("\t")
            yield int(cols[0]), [n + v for n, v in zip(names, cols[1:], strict=True)]


def labels_of(path: str) -> np.ndarray:
    with open(path, "rb") as fh:
        return np.array([line[:1] == b"1" for line in fh], dtype=np.float64)


# -- ctr ------------------------------------------------------------------------------------

def ctr_train(data: str, tmp: Path, drop_missing: bool = False) -> Result:
    flags = [f"--{k}={v}" for k, v in FTRL.items()]
    if drop_missing:
        flags.append("--drop-missing")
    m = run_ctr_train(data, *flags, out_dir=tmp)
    return Result("ctr train", "empty fields dropped" if drop_missing else "missing tokens",
                  int(m["rows"]), float(m["wall_seconds"]), float(m["logloss"]),
                  float(m["auc"]), int(m["nnz"]), "whole process")


# -- Vowpal Wabbit ----------------------------------------------------------------------------

def vw_ftrl(data: str, shared: Path, tmp: Path, keep_empty: bool) -> Result | str:
    if importlib.util.find_spec("vowpalwabbit") is None:
        return "not installed (pip install vowpalwabbit)"
    text = tmp / "d.vw"
    with open(text, "wb") as out:
        subprocess.run([sys.executable, str(shared / "bench" / "to_vw.py"), data,
                        *(["--keep-empty"] if keep_empty else [])], stdout=out, check=True)
    preds, model = tmp / "p.txt", tmp / "model.txt"
    # the flags of the bench kit's vw_ftrl.sh, plus the predictions and the readable model
    cmd = [sys.executable, "-m", "vowpalwabbit", "-d", str(text), "-b", "24",
           "--loss_function", "logistic", "--link", "logistic", "--ftrl",
           "--ftrl_alpha", str(FTRL["alpha"]), "--ftrl_beta", str(FTRL["beta"]),
           "--l1", str(FTRL["l1"]), "--l2", str(FTRL["l2"]), "--quiet", "-p", str(preds),
           "--readable_model", str(model)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    y = labels_of(data)
    p = np.loadtxt(preds, usecols=0, ndmin=1)
    # after its header the readable model has "index:w z n" for every coordinate FTRL
    # touched, zero or not; the constant (bias) is counted, as ctr counts its bias
    with open(model) as fh:
        nnz = sum(1 for line in fh
                  if (m := re.match(r"^\d+:(\S+)", line)) and float(m.group(1)) != 0.0)
    text.unlink()
    return Result("VW FTRL", "missing tokens" if keep_empty else "empty fields dropped",
                  len(y), seconds, logloss(y, p), exact_auc(y, p), nnz,
                  "VW process, text conversion excluded")


# -- River ----------------------------------------------------------------------------------

def river_ftrl(data: str, rows: int) -> Result | str:
    try:
        from river import linear_model, optim
    except ImportError:
        return "not installed (pip install river)"
    model = linear_model.LogisticRegression(optimizer=optim.FTRLProximal(**FTRL),
                                            intercept_lr=0.0)
    ys, ps = [], []
    start = time.perf_counter()
    for label, tokens in criteo_rows(data, rows):
        x = dict.fromkeys(tokens, 1.0)
        x["bias"] = 1.0  # learned by FTRL like the other tokens, as VW's constant is
        ps.append(model.predict_proba_one(x)[True])
        model.learn_one(x, label == 1)
        ys.append(label)
    seconds = time.perf_counter() - start
    y, p = np.array(ys, np.float64), np.array(ps)
    nnz = sum(1 for w in model.weights.values() if w != 0)
    return Result("River FTRLProximal", "missing tokens", len(y), seconds, logloss(y, p),
                  exact_auc(y, p), nnz, "end to end in Python")


# -- scikit-learn ---------------------------------------------------------------------------

def sklearn_sgd(data: str, rows: int | None, setting: dict[str, Any] | None = None) -> Result | str:
    try:
        from sklearn.feature_extraction import FeatureHasher
        from sklearn.linear_model import SGDClassifier
    except ImportError:
        return "not installed (pip install scikit-learn)"
    s = {**SKLEARN, **(setting or {})}
    hasher = FeatureHasher(n_features=1 << int(s["hash_bits"]), input_type="string",
                           alternate_sign=False)
    clf = SGDClassifier(loss="log_loss", penalty="l1", alpha=s["alpha"],
                        learning_rate=s["learning_rate"], eta0=s["eta0"], power_t=s["power_t"])
    classes = np.array([0, 1])
    ys, ps = [], []
    fitted = False
    start = time.perf_counter()
    rows_iter = criteo_rows(data, rows)
    while chunk := list(itertools.islice(rows_iter, SKLEARN_BATCH)):
        y = np.array([r[0] for r in chunk])
        x = hasher.transform(r[1] for r in chunk)
        ps.append(clf.predict_proba(x)[:, 1] if fitted else np.full(len(y), 0.5))
        clf.partial_fit(x, y, classes=classes)
        fitted = True
        ys.append(y)
    seconds = time.perf_counter() - start
    y_all, p_all = np.concatenate(ys).astype(np.float64), np.concatenate(ps)
    return Result("scikit-learn SGD l1", "missing tokens", len(y_all), seconds,
                  logloss(y_all, p_all), exact_auc(y_all, p_all),
                  int(np.count_nonzero(clf.coef_) + np.count_nonzero(clf.intercept_)),
                  "end to end in Python")


# -- output ---------------------------------------------------------------------------------

def fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def print_row(r: Result | str, name: str = "") -> None:
    if isinstance(r, str):
        print(f"| {name} | | | | | | | {r} |", flush=True)
        return
    print(f"| {r.learner} | {r.features} | {r.rows:,} | {r.rows_per_second:,.0f} | "
          f"{r.logloss:.6f} | {fmt(r.auc, '.4f')} | {fmt(r.nnz, ',')} | {r.timing} |",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="Criteo-format TSV (e.g. syn1m from gen_ctr.py)")
    ap.add_argument("--rows", type=int, help="use the first N rows (default: all)")
    ap.add_argument("--river-rows", type=int, default=100_000,
                    help="rows River learns (and ctr again, on the same prefix); 0: skip")
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED,
                    help="the shared folder with bench/to_vw.py (default ../shared)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        data = write_prefix(a.data, a.rows, tmp / "data.tsv") if a.rows else a.data
        print(f"# {Path(a.data).name}, {'all' if not a.rows else f'first {a.rows:,}'} rows; "
              f"FTRL {', '.join(f'{k} {v:g}' for k, v in FTRL.items())}", flush=True)
        print("| learner | features | rows | rows/s | progressive logloss | AUC | "
              "non-zero weights | timed |")
        print("|---|---|---|---|---|---|---|---|")
        print_row(ctr_train(data, tmp))
        print_row(ctr_train(data, tmp, drop_missing=True))
        print_row(vw_ftrl(data, a.shared, tmp, keep_empty=True), "VW FTRL")
        print_row(vw_ftrl(data, a.shared, tmp, keep_empty=False), "VW FTRL")
        print_row(sklearn_sgd(data, None), "scikit-learn SGD l1")
        if a.river_rows:
            prefix = write_prefix(data, a.river_rows, tmp / "prefix.tsv")
            print_row(river_ftrl(prefix, a.river_rows), "River FTRLProximal")
            print_row(ctr_train(prefix, tmp))
        y = labels_of(data)
        print(f"constant predictor (the base rate in hindsight): "
              f"{logloss(y, np.full(y.size, y.mean())):.6f}")


if __name__ == "__main__":
    main()

"""``ctr train``, ``ctr predict`` and ``ctr inspect`` end to end, on files the tests write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datagen import criteo_lines, write_criteo

from ftrl_core.metrics import exact_auc, logloss
from ftrl_core.model import Model
from service.cli import main


def _train(*args: str) -> int:
    return main(["train", *map(str, args), "--quiet"])


def test_train_writes_metrics_predictions_and_model(criteo_file: Path, tmp_path: Path) -> None:
    preds, metrics, model = tmp_path / "p.txt", tmp_path / "m.json", tmp_path / "m.ctr"
    assert _train(criteo_file, "--alpha", "0.2", "--predictions-out", preds,
                  "--metrics-json", metrics, "--model-out", model) == 0
    m = json.loads(metrics.read_text())
    for key in ("rows", "logloss", "auc", "nnz", "l1_norm", "seconds", "rows_per_second"):
        assert key in m
    p = np.loadtxt(preds)
    y = np.array([int(line[0]) for line in criteo_file.read_text().splitlines()])
    assert m["rows"] == p.size == y.size == 2000
    # the metrics are those of the progressive predictions written out
    assert m["logloss"] == pytest.approx(logloss(y, p), rel=1e-9)
    assert m["auc"] == pytest.approx(exact_auc(y, p), abs=1e-4)
    assert m["logloss"] < logloss(y, np.full(y.size, y.mean()))  # it learned something
    loaded = Model.load(model)
    assert loaded.rows == 2000
    assert loaded.sparsity().nnz == m["nnz"]


def test_resume_is_exact(tmp_path: Path) -> None:
    lines = criteo_lines(3000, seed=11)
    a, b, ab = tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "ab.tsv"
    a.write_text("\n".join(lines[:1700]) + "\n")
    b.write_text("\n".join(lines[1700:]) + "\n")
    ab.write_text("\n".join(lines) + "\n")
    flags = ["--alpha", "0.3", "--l1", "0.5", "--interactions", "C1:C2,I1:C3"]
    assert _train(ab, *flags, "--predictions-out", tmp_path / "p_ab.txt",
                  "--model-out", tmp_path / "ab.ctr") == 0
    assert _train(a, *flags, "--model-out", tmp_path / "a.ctr") == 0
    assert _train(b, "--model-in", tmp_path / "a.ctr", "--model-out", tmp_path / "a_b.ctr",
                  "--predictions-out", tmp_path / "p_b.txt") == 0
    p_ab = np.loadtxt(tmp_path / "p_ab.txt")
    p_b = np.loadtxt(tmp_path / "p_b.txt")
    np.testing.assert_array_equal(p_b, p_ab[1700:])
    # and the two final models predict the same
    out1 = subprocess.run([sys.executable, "-m", "service.cli", "predict", "--model",
                           str(tmp_path / "ab.ctr"), str(a)], capture_output=True, text=True,
                          check=True).stdout
    out2 = subprocess.run([sys.executable, "-m", "service.cli", "predict", "--model",
                           str(tmp_path / "a_b.ctr"), str(a)], capture_output=True, text=True,
                          check=True).stdout
    assert out1 == out2 and len(out1.splitlines()) == 1700


def test_resume_refuses_learner_flags(criteo_file: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(criteo_file, "--model-out", tmp_path / "m.ctr") == 0
    assert _train(criteo_file, "--model-in", tmp_path / "m.ctr", "--alpha", "0.5") == 2
    assert "--alpha" in capsys.readouterr().err


def test_predict_matches_model_and_gz(criteo_file: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(criteo_file, "--model-out", tmp_path / "m.ctr") == 0
    capsys.readouterr()
    test = write_criteo(tmp_path / "test.tsv.gz", 300, seed=99, labeled=False)
    assert main(["predict", "--model", str(tmp_path / "m.ctr"), str(test)]) == 0
    p = np.array([float(x) for x in capsys.readouterr().out.split()])
    assert p.size == 300 and ((p > 0) & (p < 1)).all()
    assert len(set(p.round(6))) > 10


def test_inspect_shows_config_fields_and_named_top_weights(
        criteo_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(criteo_file, "--model-out", tmp_path / "m.ctr", "--interactions",
                  "C1:C2") == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "m.ctr"), "--top", "15"]) == 0
    out = capsys.readouterr().out
    assert "optimizer  ftrl (alpha=0.1, beta=1, l1=1, l2=1)" in out
    assert "C1:C2" in out and "top 15 weights" in out
    assert main(["inspect", str(tmp_path / "m.ctr"), "--top", "40", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    tokens = {line.split("\t")[0] for line in criteo_file.read_text().splitlines()}
    assert tokens <= {"0", "1"}
    raw = criteo_file.read_text()
    for t in info["top"]:
        assert t["field"] in {"bias", "C1:C2"} | {f"I{i}" for i in range(1, 14)} | {
            f"C{i}" for i in range(1, 27)}
        if t["field"] not in ("bias", "C1:C2") and t["value"] != "(missing)":
            assert t["value"] in raw  # names are the real tokens
    assert info["sparsity"]["nnz"] == sum(f["nnz"] for f in info["sparsity"]["fields"].values())


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ("1\t2\t3", "wrong number of columns: found 3"),
        ("2" + "\t" * 39, "field label: label is not 0/1"),
        ("1\tnan" + "\t" * 38, "field I1: integer column holds a non-integer value"),
        ("0\t1\tinf" + "\t" * 37, "field I2: integer column"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path: Path, line: str, expect: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    good = criteo_lines(5, seed=1)
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join([*good[:3], line, *good[3:]]) + "\n")
    assert _train(path) == 2
    err = capsys.readouterr().err
    assert f"{path}:4:" in err and expect in err
    assert "Traceback" not in err
    # skipped and counted with --skip-bad-lines
    assert _train(path, "--skip-bad-lines", "--metrics-json", tmp_path / "m.json") == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["rows"] == 5 and m["bad_lines"] == 1
    assert "skipped 1 bad line" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "bad", "field"), [
    ("e.jsonl", '{"label": 1, "weight": 1e200, "features": {"a": "x"}}', "weight"),
    ("e.jsonl", '{"label": 1, "features": {"a": "x", "price": -3e9}}', "features.price"),
    ("e.vw", "1 1e200 |a x", "importance"),
])
def test_out_of_range_line_names_file_line_and_field(tmp_path: Path, name: str, bad: str,
                                                     field: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Weights and values past ``ftrl_core.limits`` (they would make the model non-finite)
    are bad lines of ``ctr train`` too, not only of the service."""
    good = ('{"label": 0, "features": {"a": "y", "price": 2.5}}' if name.endswith(".jsonl")
            else "0 |a y")
    path = tmp_path / name
    path.write_text("\n".join([good, good, bad, good]) + "\n")
    assert _train(path) == 2
    err = capsys.readouterr().err
    assert f"{path}:3: field {field}:" in err, err
    assert "Traceback" not in err
    assert _train(path, "--skip-bad-lines", "--metrics-json", tmp_path / "m.json") == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["rows"] == 3 and m["bad_lines"] == 1
    assert m["logloss"] is not None and np.isfinite(m["logloss"])


@pytest.mark.parametrize(
    ("setup", "expect"),
    [
        ("missing", "no such file"),
        ("empty", "empty input"),
        ("blank", "no rows"),
        ("unknown", "cannot tell the format"),
    ],
)
def test_unusable_input_gets_one_clear_line(tmp_path: Path, setup: str, expect: str) -> None:
    path = tmp_path / "data.txt"
    if setup == "empty":
        path.write_text("")
    elif setup == "blank":
        path = tmp_path / "blank.tsv"
        path.write_text("\n\n")
    elif setup == "unknown":
        path.write_text("hello world\n")
    res = subprocess.run([sys.executable, "-m", "service.cli", "train", str(path)],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert expect in res.stderr and res.stderr.count("\n") == 1, res.stderr


def test_hash_bits_folds_keys(criteo_file: Path, tmp_path: Path) -> None:
    assert _train(criteo_file, "--hash-bits", "6", "--model-out", tmp_path / "m.ctr") == 0
    model = Model.load(tmp_path / "m.ctr")
    assert model.sparsity().coordinates <= 64
    assert set(model.sparsity().fields) == {"*"}


def test_field_l1_override_zeroes_a_field(criteo_file: Path, tmp_path: Path) -> None:
    assert _train(criteo_file, "--l1", "0", "--field-l1", "C3=1000,bias=0",
                  "--model-out", tmp_path / "m.ctr") == 0
    fields = Model.load(tmp_path / "m.ctr").sparsity().fields
    assert fields["C3"]["nnz"] == 0 and fields["C4"]["nnz"] > 0


def test_drop_missing_changes_features(criteo_file: Path, tmp_path: Path) -> None:
    assert _train(criteo_file, "--metrics-json", tmp_path / "a.json") == 0
    assert _train(criteo_file, "--drop-missing", "--metrics-json", tmp_path / "b.json") == 0
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["feature_updates"] < a["feature_updates"] == 2000 * 40


def test_progress_line_on_stderr(criteo_file: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "service.cli", "train", str(criteo_file)],
                         capture_output=True, text=True, check=True)
    assert "rows 2,000" in res.stderr and "logloss" in res.stderr and "rows/s" in res.stderr


def test_unlabeled_criteo_bad_integer_names_the_field(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    train = write_criteo(tmp_path / "x.tsv", 50, seed=3)
    assert _train(train, "--model-out", tmp_path / "m.ctr") == 0
    test = tmp_path / "test.tsv"
    cols = criteo_lines(1, seed=4, labeled=False)[0].split("\t")
    cols[2] = "x1"  # I3
    test.write_text("\t".join(cols) + "\n")
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "m.ctr"), str(test)]) == 2
    assert "test.tsv:1: field I3: integer column" in capsys.readouterr().err


def test_rows_over_max_row_features_are_bad_lines(criteo_file: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(criteo_file, "--max-row-features", "10") == 2
    assert "train.tsv:1: too many features in one row" in capsys.readouterr().err


_MADVISE = ("import subprocess, sys\n"
            "from service.cli import main\n"
            "main(['inspect', '/nonexistent.ctr'])\n"
            "import numpy._core.multiarray as m\n"
            "child = subprocess.run([sys.executable, '-c', 'import numpy._core.multiarray as m; "
            "print(m._get_madvise_hugepage())'], capture_output=True, text=True).stdout\n"
            "print(m._get_madvise_hugepage(), child.strip())\n")


@pytest.mark.parametrize(("user", "expect"), [(None, "False False"), ("1", "True True")])
def test_the_command_line_keeps_numpy_from_advising_huge_pages(user: str | None,
                                                              expect: str) -> None:
    """``ctr`` turns NumPy's huge page advice off before NumPy loads, for itself and the
    worker processes it starts (each fresh large array was faulted in 2 MB pages zeroed
    whole); a setting the user made stays."""
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if user is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = user
    res = subprocess.run([sys.executable, "-c", _MADVISE], capture_output=True, text=True,
                         env=env, cwd=Path(__file__).resolve().parent.parent)
    assert res.stdout.split("\n")[-2] == expect, res.stderr

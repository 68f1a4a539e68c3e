"""The command line on damaged and hostile input: one line on stderr, never a traceback,
exit status 2; output files checked before any work and never left half-written."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from datagen import criteo_lines, write_criteo

from service.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run_ctr(*args: object) -> subprocess.CompletedProcess[str]:
    """A real `ctr` process (a traceback would show on its stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    return subprocess.run([sys.executable, "-m", "service.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def one_line_error(r: subprocess.CompletedProcess[str], *words: str) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _garbage(p: Path) -> None:
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())


def _no_header(p: Path) -> None:
    with open(p, "wb") as fh:
        np.savez(fh, foo=np.zeros(3))


def _crafted(p: Path) -> None:  # a header that names no parameters
    header = {"magic": "ctr-online-model", "format_version": 1, "config": {"optimizer": "ftrl"}}
    with open(p, "wb") as fh:
        np.savez(fh, header=np.frombuffer(json.dumps(header).encode(), np.uint8))


def _unknown_optimizer(p: Path) -> None:
    header = {"magic": "ctr-online-model", "format_version": 1,
              "config": {"optimizer": "nope", "params": {}}}
    with open(p, "wb") as fh:
        np.savez(fh, header=np.frombuffer(json.dumps(header).encode(), np.uint8))


def _truncated_zip(p: Path) -> None:
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("header.npy", b"\x93NUMPY" + b"\x00" * 50)
    p.write_bytes(p.read_bytes()[:40])


DAMAGED: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty": (_empty, "empty"),
    "garbage": (_garbage, "not a model file"),
    "no-header": (_no_header, "no header"),
    "crafted": (_crafted, "damaged model file"),
    "unknown-optimizer": (_unknown_optimizer, "unknown optimizer"),
    "truncated-zip": (_truncated_zip, "not a model file"),
}


@pytest.mark.parametrize("kind", DAMAGED)
def test_a_damaged_model_file_is_one_line_everywhere(tmp_path: Path, kind: str) -> None:
    make, words = DAMAGED[kind]
    model = tmp_path / "m.ctr"
    make(model)
    data = write_criteo(tmp_path / "d.tsv", 50, seed=1)
    for args in (("inspect", model), ("predict", "--model", model, data),
                 ("train", data, "--model-in", model, "--quiet")):
        line = one_line_error(run_ctr(*args), str(model), words)
        assert "allow_pickle" not in line and "pickle.load" not in line


def test_serve_refuses_a_damaged_model_before_starting(tmp_path: Path) -> None:
    model = tmp_path / "m.ctr"
    _garbage(model)
    one_line_error(run_ctr("serve", "--port", "0", "--model-in", model), str(model),
                   "not a model file")


def test_truncated_gzip_input_is_one_line(tmp_path: Path) -> None:
    raw = ("\n".join(criteo_lines(3000, seed=2)) + "\n").encode()
    packed = gzip.compress(raw)
    path = tmp_path / "cut.tsv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    one_line_error(run_ctr("train", path, "--quiet"), str(path), "damaged gzip")
    path.write_bytes(packed[:2] + b"\xff" * 100)  # the magic, then garbage
    one_line_error(run_ctr("train", path, "--quiet", "--format", "criteo"), str(path),
                   "damaged gzip")


def test_output_paths_are_checked_before_any_work(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = write_criteo(tmp_path / "d.tsv", 50, seed=1)
    (tmp_path / "adir").mkdir()
    for flag in ("--model-out", "--predictions-out", "--metrics-json"):
        assert main(["train", str(data), "--quiet", flag, str(tmp_path / "adir")]) == 2
        assert "is a directory" in capsys.readouterr().err
        missing = tmp_path / "no" / "such" / "out"
        assert main(["train", str(data), "--quiet", flag, str(missing)]) == 2
        assert "does not exist" in capsys.readouterr().err
        assert not (tmp_path / "no").exists()  # never created silently


def test_a_failed_run_leaves_no_partial_outputs(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    lines = criteo_lines(3000, seed=4)
    lines[2500] = "x" + lines[2500]  # a bad label, far into the file
    data = tmp_path / "bad.tsv"
    data.write_text("\n".join(lines) + "\n")
    preds, metrics, model = tmp_path / "p.txt", tmp_path / "m.json", tmp_path / "m.ctr"
    args = ["train", str(data), "--quiet", "--predictions-out", str(preds),
            "--metrics-json", str(metrics), "--model-out", str(model)]
    assert main(args) == 2
    assert "bad.tsv:2501" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv"]  # no temp file either
    # the same run with the bad line skipped writes all three, in full
    assert main([*args, "--skip-bad-lines"]) == 0
    assert np.loadtxt(preds).size == 2999
    assert json.loads(metrics.read_text())["bad_lines"] == 1 and model.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv", "m.ctr", "m.json",
                                                          "p.txt"]


@pytest.mark.parametrize("fmt", ["vw", "jsonl", "criteo"])
def test_binary_garbage_is_escaped_in_messages(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "bin.dat"
    rng = np.random.default_rng(7)
    path.write_bytes(b"~|" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    line = one_line_error(run_ctr("train", path, "--format", fmt, "--quiet"), str(path))
    assert all(ch == "\t" or ch.isprintable() for ch in line), repr(line)
    assert "\ufffd" not in line  # bytes are shown as \xNN, not replaced
    assert len(line) < 600  # names and text are cut short


def test_declared_fields_from_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--fields @FILE`: an event that leaves a declared field out is learned as if it had
    sent it empty (its missing token); the declaration travels with the model."""
    (tmp_path / "fields.txt").write_text("# the schema\nsite\napp\n\nhour\n")
    rng = np.random.default_rng(2)
    sparse, full = [], []
    for _ in range(500):
        site, hour = f"s{rng.integers(0, 9)}", str(rng.integers(0, 24))
        label = int(rng.integers(0, 2))
        sparse.append({"label": label, "features": {"site": site, "hour": hour}})
        full.append({"label": label, "features": {"site": site, "app": "", "hour": hour}})
    for name, events in (("sparse", sparse), ("full", full)):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(e) for e in events))
        assert main(["train", str(tmp_path / f"{name}.jsonl"), "--quiet",
                     "--fields", f"@{tmp_path / 'fields.txt'}",
                     "--predictions-out", str(tmp_path / f"{name}.p"),
                     "--model-out", str(tmp_path / f"{name}.ctr")]) == 0
    # the same features; the missing token comes last in the row, so sums may differ in
    # the last bit (as for two JSON events that list their fields in other orders)
    np.testing.assert_allclose(np.loadtxt(tmp_path / "sparse.p"),
                               np.loadtxt(tmp_path / "full.p"), rtol=1e-13, atol=0)
    from ftrl_core.model import Model

    model = Model.load(tmp_path / "sparse.ctr")
    assert model.options.fields == ("site", "app", "hour")
    assert model.registry.names[:4] == ["bias", "site", "app", "hour"]
    # and it is a jsonl declaration: other formats have their own fields
    data = write_criteo(tmp_path / "d.tsv", 20, seed=1)
    assert main(["train", str(data), "--quiet", "--fields", "a,b"]) == 2
    assert "--fields" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "full.jsonl"), "--quiet", "--fields", "a,a"]) == 2
    assert "declared twice" in capsys.readouterr().err

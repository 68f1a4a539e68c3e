"""``ctr replay`` and ``ctr predict --url`` against real servers: the progressive metrics over
HTTP equal ``ctr train``'s on the same rows, and equal those of a plain /v1/train loop."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from datagen import criteo_lines, write_criteo
from servers import ServerProcess

from clients import CTRClient
from ftrl_core.metrics import ProgressiveMetrics
from ftrl_core.readers.criteo import FIELDS
from service.cli import main


def ctr(*args: str) -> int:
    return main([*args])


def metrics_of(path: Path) -> dict:
    return json.loads(path.read_text())


def write_avazu(path: Path, rows: int, seed: int) -> Path:
    lines = ["id,click,hour,C1,banner_pos,site_id,site_domain,app_id,device_model"]
    for i, ln in enumerate(criteo_lines(rows, seed=seed, missing=0.15)):
        cols = ln.split("\t")
        lines.append(",".join([str(10_000 + i), cols[0], f"141021{i % 24:02d}", *cols[14:20]]))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path: Path, rows: int, seed: int) -> Path:
    out = []
    for i, ln in enumerate(criteo_lines(rows, seed=seed, missing=0.15)):
        cols = ln.split("\t")
        feats: dict = {"site": cols[14], "app": cols[15] or None,
                       "tags": [c for c in cols[16:19] if c], "price": (i % 7) / 3}
        out.append(json.dumps({"label": int(cols[0]), "features": feats, "id": f"e{i}"}))
    path.write_text("\n".join(out) + "\n")
    return path


def write_vw(path: Path, rows: int, seed: int) -> Path:
    """Namespaces of tokens, importance weights, tags, the default namespace."""
    out = []
    for i, ln in enumerate(criteo_lines(rows, seed=seed, missing=0.2)):
        cols = ln.split("\t")
        site = " ".join(t for t in cols[14:20] if t)
        label = "1" if cols[0] == "1" else "-1"
        out.append(f"{label} {1 + i % 3} 'r{i}|site {site} |app {cols[20] or 'na'} | d{i % 5}")
    path.write_text("\n".join(out) + "\n")
    return path


WRITERS = {
    "criteo": lambda p, n, s: write_criteo(p.with_suffix(".tsv"), n, seed=s),
    "avazu": lambda p, n, s: write_avazu(p.with_suffix(".csv"), n, s),
    "jsonl": lambda p, n, s: write_jsonl(p.with_suffix(".jsonl"), n, s),
    "vw": lambda p, n, s: write_vw(p.with_suffix(".vw"), n, s),
}


@pytest.mark.parametrize("fmt", ["criteo", "avazu", "jsonl", "vw"])
def test_replay_equals_ctr_train(fresh_server: Callable[..., ServerProcess], tmp_path: Path,
                                 fmt: str) -> None:
    data = WRITERS[fmt](tmp_path / "data", 1500, 11)
    server = fresh_server("--alpha", "0.2", "--l1", "0.5")
    assert ctr("replay", str(data), "--url", server.url, "--concurrency", "1",
               "--batch-size", "128", "--quiet", "--metrics-json",
               str(tmp_path / "replay.json")) == 0
    assert ctr("train", str(data), "--alpha", "0.2", "--l1", "0.5", "--quiet",
               "--metrics-json", str(tmp_path / "train.json")) == 0
    http, local = metrics_of(tmp_path / "replay.json"), metrics_of(tmp_path / "train.json")
    assert http["rows"] == local["rows"] == 1500
    assert abs(http["logloss"] - local["logloss"]) <= 1e-12
    assert abs(http["auc"] - local["auc"]) <= 1e-12
    for key in ("seconds", "events_per_second"):
        assert http[key] > 0
    with CTRClient(server.url) as c:
        model = c.model()
    assert model["rows"] == 1500 and model["nnz"] == local["nnz"]


def test_replay_equals_a_direct_train_loop(fresh_server: Callable[..., ServerProcess],
                                           tmp_path: Path) -> None:
    lines = criteo_lines(900, seed=5, missing=0.2)
    data = tmp_path / "d.tsv"
    data.write_text("\n".join(lines) + "\n")
    a, b = fresh_server("--alpha", "0.2"), fresh_server("--alpha", "0.2")
    assert ctr("replay", str(data), "--url", a.url, "--concurrency", "1", "--batch-size",
               "100", "--quiet", "--metrics-json", str(tmp_path / "m.json")) == 0
    direct = ProgressiveMetrics()
    with CTRClient(b.url) as c:
        for start in range(0, len(lines), 100):
            rows = [ln.split("\t") for ln in lines[start:start + 100]]
            evs = [{"label": int(r[0]), "features": dict(zip(FIELDS, r[1:], strict=True))}
                   for r in rows]
            p = np.asarray(c.train(evs).p)
            direct.update(p, np.array([e["label"] for e in evs], dtype=np.float64))
    m = metrics_of(tmp_path / "m.json")
    assert m["rows"] == direct.rows == 900
    assert m["logloss"] == direct.logloss
    assert m["auc"] == direct.auc


def test_replay_concurrent_and_limited(ctr_server: ServerProcess, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = write_criteo(tmp_path / "c.tsv.gz", 3000, seed=2)
    with CTRClient(ctr_server.url) as c:
        before = c.model()["rows"]
    assert ctr("replay", str(data), "--url", ctr_server.url, "--concurrency", "4",
               "--batch-size", "100", "--limit", "2500", "--metrics-json",
               str(tmp_path / "m.json")) == 0
    m = metrics_of(tmp_path / "m.json")
    assert m["rows"] == 2500 and m["batches"] == 25
    assert 0 < m["logloss"] < 1 and 0.5 < m["auc"] <= 1
    with CTRClient(ctr_server.url) as c:
        assert c.model()["rows"] == before + 2500
    err = capsys.readouterr().err
    assert "events/s" in err and "logloss" in err


def test_bad_lines(ctr_server: ServerProcess, tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    lines = criteo_lines(50, seed=1)
    lines[20] = "1\tx" + "\t" * 38  # I1 is not an integer
    data = tmp_path / "bad.tsv"
    data.write_text("\n".join(lines) + "\n")
    assert ctr("replay", str(data), "--url", ctr_server.url, "--quiet") == 2
    assert f"{data}:21: field I1:" in capsys.readouterr().err
    assert ctr("replay", str(data), "--url", ctr_server.url, "--quiet", "--skip-bad-lines",
               "--metrics-json", str(tmp_path / "m.json")) == 0
    m = metrics_of(tmp_path / "m.json")
    assert (m["rows"], m["bad_lines"]) == (49, 1)
    # an event the server refuses (a label of 2 passes the reader): named by its line
    events = tmp_path / "e.jsonl"
    rows = [{"label": i % 2, "features": {"a": f"v{i}"}} for i in range(30)]
    rows[17]["label"] = 2
    events.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert ctr("replay", str(events), "--url", ctr_server.url, "--quiet",
               "--batch-size", "10") == 2
    err = capsys.readouterr().err
    assert f"{events}:18: field label:" in err
    assert ctr("replay", str(events), "--url", ctr_server.url, "--quiet", "--skip-bad-lines",
               "--batch-size", "10", "--metrics-json", str(tmp_path / "e.json")) == 0
    assert metrics_of(tmp_path / "e.json")["rows"] == 29
    assert "line 18: label" in capsys.readouterr().err


def test_unreachable_server_is_a_clean_error(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from servers import free_port

    data = write_criteo(tmp_path / "c.tsv", 10)
    url = f"http://127.0.0.1:{free_port()}"
    assert ctr("replay", str(data), "--url", url, "--quiet", "--timeout", "2") == 2
    assert "connection" in capsys.readouterr().err.lower()


def test_predict_url_equals_predict_model(fresh_server: Callable[..., ServerProcess],
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    server = fresh_server("--alpha", "0.2")
    train = write_criteo(tmp_path / "train.tsv", 1200, seed=3)
    test = write_criteo(tmp_path / "test.tsv", 700, seed=4, labeled=False)
    assert ctr("replay", str(train), "--url", server.url, "--quiet") == 0
    with CTRClient(server.url) as c:
        c.download_model(tmp_path / "m.ctr")
    capsys.readouterr()
    assert ctr("predict", str(test), "--model", str(tmp_path / "m.ctr"),
               "--format", "criteo") == 0
    local = capsys.readouterr().out
    assert ctr("predict", str(test), "--url", server.url, "--batch-size", "64",
               "--concurrency", "3") == 0
    remote = capsys.readouterr().out
    assert len(remote.splitlines()) == 700
    assert remote == local
    with pytest.raises(SystemExit):  # exactly one of --model and --url
        ctr("predict", str(test), "--url", server.url, "--model", str(tmp_path / "m.ctr"))

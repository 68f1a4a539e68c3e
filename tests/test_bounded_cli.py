"""``ctr train`` with the bounded-memory flags, end to end on files the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datagen import write_criteo
from redis_servers import RedisServer

from ftrl_core.model import Model
from service.cli import main


def _train(*args: object) -> int:
    return main(["train", *map(str, args), "--quiet"])


@pytest.fixture
def wide_file(tmp_path: Path) -> Path:
    """3,000 Criteo-like rows over a vocabulary wide enough for a long tail of one-offs."""
    return write_criteo(tmp_path / "wide.tsv", 3000, seed=3, vocab=3000)


def _metrics(path: Path) -> dict[str, float]:
    return dict(json.loads(path.read_text()))


def test_admit_shrinks_the_table_and_the_model_file_keeps_the_filter(
        wide_file: Path, tmp_path: Path) -> None:
    m0, m2 = tmp_path / "m0.json", tmp_path / "m2.json"
    assert _train(wide_file, "--metrics-json", m0) == 0
    assert _train(wide_file, "--admit", "bloom:2:20000", "--metrics-json", m2,
                  "--model-out", tmp_path / "m.ctr") == 0
    plain, bloom = _metrics(m0), _metrics(m2)
    assert "admitted" not in plain
    # features seen once never get a coordinate: far fewer coordinates
    assert bloom["live_coordinates"] < 0.7 * plain["live_coordinates"]
    assert bloom["admitted"] + 1 == bloom["live_coordinates"]  # + the bias
    assert bloom["refused"] > 0
    assert bloom["filter_bytes"] == 2 * (1 << 17)  # two generations of 4 x 20000 counters
    assert abs(bloom["logloss"] - plain["logloss"]) < 0.02
    model = Model.load(tmp_path / "m.ctr")
    adm = model.optimizer.admission
    assert adm is not None and str(adm.spec) == "bloom:2:20000"
    assert adm.refused == bloom["refused"] and adm.counts.any()


def test_resuming_with_admission_equals_one_run(wide_file: Path, tmp_path: Path) -> None:
    lines = wide_file.read_text().splitlines(keepends=True)
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    a.write_text("".join(lines[:1700]))
    b.write_text("".join(lines[1700:]))
    one, p1, p2 = tmp_path / "one.txt", tmp_path / "p1.txt", tmp_path / "p2.txt"
    assert _train(wide_file, "--admit", "poisson:0.2", "--predictions-out", one) == 0
    assert _train(a, "--admit", "poisson:0.2", "--model-out", tmp_path / "a.ctr") == 0
    assert _train(b, "--model-in", tmp_path / "a.ctr", "--predictions-out", p2) == 0
    assert _train(a, "--admit", "poisson:0.2", "--predictions-out", p1) == 0
    np.testing.assert_array_equal(np.loadtxt(one),
                                  np.concatenate([np.loadtxt(p1), np.loadtxt(p2)]))


def test_a_bad_admit_value_is_one_line_naming_the_flag(
        wide_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(wide_file, "--admit", "bloom:0") != 0
    err = capsys.readouterr().err.strip()
    assert "--admit" in err and "\n" not in err


def test_a_version_1_model_file_still_loads(wide_file: Path, tmp_path: Path) -> None:
    import io
    import zipfile

    assert _train(wide_file, "--model-out", tmp_path / "m.ctr") == 0
    raw = tmp_path / "m.ctr"
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "header.npy":
                arr = np.load(io.BytesIO(data))
                header = json.loads(arr.tobytes())
                assert header["format_version"] == 2
                header["format_version"] = 1
                buf = io.BytesIO()
                np.save(buf, np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
                data = buf.getvalue()
            dst.writestr(item, data)
    old = tmp_path / "old.ctr"
    old.write_bytes(out.getvalue())
    assert Model.load(old).rows == 3000


def test_admit_with_a_hashed_redis_cluster_is_refused_naming_the_flag(
        wide_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # refused before any connection: no Redis server is needed
    assert _train(wide_file, "--admit", "bloom:2", "--hash-bits", "18", "--state",
                  "redis+cluster://127.0.0.1:1") != 0
    err = capsys.readouterr().err.strip()
    assert "--admit" in err and "--hash-bits" in err and "\n" not in err


@pytest.mark.redis
def test_one_worker_on_redis_admits_as_the_memory_store_does(
        wide_file: Path, tmp_path: Path, redis_shards: list[RedisServer]) -> None:
    """Admission with Redis (one worker, a flush after every batch): the same predictions
    as without Redis, and Redis holds exactly the admitted coordinates."""
    mem, red = tmp_path / "mem.txt", tmp_path / "redis.txt"
    mm, mr = tmp_path / "mem.json", tmp_path / "redis.json"
    state = ",".join(s.url for s in redis_shards)
    flags = ("--admit", "bloom:2", "--evict-idle", "1000000")  # no coordinate goes idle
    assert _train(wide_file, *flags, "--predictions-out", mem, "--metrics-json", mm,
                  "--model-out", tmp_path / "mem.ctr") == 0
    assert _train(wide_file, *flags, "--predictions-out", red, "--metrics-json", mr,
                  "--state", state, "--model-out", tmp_path / "redis.ctr") == 0
    np.testing.assert_allclose(np.loadtxt(red), np.loadtxt(mem), rtol=0, atol=1e-12)
    # the model file written from Redis keeps this process's filter, and the ages
    a = Model.load(tmp_path / "mem.ctr").optimizer.state()
    b = Model.load(tmp_path / "redis.ctr").optimizer.state()
    for name in ("admission_counts", "admission_state", "field_counts"):
        np.testing.assert_array_equal(a[name], b[name])
    assert b["ages"].size == b["records"].shape[0] and b["ages"].min() > 0
    a, b = _metrics(mm), _metrics(mr)
    assert (a["admitted"], a["refused"]) == (b["admitted"], b["refused"])
    held = sum(s.client().hlen(k) for s in redis_shards
               for k in s.client().scan_iter(match="ctr:default:b:*"))
    assert held == a["live_coordinates"]


def test_evict_flags_bound_the_table_and_resume_exactly(wide_file: Path, tmp_path: Path
                                                        ) -> None:
    m0, m1 = tmp_path / "m0.json", tmp_path / "m1.json"
    assert _train(wide_file, "--metrics-json", m0) == 0
    assert _train(wide_file, "--max-coordinates", "2000", "--evict-idle", "500",
                  "--metrics-json", m1) == 0
    plain, bounded = _metrics(m0), _metrics(m1)
    # the cap holds at each check point (every 1024 rows): 952 rows of new keys since
    assert bounded["live_coordinates"] < 0.6 * plain["live_coordinates"]
    assert bounded["evicted"] > 0
    # resuming from a model file evicts (and samples) as one run does
    lines = wide_file.read_text().splitlines(keepends=True)
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    a.write_text("".join(lines[:1300]))
    b.write_text("".join(lines[1300:]))
    one, p1, p2 = tmp_path / "one.txt", tmp_path / "p1.txt", tmp_path / "p2.txt"
    flags = ("--max-coordinates", "2000", "--evict-idle", "500", "--admit", "bloom:2")
    assert _train(wide_file, *flags, "--predictions-out", one) == 0
    assert _train(a, *flags, "--predictions-out", p1, "--model-out", tmp_path / "a.ctr") == 0
    assert _train(b, "--model-in", tmp_path / "a.ctr", "--predictions-out", p2) == 0
    np.testing.assert_array_equal(np.loadtxt(one),
                                  np.concatenate([np.loadtxt(p1), np.loadtxt(p2)]))
    model = Model.load(tmp_path / "a.ctr")
    assert model.optimizer.eviction is not None
    assert model.optimizer.eviction.spec.max_coordinates == 2000
    assert model.optimizer.eviction.spec.idle == 500


@pytest.mark.parametrize("flag", [("--evict-idle", "100"), ("--max-coordinates", "10")])
def test_evict_flags_with_hashed_redis_are_refused(
        wide_file: Path, capsys: pytest.CaptureFixture[str], flag: tuple[str, str]) -> None:
    # --hash-bits: dense chunks, already bounded by the bits (refused before connecting)
    assert _train(wide_file, *flag, "--hash-bits", "18", "--state",
                  "redis://127.0.0.1:1") != 0
    err = capsys.readouterr().err.strip()
    assert flag[0] in err and "--hash-bits" in err and "\n" not in err

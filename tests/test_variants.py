"""Shadow variants (``--variants``), ``/v1/variants``, ``/v1/stats`` and their snapshots.

A variant must learn exactly what a primary of the same learner would learn from the same
events; it must resume from its snapshot file; bad ``--variants`` text must stop
``ctr serve`` with a message naming the bad part."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from service_helpers import running_app, some_events

from ftrl_core.metrics import AUC_BINS, ProgressiveMetrics
from service.settings import Settings
from service.stores import checkpoints
from service.variants import parse_variants

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("rows", "nnz", "coordinates", "l1_norm", "logloss", "auc", "calibration")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[call-arg]


async def train(client: Any, events: list[dict[str, Any]], batch: int = 400) -> None:
    for i in range(0, len(events), batch):
        r = await client.post("/v1/train", json={"events": events[i:i + batch]})
        assert r.status_code == 200, r.text


# -- the --variants syntax ---------------------------------------------------------------------


def test_parse_names_params_and_aliases() -> None:
    specs = parse_variants("rda:lambda=0.5, fobos:lambda=1,tg:gravity=0.5;rate=global,"
                           "ftrl:alpha=0.1;l1=5;name=strong,ftrl")
    assert [s.name for s in specs] == ["rda:lambda=0.5", "fobos:lambda=1",
                                       "tg:gravity=0.5;rate=global", "strong", "ftrl"]
    assert specs[2].params == {"gravity": 0.5, "rate": "global"}
    assert specs[3].params == {"alpha": 0.1, "l1": 5.0}
    assert parse_variants("fobos:l1=2")[0].params == {"lambda": 2.0}  # l1: the L1 strength
    assert specs[0].filename == "variant-rda-lambda-0.5.ctr"
    assert parse_variants("") == parse_variants(None) == []


@pytest.mark.parametrize(("text", "message"), [
    ("sgd:l1=1", "'sgd:l1=1': unknown optimizer 'sgd'"),
    ("ftrl:l1", "'ftrl:l1': 'l1' is not PARAM=VALUE"),
    ("rda:alpha=1", "'rda:alpha=1': rda has no parameter 'alpha'"),
    ("ftrl:l1=abc", "'ftrl:l1=abc': l1='abc' is not a number"),
    ("ftrl:l1=-1", "'ftrl:l1=-1': ftrl: l1 must be >= 0"),
    ("fobos:rate=daily", "'fobos:rate=daily': fobos: rate must be one of"),
    ("ftrl:l1=1,,rda", "an empty variant"),
    ("rda,rda", "two variants are named 'rda'"),
    ("ftrl:name=primary", "reserved"),
    ("ftrl:name=a b,rda:name=a-b", "would share the snapshot file variant-a-b.ctr"),
])
def test_parse_errors_name_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_variants(text)
    assert message in str(info.value)


def test_ctr_serve_refuses_bad_variants_at_startup() -> None:
    res = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--port", "0",
                          "--variants", "rda:lambda=1e-4,tg:gravity=x"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2
    assert "--variants: 'tg:gravity=x': gravity='x' is not a number" in res.stderr


# -- learning ----------------------------------------------------------------------------------


async def _figures(s: Settings, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with running_app(s) as c:
        await train(c, events)
        r = await c.get("/v1/variants")
        assert r.status_code == 200
        body = r.json()
        assert body["model_version"] == len(events)
        return list(body["variants"])


@pytest.mark.anyio
async def test_a_variant_learns_as_that_learner_would_as_primary() -> None:
    events = some_events(2400, seed=3)
    with_variants = await _figures(settings(alpha=0.2, field_l1="C3=0",
                                            variants="rda:lambda=1e-4,fobos:l1=1e-4"),
                                   events)
    alone_rda = await _figures(settings(optimizer="rda", lambda_=1e-4, field_l1="C3=0"),
                               events)
    alone_fobos = await _figures(settings(optimizer="fobos", lambda_=1e-4,
                                          field_l1="C3=0"), events)
    assert [v["name"] for v in with_variants] == ["primary", "rda:lambda=1e-4",
                                                  "fobos:l1=1e-4"]
    assert [v["primary"] for v in with_variants] == [True, False, False]
    for variant, alone in ((with_variants[1], alone_rda[0]), (with_variants[2], alone_fobos[0])):
        assert {k: variant[k] for k in FIGURES} == {k: alone[k] for k in FIGURES}
        assert variant["params"] == alone["params"]
    # the primary is unchanged by its variants
    assert with_variants[0] == (await _figures(settings(alpha=0.2, field_l1="C3=0"), events))[0]


@pytest.mark.anyio
async def test_a_rejected_batch_teaches_no_variant() -> None:
    events = some_events(300, seed=4)
    async with running_app(settings(variants="ftrl:l1=5")) as c:
        await train(c, events)
        bad = [*events[:10], {"label": 3, "features": {"x": "y"}}]
        r = await c.post("/v1/train", json={"events": bad})
        assert r.status_code == 422
        rows = [v["rows"] for v in (await c.get("/v1/variants")).json()["variants"]]
        assert rows == [300, 300]


# -- snapshots ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_variants_are_saved_beside_the_primary_and_resumed(tmp_path: Path) -> None:
    spec = "rda:lambda=1e-4,ftrl:l1=5;name=strong"
    first, second = some_events(1200, seed=5), some_events(800, seed=6)
    data = tmp_path / "data"
    async with running_app(settings(variants=spec, data_dir=data)) as c:
        await train(c, first)
        assert (await c.post("/v1/model/snapshot")).status_code == 200
        saved = (await c.get("/v1/variants")).json()["variants"]
    folder = checkpoints.current(data)
    assert folder is not None
    assert sorted(p.name for p in folder.glob("*.ctr")) == [
        "model.ctr", "variant-rda-lambda-1e-4.ctr", "variant-strong.ctr"]

    # resumed from the data directory: the same figures, then learning goes on as in one run
    async with running_app(settings(variants=spec, data_dir=data)) as c:
        assert (await c.get("/v1/variants")).json()["variants"] == saved
        await train(c, second)
        resumed = (await c.get("/v1/variants")).json()["variants"]
    assert resumed == await _figures(settings(variants=spec), first + second)

    # a checkpoint's model file with --model-in finds its variants beside it
    folder = checkpoints.current(data)
    assert folder is not None
    model_in = folder / "model.ctr"
    async with running_app(settings(variants=spec, model_in=model_in)) as c:
        assert [v["rows"] for v in (await c.get("/v1/variants")).json()["variants"]] == \
            [2000, 2000, 2000]

    # another learner under a saved name, or a new variant, starts empty
    async with running_app(settings(variants="ftrl:l1=1;name=strong,tg", model_in=model_in)
                           ) as c:
        rows = [v["rows"] for v in (await c.get("/v1/variants")).json()["variants"]]
        assert rows == [2000, 0, 0]


# -- the stats feed and who may read it --------------------------------------------------------


@pytest.mark.anyio
async def test_stats_feed_samples_history_and_matches_variants() -> None:
    async with running_app(settings(variants="ftrl:l1=5", stats_every=0.1)) as c:
        await train(c, some_events(800, seed=8))
        for _ in range(100):
            body = (await c.get("/v1/stats")).json()
            if body["model_version"] == 800:
                break
            await anyio.sleep(0.05)
        assert body["model_version"] == 800
        variants = (await c.get("/v1/variants")).json()["variants"]
        assert [{k: m[k] for k in variants[0]} for m in body["models"]] == variants
        m = body["models"][1]
        assert sum(m["abs_w_counts"]) == m["nnz"]
        assert len(body["abs_w_edges"]) == len(m["abs_w_counts"]) + 1
        assert sum(b["rows"] for b in m["calibration_buckets"]) == 800
        assert sum(f["nnz"] for f in m["fields"].values()) == m["nnz"]
        history = body["history"]
        assert list(history["models"]) == ["primary", "ftrl:l1=5"]
        assert history["models"]["ftrl:l1=5"]["nnz"][-1] == m["nnz"]
        last = history["seq"][-1]
        newer = (await c.get(f"/v1/stats?since={last}")).json()["history"]
        assert all(s > last for s in newer["seq"])
        assert (await c.get("/v1/stats?since=-1")).status_code == 422


@pytest.mark.anyio
@pytest.mark.parametrize("predict_open", [False, True])
async def test_dashboard_reads_follow_the_predict_rule(predict_open: bool) -> None:
    s = settings(api_keys="k1", predict_open=predict_open, variants="ftrl:l1=5")
    async with running_app(s) as c:
        assert (await c.get("/dashboard")).status_code == 200  # the page is always public
        js = await c.get("/dashboard/static/vendor/uPlot.iife.min.js")
        assert js.status_code == 200 and "uPlot" in js.text
        for path in ("/v1/stats", "/v1/variants"):
            assert (await c.get(path)).status_code == (200 if predict_open else 401)
            bad = await c.get(path, headers={"Authorization": "Bearer nope"})
            assert bad.status_code == (200 if predict_open else 403)
            ok = await c.get(path, headers={"Authorization": "Bearer k1"})
            assert ok.status_code == 200
        assert (await c.get("/v1/model")).status_code == 401  # model reads keep their rule


# -- calibration by bucket ---------------------------------------------------------------------


def test_calibration_buckets_are_read_off_the_auc_histogram() -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(1, 8, 20_000)
    y = (rng.random(p.size) < p).astype(np.float64)
    m = ProgressiveMetrics()
    m.update(p, y)
    buckets = m.calibration_buckets(10)
    assert len(buckets) == 10
    assert sum(b["rows"] for b in buckets) == p.size
    assert all(abs(b["rows"] - 2000) <= 2 for b in buckets)
    # bucket by bucket, against an exact sort of the same rows
    order = np.argsort(p, kind="stable")
    start = 0
    for b in buckets:
        idx = order[start:start + b["rows"]]
        assert b["mean_p"] == pytest.approx(p[idx].mean(), abs=1.0 / AUC_BINS)
        assert b["ctr"] == pytest.approx(y[idx].mean(), abs=1e-12)
        start += b["rows"]
    assert ProgressiveMetrics().calibration_buckets() == []

"""``ctr serve`` with the bounded-memory flags: the memory store learns through them, /metrics
counts them, a shared store refuses them naming the flag."""

from __future__ import annotations

import pytest
from redis_servers import RedisServer
from service_helpers import running_app, some_events

from service.cli import main
from service.settings import Settings
from service.startup import check_startup

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def test_metrics_count_admitted_refused_evicted_and_live() -> None:
    settings = Settings(admit="bloom:2:5000", max_coordinates=300,  # type: ignore[call-arg]
                        _env_file=None)
    async with running_app(settings) as client:
        for seed in range(3):  # 3 x 400 events: a check point (every 1024) is crossed
            r = await client.post("/v1/train", json={"events": some_events(400, seed=seed)})
            assert r.status_code == 200
        samples = _samples((await client.get("/metrics")).text)
        model = client.app.state.learner._model  # type: ignore[attr-defined]
    counts = model.optimizer.bounds.counts(model.optimizer.table)
    assert samples["ctr_coordinates_admitted_total"] == counts["admitted"] > 0
    assert samples["ctr_coordinates_refused_total"] == counts["refused"] > 0
    assert samples["ctr_coordinates_evicted_total"] == counts["evicted"] > 0
    assert samples["ctr_live_coordinates"] == counts["live"] == model.optimizer.table.size
    assert samples["ctr_admission_filter_bytes"] == 2 * (1 << 15)
    assert model.optimizer.config()["admit"] == "bloom:2:5000"


async def test_metrics_split_the_counters_by_field_as_v1_stats_does() -> None:
    settings = Settings(admit="bloom:2:5000", max_coordinates=300,  # type: ignore[call-arg]
                        _env_file=None)
    async with running_app(settings) as client:
        for seed in range(3):
            r = await client.post("/v1/train", json={"events": some_events(400, seed=seed)})
            assert r.status_code == 200
        samples = _samples((await client.get("/metrics")).text)
        learner = client.app.state.learner  # type: ignore[attr-defined]
        per_field = (await learner.stats()).bounded_fields  # what /v1/stats shows
    assert len(per_field) > 1
    for field, counts in per_field.items():
        for name in ("admitted", "refused", "evicted"):
            assert samples[f'ctr_field_coordinates_{name}_total{{field="{field}"}}'] \
                == counts[name]
        assert samples[f'ctr_field_live_coordinates{{field="{field}"}}'] == counts["live"]
    # the split adds up to the totals
    for name in ("admitted", "refused", "evicted"):
        assert sum(c[name] for c in per_field.values()) \
            == samples[f"ctr_coordinates_{name}_total"]
    assert sum(c["live"] for c in per_field.values()) == samples["ctr_live_coordinates"]


async def test_metrics_without_bounds_have_live_coordinates_only() -> None:
    async with running_app(Settings(_env_file=None)) as client:  # type: ignore[call-arg]
        await client.post("/v1/train", json={"events": some_events(50)})
        samples = _samples((await client.get("/metrics")).text)
    assert samples["ctr_live_coordinates"] > 0
    assert "ctr_coordinates_evicted_total" not in samples


@pytest.mark.parametrize(("env", "value", "flag"), [("CTR_ADMIT", "bloom:2", "--admit"),
                                                   ("CTR_EVICT_IDLE", "1000", "--evict-idle"),
                                                   ("CTR_MAX_COORDINATES", "10",
                                                    "--max-coordinates")])
def test_hashed_redis_refuses_the_flags_and_their_variables(
        monkeypatch: pytest.MonkeyPatch, env: str, value: str, flag: str) -> None:
    monkeypatch.setenv(env, value)
    for url in ("redis://127.0.0.1:1", "redis+cluster://127.0.0.1:1"):
        monkeypatch.delenv("CTR_HASH_BITS", raising=False)
        monkeypatch.setenv("CTR_STATE", url)
        check_startup(Settings())  # redis:// shards and a cluster take them (exact keys)
        monkeypatch.setenv("CTR_HASH_BITS", "18")
        with pytest.raises(ValueError, match=f"^{flag} does not work with --hash-bits"):
            check_startup(Settings())


def test_ctr_serve_refuses_them_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # refused before any connection is tried: no Redis server is needed
    assert main(["serve", "--state", "redis+cluster://127.0.0.1:1", "--hash-bits", "18",
                 "--evict-idle", "2h"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--evict-idle" in err and "--hash-bits" in err and "\n" not in err


@pytest.mark.redis
async def test_redis_metrics_count_the_shared_evictions(redis_shards: list[RedisServer]
                                                        ) -> None:
    """``ctr serve --state redis://...`` with --admit and --evict-idle: the sweep drops idle
    coordinates in Redis; /metrics counts them (in total and per field), the shared live
    coordinates and the sweep's longest call."""
    state = ",".join(s.url for s in redis_shards)
    settings = Settings(state=state, admit="bloom:2", evict_idle="300",  # type: ignore[call-arg]
                        _env_file=None)
    async with running_app(settings) as client:
        for seed in range(2):
            r = await client.post("/v1/train", json={"events": some_events(400, seed=seed)})
            assert r.status_code == 200
        store = client.app.state.learner.store  # type: ignore[attr-defined]
        await store.sync()
        # the figures before the sweep, as the dashboard's sampler may take them: the
        # sweep changes no row, and the figures after it must still be its own
        await client.app.state.learner.stats()  # type: ignore[attr-defined]
        # 800 events learned: the coordinates of the first 400 alone are idle past 300
        while (report := await store.sweep_once(start_pass=True)) is not None \
                and not report.passes:
            pass  # a pass may take more than one sweep (MAX_CALLS calls a shard each)
        held = sum(s.client().hlen(k) for s in redis_shards
                   for k in s.client().scan_iter(match="ctr:default:b:*"))
        samples = _samples((await client.get("/metrics")).text)
        learner = client.app.state.learner  # type: ignore[attr-defined]
        per_field = (await learner.stats()).bounded_fields
        model = learner._model
    evicted = model.optimizer.bounds.counts(model.optimizer.table)["evicted"]
    assert samples["ctr_coordinates_evicted_total"] == evicted > 0
    assert samples["ctr_store_live_coordinates"] == held
    assert samples["ctr_store_sweep_longest_call_seconds"] > 0
    assert samples["ctr_coordinates_refused_total"] > 0
    assert sum(c["evicted"] for c in per_field.values()) == evicted
    for field, counts in per_field.items():
        assert samples[f'ctr_field_coordinates_evicted_total{{field="{field}"}}'] \
            == counts["evicted"]


def test_prediction_workers_refuse_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--workers", "2", "--admit", "poisson:0.1"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--admit" in err and "--workers 2" in err and "\n" not in err


@pytest.mark.parametrize(("flag", "value"), [("--admit", "bloom:x"),
                                             ("--evict-idle", "7w"),
                                             ("--max-coordinates", "0")])
def test_bad_values_are_refused_before_serving(capsys: pytest.CaptureFixture[str], flag: str,
                                               value: str) -> None:
    assert main(["serve", flag, value]) != 0
    err = capsys.readouterr().err.strip()
    assert flag in err and "\n" not in err


async def test_a_data_directory_keeps_the_filter_and_the_ages(tmp_path: object) -> None:
    settings = Settings(admit="bloom:2:5000", evict_idle="300",  # type: ignore[call-arg]
                        data_dir=tmp_path, _env_file=None)
    events = some_events(1500, seed=4)
    async with running_app(settings) as client:
        assert (await client.post("/v1/train", json={"events": events[:1100]})).status_code \
            == 200
        before = client.app.state.learner._model  # type: ignore[attr-defined]
        state = {k: v.copy() for k, v in before.optimizer.state().items()}
    async with running_app(settings) as client:
        after = client.app.state.learner._model  # type: ignore[attr-defined]
        for key in ("admission_counts", "admission_state", "eviction_state", "ages",
                    "slots", "records"):
            assert (after.optimizer.state()[key] == state[key]).all(), key
        assert after.optimizer.config()["evict_idle"] == "300"


async def test_a_variant_is_bounded_as_it_would_be_as_primary() -> None:
    events = some_events(1200, seed=5)
    flags = {"admit": "poisson:0.2", "max_coordinates": 500, "_env_file": None}

    async def figures(**kw: object) -> list[dict[str, object]]:
        async with running_app(Settings(**flags, **kw)) as client:  # type: ignore[arg-type]
            for i in range(0, len(events), 400):
                r = await client.post("/v1/train", json={"events": events[i:i + 400]})
                assert r.status_code == 200
            return list((await client.get("/v1/variants")).json()["variants"])

    both = await figures(variants="rda:lambda=1e-4")
    alone = await figures(optimizer="rda", lambda_=1e-4)
    keys = ("rows", "nnz", "coordinates", "logloss")
    assert {k: both[1][k] for k in keys} == {k: alone[0][k] for k in keys}
    assert both[1]["coordinates"] < 1500  # the cap applied at row 1024


async def test_a_data_directory_refuses_other_bounds(tmp_path: object) -> None:
    from service.startup import check_resumed

    first = Settings(admit="bloom:2", alpha=0.2, data_dir=tmp_path,  # type: ignore[call-arg]
                     _env_file=None)
    async with running_app(first) as client:
        assert (await client.post("/v1/train", json={"events": some_events(20)})).status_code \
            == 200
        model = client.app.state.learner._model  # type: ignore[attr-defined]
    check_resumed(first, model)  # the same flags: resumed
    other = Settings(admit="bloom:3", alpha=0.2, data_dir=tmp_path,  # type: ignore[call-arg]
                     _env_file=None)
    with pytest.raises(ValueError, match="admit differ"):
        check_resumed(other, model)


@pytest.mark.redis
async def test_redis_reads_and_flushes_overlap_safely(redis_shards: list[RedisServer]) -> None:
    """With bounds the learning thread reads each batch's missing keys while a flush may be
    on the wire from another thread (``RedisState.wire`` orders them): concurrent requests
    all learn, and Redis ends with every event and no zero record (a refused key is never
    stored). A smoke test: it did not catch the race with the lock taken out."""
    import asyncio

    import numpy as np

    state = ",".join(s.url for s in redis_shards)
    settings = Settings(state=state, admit="bloom:2", evict_idle="1h",  # type: ignore[call-arg]
                        _env_file=None)
    async with running_app(settings) as client:
        answers = await asyncio.gather(*[
            client.post("/v1/train", json={"events": some_events(150, seed=10 + i)})
            for i in range(8)])
        assert [r.status_code for r in answers] == [200] * 8
        await client.app.state.learner.store.sync()  # type: ignore[attr-defined]
        rows = client.app.state.learner.store.shared_rows()  # type: ignore[attr-defined]
    assert rows == 1200
    values = [v for s in redis_shards for k in s.client().scan_iter(match="ctr:default:b:*")
              for v in s.client().hvals(k)]
    assert values and all(np.frombuffer(v, dtype="<f4")[1] > 0 for v in values)


@pytest.mark.redis
async def test_redis_model_download_keeps_the_filter_and_the_ages(
        redis_shards: list[RedisServer], tmp_path: object) -> None:
    """GET /v1/model/download with a Redis store: the file holds the shared coordinates with
    their ages and this worker's admission filter and per-field counters."""
    from pathlib import Path

    import numpy as np

    from ftrl_core.model import Model

    state = ",".join(s.url for s in redis_shards)
    settings = Settings(state=state, admit="bloom:2", evict_idle="1000",  # type: ignore[call-arg]
                        _env_file=None)
    async with running_app(settings) as client:
        assert (await client.post("/v1/train", json={"events": some_events(300, seed=3)})
                ).status_code == 200
        r = await client.get("/v1/model/download")
        assert r.status_code == 200
        mine = client.app.state.learner._model.optimizer.state()  # type: ignore[attr-defined]
    path = Path(str(tmp_path)) / "m.ctr"
    path.write_bytes(r.content)
    got = Model.load(path).optimizer.state()
    for name in ("admission_counts", "admission_state", "field_counts"):
        np.testing.assert_array_equal(got[name], mine[name])
    assert got["records"].shape[0] == got["ages"].size > 0
    assert 0 < got["ages"].min() <= got["ages"].max() <= 300


@pytest.mark.redis
async def test_a_redis_worker_keeps_its_filter_across_a_graceful_restart(
        redis_shards: list[RedisServer], tmp_path: object) -> None:
    """With a data directory a worker saves its admission filter and counters in its slot
    when it stops, and loads them when it starts again."""
    import numpy as np

    state = ",".join(s.url for s in redis_shards)
    settings = Settings(state=state, admit="bloom:2", data_dir=tmp_path,  # type: ignore[call-arg]
                        _env_file=None)
    async with running_app(settings) as client:
        assert (await client.post("/v1/train", json={"events": some_events(300, seed=6)})
                ).status_code == 200
        await client.app.state.learner.store.sync()  # type: ignore[attr-defined]
        before = client.app.state.learner._model.optimizer.bounds  # type: ignore[attr-defined]
        counts = before.admission.counts.copy()
        totals = (before.admission.admitted, before.admission.refused)
    assert totals[1] > 0
    async with running_app(settings) as client:
        after = client.app.state.learner._model.optimizer.bounds  # type: ignore[attr-defined]
        np.testing.assert_array_equal(after.admission.counts, counts)
        assert (after.admission.admitted, after.admission.refused) == totals

"""Bounded memory per field: the counters ``/v1/stats`` gives the dashboard (admitted,
refused, evicted, live by field) against a plain count over the events sent, on a small
seeded stream (``datagen``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from service_helpers import running_app, some_events

from ftrl_core.fieldcounts import FieldCounts
from ftrl_core.hashing import field_of_keys
from ftrl_core.model import Model
from service.settings import Settings

pytestmark = pytest.mark.anyio

ROWS = 1500


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _occurrences(events: list[dict[str, Any]]) -> dict[str, list[tuple[str, int]]]:
    """Per field name, (value, row) of each occurrence in stream order (every column is a
    string token, "" included: the service learns it as a value like any other)."""
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for row, e in enumerate(events):
        for name, value in e["features"].items():
            out[name].append((value, row))
    return out


async def _stats_at(client: httpx.AsyncClient, version: int) -> dict[str, Any]:
    for _ in range(200):
        body = (await client.get("/v1/stats")).json()
        if body["model_version"] == version:
            return dict(body["models"][0])
        await anyio.sleep(0.05)
    raise AssertionError(f"/v1/stats never reached version {version}")


async def _train(settings: Settings, events: list[dict[str, Any]]
                 ) -> tuple[dict[str, Any], Model]:
    async with running_app(settings) as client:
        for i in range(0, len(events), 500):
            r = await client.post("/v1/train", json={"events": events[i:i + 500]})
            assert r.status_code == 200, r.text
        m = await _stats_at(client, len(events))
        model = client.app.state.learner._model  # type: ignore[attr-defined]
    return m, model


def _live_by_name(model: Model) -> Counter[str]:
    """The stored keys by field name, read from the table itself."""
    reg = model.registry
    fids = field_of_keys(np.concatenate(list(model.optimizer.table.iter_keys())))
    return Counter(reg.name(int(f)) for f in fids)


async def test_admission_per_field_matches_a_plain_count() -> None:
    # bloom:2 with a filter far larger than the vocabulary: a feature is refused at its
    # first occurrence and admitted at its second, exactly (no collision, no roll-over)
    events = some_events(ROWS, seed=21)
    m, model = await _train(Settings(admit="bloom:2", stats_every=0.1,  # type: ignore[call-arg]
                                     _env_file=None), events)
    per_field = m["bounded_fields"]
    occ = _occurrences(events)
    assert occ and set(occ) <= set(per_field)
    for name, seen in occ.items():
        counts = Counter(v for v, _ in seen)
        admitted = sum(1 for c in counts.values() if c >= 2)
        assert per_field[name] == {"admitted": admitted, "refused": len(counts),
                                   "evicted": 0, "live": admitted}, name
    totals = model.optimizer.bounds.counts(model.optimizer.table)
    assert sum(f["admitted"] for f in per_field.values()) == totals["admitted"] > 0
    assert sum(f["refused"] for f in per_field.values()) == totals["refused"] > 0
    assert sum(f["live"] for f in per_field.values()) == totals["live"]
    assert {n: f["live"] for n, f in per_field.items() if f["live"]} == _live_by_name(model)


async def test_idle_eviction_per_field_matches_a_plain_count() -> None:
    # --evict-idle 60 (events): a feature whose next occurrence comes more than 60 rows
    # after the last is evicted once in between (by the row that meets it, or a sweep);
    # the ones still idle at the end were evicted once more unless still stored
    idle = 60
    events = some_events(ROWS, seed=22)
    m, model = await _train(Settings(evict_idle=str(idle), stats_every=0.1,  # type: ignore[call-arg]
                                     _env_file=None), events)
    per_field = m["bounded_fields"]
    live = _live_by_name(model)
    total = 0
    for name, seen in _occurrences(events).items():
        last: dict[str, int] = {}
        gaps = 0
        for value, row in seen:
            if value in last and row - last[value] > idle:
                gaps += 1
            last[value] = row
        stored = live.get(name, 0)
        assert per_field[name]["live"] == stored, name
        assert per_field[name]["evicted"] == gaps + len(last) - stored, name
        assert per_field[name]["admitted"] == per_field[name]["refused"] == 0  # no --admit
        total += per_field[name]["evicted"]
    assert total == model.optimizer.bounds.counts(model.optimizer.table)["evicted"] > 0


async def test_cap_per_field_adds_up_and_survives_a_snapshot(tmp_path: Any) -> None:
    # with admission and a cap, each field's live coordinates are what it was given less
    # what it lost, and the counters are saved with the model
    events = some_events(ROWS, seed=23)
    m, model = await _train(Settings(admit="bloom:2", max_coordinates=150,  # type: ignore[call-arg]
                                     stats_every=0.1, _env_file=None), events)
    per_field = m["bounded_fields"]
    for name, f in per_field.items():
        if name in _occurrences(events):
            assert f["live"] == f["admitted"] - f["evicted"], name
    assert sum(f["evicted"] for f in per_field.values()) == \
        model.optimizer.bounds.counts(model.optimizer.table)["evicted"] > 0
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = Model.load(path)
    assert loaded.optimizer.bounds is not None
    assert loaded.optimizer.bounds.per_field() == model.optimizer.bounds.per_field()


async def test_no_bounds_no_per_field_counters() -> None:
    m, _ = await _train(Settings(stats_every=0.1, _env_file=None),  # type: ignore[call-arg]
                        some_events(200, seed=24))
    assert m["bounded_fields"] is None


def test_counters_grow_and_load_an_older_file() -> None:
    fc = FieldCounts()
    fc.cover(np.array([4], dtype=np.int64), np.array([(9 << 54) | 5], dtype=np.uint64))
    assert fc.counts.shape == (3, 9)  # field 4 from the batch, field 8 from the key's tag
    fc.counts[2, 8] = 3
    fc.grow(2)  # never shrinks
    assert fc.per_field() == {8: {"admitted": 0, "refused": 0, "evicted": 3}}
    fc.load_state({})  # a model file written before the counters: they stay as they are
    assert fc.counts[2, 8] == 3

"""The learner's store publishing its model (service/workers/publisher.py) and a worker's
mapping of it (view.py), in one process: the view predicts what the model predicts, bit for
bit, as the table grows and fields are added; a batch that would grow the table past the
room of the shared directory is refused before anything is learned."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ftrl_core.model import Model
from ftrl_core.optimizers import OPTIMIZERS
from ftrl_core.readers import FeatureOptions
from ftrl_core.readers.jsonl import JsonlFormat, parse_event_array
from service.stores import StoreConfigError, StoreUnavailable
from service.workers.publisher import SharedMemoryStore
from service.workers.view import SharedModel


def events(n: int, start: int, fields: int = 8) -> list[dict[str, object]]:
    return [{"label": int(i % 3 == 0), "features": {f"f{j}": f"v{start + i}-{j}"
                                               for j in range(fields)}}
            for i in range(start, start + n)]


def fresh_ftrl() -> Model:
    return Model(OPTIMIZERS["ftrl"](alpha=0.2), options=FeatureOptions())


def learn(store: SharedMemoryStore, model: Model, batch_events: list[dict[str, object]]
          ) -> None:
    fmt = JsonlFormat(model.registry, model.options)
    batch = parse_event_array(json.dumps({"events": batch_events}).encode(), fmt,
                              require_label=True).batch
    store.before_learn(model, batch)
    model.learn(batch)
    store.after_learn(model, batch, 0)


def test_the_view_predicts_as_the_model(tmp_path: Path) -> None:
    store = SharedMemoryStore(tmp_path)
    model = store.open(fresh_ftrl, None).model
    view = SharedModel(tmp_path, strict=False)
    tables = set()
    for step in range(6):
        batch = events(400, step * 400)
        if step >= 3:  # fields added after the view first mapped the model
            for e in batch:
                e["features"][f"late{step}"] = "x"  # type: ignore[index]
        learn(store, model, batch)
        assert view.refresh() and view.version == model.rows
        tables.add(int(view.model.optimizer.table.capacity))  # type: ignore[union-attr]
        probe = json.dumps({"events": [{"features": e["features"]} for e in batch[::37]]
                            + [{"features": {"late5": "x", "f1": "v1-1", "new": "q"}}]})
        p, u, errors = view.predict(bytearray(probe.encode()))
        fmt = JsonlFormat(copy.deepcopy(model.registry), model.options)
        want = model.predict(parse_event_array(probe.encode(), fmt, require_label=False).batch)
        assert not errors
        assert p.tolist() == want[0].tolist() and u.tolist() == want[1].tolist()
    assert len(tables) >= 3  # the view followed the table through several growths
    assert [f.name for f in tmp_path.glob("table-*")] == [f"table-{store._table_no}"]


def test_a_table_outgrowing_the_shared_directory_is_refused(tmp_path: Path) -> None:
    store = SharedMemoryStore(tmp_path)
    model = store.open(fresh_ftrl, None).model
    learn(store, model, events(50, 0))
    store.free_bytes = lambda: 1 << 16  # type: ignore[method-assign]  # 64 KiB left
    before = (model.rows, model.optimizer.table.capacity)
    learn(store, model, events(10, 50))  # fits in the table as it is
    with pytest.raises(StoreUnavailable, match="larger /dev/shm"):
        learn(store, model, events(2000, 100))
    assert model.optimizer.table.capacity == before[1] and model.rows == before[0] + 10


def test_workers_serve_ftrl_only(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="FTRL models only"):
        SharedMemoryStore(tmp_path).open(lambda: Model(OPTIMIZERS["rda"]()), None)

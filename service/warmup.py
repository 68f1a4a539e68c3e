"""Compile (or load from Numba's cache) every kernel the routes use, before serving.

It runs on a throwaway model with the real model's configuration, never on the real one:
warming up must not learn anything, register fields or move the step counter.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import msgspec

from ftrl_core.model import Model
from ftrl_core.readers.jsonl import JsonlFormat, parse_event_array, parse_events
from ftrl_core.spans import RowArena, Rows

from .join.bodies import impression_times
from .join.ids import id_keys, plain_keys

_EVENTS = [
    {"label": 1, "features": {"site": "a.com", "price": 0.37, "tags": ["x", "y"], "c9": ""},
     "weight": 1.0, "id": "warm-1"},
    {"label": 0, "features": {"site": "b.org", "price": 2, "tags": [], "c9": None}},
    {"label": 0.0, "features": {"site": "caf\\u00e9", "n": -1.5e-3}},
]
_IMPRESSIONS = [
    {"id": "warm-1", "ts": 1.5, "features": {"site": "a.com", "price": 0.37}},
    {"id": "warm-2", "ts": 2, "features": {}},
]


def warm_up(model: Model, strict: bool) -> None:
    options = replace(model.options, strict=strict)
    train_fmt = JsonlFormat(model.registry, options)
    body = msgspec.json.encode({"events": _EVENTS})
    result = parse_event_array(body, train_fmt, require_label=True)
    model.learn(result.batch)
    parse_event_array(b'{"events": [{"label": 2, "features": {}}]}', train_fmt,
                      require_label=True)
    lines = b"\n".join(msgspec.json.encode(e) for e in _EVENTS) + b"\n{bad\n"
    model.learn(parse_events(lines, train_fmt, require_label=True).batch)
    predict_fmt = JsonlFormat(copy.deepcopy(model.registry), options)
    batch = parse_event_array(body, predict_fmt, require_label=False, ignore_label=True).batch
    model.predict(batch)
    model.sparsity()
    model.top_features(3)
    if model.optimizer.bounds is not None:
        model.optimizer.bounds.warm_up(model.optimizer.stride)
    _ = model.metrics.auc, model.metrics.logloss


def warm_up_join(model: Model) -> None:
    """The attribution join's compiled passes, for the types its requests bring: ids hashed
    from the body's bytes and ``ts`` read where the scanner found them (a request's body is
    a bytearray, a logged one bytes: Numba compiles each apart), feedback ids hashed from
    their strings, the pending rows gathered to be learned. Without it the first
    ``/v1/impressions`` compiled them (seconds)."""
    fmt = JsonlFormat(copy.deepcopy(model.registry), model.options)
    body = msgspec.json.encode({"events": _IMPRESSIONS})
    for raw in (bytearray(body), body):
        batch = parse_event_array(raw, fmt, require_label=False, ignore_label=True).batch
        plain_keys(batch)
        impression_times(raw, batch.rows, [], batch)
    arena = RowArena()  # (the rows' types are the same from bytes and from a bytearray)
    arena.gather(arena.add(Rows(batch.indptr, batch.keys, batch.fields, batch.values,
                                range(batch.rows))))
    id_keys(["warm-1"])

"""The join's ``ts`` and ids read from the scanner's positions (one pass over the body)
give what the msgspec reading and the string ids gave."""

from __future__ import annotations

import json

import pytest

from ftrl_core.readers.jsonl import JsonlFormat, event_ids, parse_event_array
from service.join.bodies import impression_times
from service.join.ids import id_key, id_keys, plain_keys
from service.learner_options import LearnerOptions

BODIES = [
    '{"events": [{"id": "a", "ts": 1700000000.25, "features": {"x": "1"}}]}',
    '{"events": [{"id": "a", "ts": 1700000000, "features": {"x": "1"}}]}',
    '{"events": [{"id": "a", "ts": 1.7e9, "features": {"x": "1"}}, '
    '{"id": "b", "features": {"x": "2"}}, {"id": "c", "ts": null, "features": {"x": "2"}}]}',
    '{"events": [{"features": {"ts": 5}, "id": "a", "ts": 0.1}]}',
    '{"events": [{"id": "a", "ts": 1, "ts": 2.5, "features": {"x": "1"}}]}',
    '{"events": [{"id": "a", "ts": 123456789.123456789123, "features": {"x": "1"}}]}',
    '{"events": [{"id": "a", "ts": 0, "features": {"x": "1"}}, {"id": "b", "ts": -0.0, '
    '"features": {"x": "1"}}]}',
    '{"events": [{"id": "a", "t\\u0073": 7.5, "features": {"x": "1"}}]}',
    '{"events": [{"id": "a", "ts": "soon", "features": {"x": "1"}}]}',
    '{"events": [{"id": "a", "ts": -1, "features": {"x": "1"}}]}',
    '{"events": [{"id": "a", "ts": 1e300, "features": {"x": "1"}}]}',
    '{"events": [{"id": "a", "ts": true, "features": {"x": "1"}}]}',
    '{"events": [{"id": "é\\n", "ts": 3, "features": {"x": "1"}}, {"id": "", "ts": 3, '
    '"features": {"x": "1"}}]}',
    '{"events": [{"id": "x", "ts": 3, "features": {"x": "1"}}, {"ts": 4, '
    '"features": {"x": "1"}}]}',
    '{"events": [{"id": "' + "x" * 129 + '", "ts": 3, "features": {"x": "1"}}]}',
    '{"events": []}',
]


@pytest.mark.parametrize("body", BODIES)
def test_times_and_keys_from_the_scan(body: str) -> None:
    model = LearnerOptions().build_model("jsonl")
    fmt = JsonlFormat(model.registry, model.options)
    raw = body.encode()
    batch = parse_event_array(raw, fmt, require_label=False, ignore_label=True).batch
    e1: list = []
    e2: list = []
    scanned = impression_times(raw, batch.rows, e1, batch)
    decoded = impression_times(raw, batch.rows, e2)
    assert [json.dumps(t) for t in scanned] == [json.dumps(t) for t in decoded]
    assert [(e.index, e.field, e.message, e.value) for e in e1] \
        == [(e.index, e.field, e.message, e.value) for e in e2]
    keys = plain_keys(batch)
    ids = event_ids(batch)
    if keys is not None:
        assert keys == [id_key(i) for i in ids]  # type: ignore[arg-type]
        assert all(i and len(i.encode()) <= 128 for i in ids)
    else:
        assert any(i is None or not i or len(i.encode()) > 32 or "\\" in body for i in ids)


def test_compiled_id_keys_are_hashlib_ones() -> None:
    texts = ["a", "imp-17", "é" * 64, "x" * 128, "€" * 42, "x" * 129, "🙂"]
    assert id_keys(texts) == [id_key(t) for t in texts]
    assert id_keys(texts[:4]) == [id_key(t) for t in texts[:4]]
    assert id_keys([]) == []

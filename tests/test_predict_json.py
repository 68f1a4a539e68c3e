"""``Model.predict_json`` (the service's prediction path: recycled scan outputs, no
``Batch`` when the body scans in one call) gives exactly what ``parse_event_array`` then
``Model.predict`` give, bit for bit, for every learner: good bodies of every size one after
another on one recycled format, bodies with bad events, and bodies whose interactions
outgrow the scanner's arrays (the general way)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from service_helpers import some_events
from test_readers_json import rand_event

from ftrl_core import model as model_module
from ftrl_core.model import Model
from ftrl_core.optimizers import OPTIMIZERS
from ftrl_core.readers import FeatureOptions
from ftrl_core.readers.eventbuffers import MAX_RECYCLED_NNZ
from ftrl_core.readers.jsonl import JsonlFormat, parse_event_array


def trained(optimizer: str, interactions: bool) -> Model:
    model = Model(OPTIMIZERS[optimizer](), options=FeatureOptions(max_row_features=5000))
    if interactions:
        model.registry.add_interactions([("C1", "C2"), ("t", "t")])
    fmt = JsonlFormat(model.registry, model.options)
    events = some_events(600, seed=3)
    for i in range(0, 600, 200):
        body = json.dumps({"events": events[i:i + 200]}).encode()
        model.learn(parse_event_array(body, fmt, require_label=True).batch)
    return model


def bodies(rng: np.random.Generator) -> list[bytes]:
    fields = [f"C{j}" for j in range(1, 27)] + ["I1", "t", "new", "other"]
    events = some_events(300, seed=5)
    # first (the recycled arrays are not grown yet), interactions of long lists: more
    # features than the arrays hold (FULL)
    out = [json.dumps({"events": [{"features": {"t": [f"x{j}" for j in range(60)]}}] * 10})
           .encode()]
    for size in (1, 1, 3, 100, 1, 250, 2, 1):
        start = int(rng.integers(0, 300 - size))
        probe = [{"features": e["features"]} for e in events[start:start + size]]
        out.append(json.dumps({"events": probe}).encode())
    for _ in range(20):  # odd events: lists, numbers, nulls, unknown fields, labels, ids
        evs = [rand_event(rng, fields) for _ in range(int(rng.integers(1, 4)))]
        out.append(json.dumps({"events": evs}, ensure_ascii=bool(rng.integers(0, 2))).encode())
    # bad events: the errors of the general way, and nothing predicted
    out.append(b'{"events": [{"features": {"a": 1}}, {"features": {}}, {"features": 7}]}')
    out.append(b'{"events": [{"features": {"a": NaN}}]}')
    out.append(b'{"events": [{"features": {"a": "b"}}')
    out.append(b'{"events": 5}')
    out.append(json.dumps({"events": []}).encode())
    # a body larger than the recycled arrays are ever grown for (fresh arrays, not kept)
    wide = {f"w{j}": [f"v{k}" for k in range(40)] for j in range(20)}
    big = [{"features": wide}] * (MAX_RECYCLED_NNZ // 800 + 2)
    out.append(json.dumps({"events": big}).encode())
    out.append(out[0])
    return out


@pytest.mark.parametrize("interactions", [False, True])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_predict_json_equals_parse_then_predict(optimizer: str, interactions: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    model = trained(optimizer, interactions)
    general = []  # the bodies predict_json sent the general way
    monkeypatch.setattr(model_module, "parse_event_array",
                        lambda body, *a, **k: general.append(body) or parse_event_array(
                            body, *a, **k))
    rng = np.random.default_rng(len(optimizer) + interactions)
    # each side predicts on its own copy of the registry (as the service does)
    recycled = JsonlFormat(copy.deepcopy(model.registry), model.options, recycle=True)
    fresh = JsonlFormat(copy.deepcopy(model.registry), model.options)
    predicted = errors = 0
    for body in bodies(rng):
        p, u, errs = model.predict_json(bytearray(body), recycled)
        want = parse_event_array(body, fresh, require_label=False)
        assert [(e.index, e.field, e.message, e.code) for e in errs] == \
            [(e.index, e.field, e.message, e.code) for e in want.errors]
        if want.errors:
            assert p.size == u.size == 0
            errors += 1
            continue
        wp, wu = model.predict(want.batch)
        assert p.tolist() == wp.tolist() and u.tolist() == wu.tolist()  # bit for bit
        predicted += p.size
    assert recycled.registry.names == fresh.registry.names
    assert len(recycled.registry) > len(model.registry)  # unknown fields, privately
    assert errors == 4 and predicted > 500
    assert len(general) == errors + interactions  # the rest in one kernel call


def test_recycled_batches_are_overwritten_by_the_next_parse() -> None:
    """What ``recycle`` promises and no more: the arrays are reused, so a batch is only
    good until the next parse with the same format."""
    fmt = JsonlFormat(copy.deepcopy(trained("ftrl", False).registry), FeatureOptions(),
                      recycle=True)
    a = parse_event_array(b'{"events": [{"features": {"C1": "x"}}]}', fmt, require_label=False)
    keys_a = a.batch.keys.copy()
    b = parse_event_array(b'{"events": [{"features": {"C1": "y"}}]}', fmt, require_label=False)
    assert np.shares_memory(a.batch.keys, b.batch.keys)
    assert a.batch.keys.tolist() == b.batch.keys.tolist() != keys_a.tolist()


def test_events_only_declines_a_body_with_other_top_level_keys() -> None:
    """``events_only``: None (nothing predicted) whenever the body has a top-level key
    besides "events", before or after the list, escaped or not; bad events are still
    reported; a body with "events" alone, its key escaped or not, is predicted as
    without the flag."""
    model = trained("ftrl", False)
    fmt = JsonlFormat(copy.deepcopy(model.registry), model.options, recycle=True)
    events = '[{"features": {"C1": "x", "t": ["a", "b"]}}, {"features": {"C2": "y"}}]'
    plain, _, _ = model.predict_json(bytearray(f'{{"events": {events}}}'.encode()), fmt)
    assert plain.size == 2
    declined = [f'{{"log": false, "events": {events}}}', f'{{"events": {events}, "log": true}}',
                f'{{"x": {{"events": []}}, "events": {events}}}',
                f'{{"events": {events}, "\\u006cog": 1}}', f'{{"events": {events}, "": null}}']
    for body in declined:
        assert model.predict_json(bytearray(body.encode()), fmt, events_only=True) is None
        p, _, errs = model.predict_json(bytearray(body.encode()), fmt)  # without: predicted
        assert not errs and p.tolist() == plain.tolist()
    for body in (f'{{"events": {events}}}', f'{{"\\u0065vents" : {events} }}'):
        scored = model.predict_json(bytearray(body.encode()), fmt, events_only=True)
        assert scored is not None and scored[0].tolist() == plain.tolist()
    bad = b'{"log": true, "events": [{"features": {}}]}'
    scored = model.predict_json(bytearray(bad), fmt, events_only=True)
    assert scored is not None and [e.index for e in scored[2]] == [0]
    # rows that outgrow the arrays: the scan did not reach the end, so it may hold a key
    wide = json.dumps({"events": [{"features": {"t": [f"x{j}" for j in range(60)]}}] * 10})
    interacting = trained("ftrl", True)
    fmt = JsonlFormat(copy.deepcopy(interacting.registry), interacting.options, recycle=True)
    assert interacting.predict_json(bytearray(wide.encode()), fmt, events_only=True) is None
    assert interacting.predict_json(bytearray(wide.encode()), fmt)[0].size == 10

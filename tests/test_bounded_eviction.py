"""Eviction: backward-shift deletion in the table, and every learner's sparse path with idle
eviction and the coordinate cap against the dense references of test_exactness, driven by a
plain reference of the eviction rules (a dict of last-touched steps; a dropped coordinate's
dense state is zeroed, as a key never seen)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from test_bounded_exactness import RefAdmission, reference_gate
from test_exactness import (
    CUTS,
    IDS,
    KEYS,
    LEARNERS,
    OPTIMIZERS,
    STEPS,
    TOL,
    D,
    batch_of,
    merged,
    setup,
    sigmoid,
)

from ftrl_core.bounded import make_bounds
from ftrl_core.eviction import sweep_idle
from ftrl_core.fieldcounts import FieldCounts
from ftrl_core.hashing import make_key
from ftrl_core.table import StateTable, delete_slot, find_or_insert

# -- the table -----------------------------------------------------------------------------


def _delete(table: StateTable, key: int) -> None:
    slot = int(table.lookup(np.array([key], dtype=np.uint64))[0])
    assert slot >= 0
    _delete_kernel(table.words, table.stride, table.capacity, slot, table.ages, table.meta)


def _insert(table: StateTable, key: int, value: int) -> None:
    table.ensure_room(1)
    s = _insert_kernel(table.words, table.stride, table.capacity, np.uint64(key), table.meta)
    s = -1 - s if s < 0 else s
    table.words[s * table.stride + 1] = np.uint64(value)
    table.ages[s] = value


def _kernels() -> tuple[Any, Any]:
    from numba import njit

    @njit
    def delete(words, stride, capacity, slot, ages, meta):  # type: ignore[no-untyped-def]
        delete_slot(words, stride, capacity, slot, ages, meta)

    @njit
    def insert(words, stride, capacity, key, meta):  # type: ignore[no-untyped-def]
        return find_or_insert(words, stride, capacity, key, meta)

    return delete, insert


_delete_kernel, _insert_kernel = _kernels()


def test_backward_shift_deletion_keeps_every_other_key_findable_and_reuses_slots() -> None:
    """Churn through a table kept at high load (long probe runs, wrapping at the end): after
    every delete the live keys are exactly the reference set, each with its own state and
    age, and the capacity stops growing once the live count does."""
    rng = np.random.default_rng(5)
    table = StateTable(stride=2)
    table.track_ages()
    live: dict[int, int] = {}
    capacities = []
    for step in range(20000):
        if len(live) < 800 or rng.random() < 0.5:
            key = int(rng.integers(1, 2**63))
            if key not in live:
                _insert(table, key, step)
                live[key] = step
        else:
            key = list(live)[int(rng.integers(0, len(live)))]
            _delete(table, key)
            del live[key]
        capacities.append(table.capacity)
        if step % 997 == 0 or step > 19900:
            keys = np.array(sorted(live), dtype=np.uint64)
            assert table.size == len(live)
            assert sorted(table.keys().tolist()) == keys.tolist()
            slots = table.lookup(keys)
            assert (slots >= 0).all()
            assert table.words[slots * 2 + 1].tolist() == [live[k] for k in keys.tolist()]
            assert table.ages[slots].tolist() == [live[k] for k in keys.tolist()]
    # memory comes back: the second half of the churn never grew the table
    assert capacities[-1] == capacities[len(capacities) // 2]
    assert 0.5 < max(len(live), 1) / table.capacity <= 0.8


def test_sweep_deletes_exactly_the_idle_records() -> None:
    table = StateTable(stride=2)
    table.track_ages()
    keys = [make_key(1, np.uint64(i + 1), np.uint64(0)) for i in range(5000)]
    for i, k in enumerate(keys):
        _insert(table, int(k), i)
    per_field = FieldCounts(3)
    n = sweep_idle(table.words, table.stride, table.capacity, table.ages, table.meta, 5000,
                   1500, per_field.counts)
    assert n == 3500  # ages 0..3499 are idle more than 1500 at 5000
    assert per_field.per_field() == {1: {"admitted": 0, "refused": 0, "evicted": 3500}}
    assert sorted(table.keys().tolist()) == sorted(int(k) for k in keys[3500:])


# -- the learners --------------------------------------------------------------------------


class RefEviction:
    """The eviction rules: a coordinate idle for more than ``idle`` steps is dropped before
    the next row; the cap drops the coordinates the sparse path reports (its sample is
    random, so the reference takes the choice and checks what it implies)."""

    def __init__(self, ref: Any, gate: RefAdmission | None, idle: int = 0) -> None:
        self.ref, self.gate, self.idle = ref, gate, idle
        self.last: dict[int, int] = {}  # live coordinate -> step it was last touched
        self.dropped = 0
        self.returned = 0  # coordinates that came back after a drop
        self.ever_dropped: set[int] = set()
        #: at the cap's checks: how long the evicted, and the kept, had been idle
        self.idle_evicted: list[int] = []
        self.idle_kept: list[int] = []

    def drop(self, i: int) -> None:
        for column in ("z", "n", "G", "w"):
            if hasattr(self.ref, column):
                getattr(self.ref, column)[i] = 0.0
        del self.last[i]
        self.dropped += 1
        self.ever_dropped.add(i)
        if self.gate is not None:
            self.gate.admitted.discard(int(KEYS[i]))

    def expire(self, step: int) -> None:
        """Drop every coordinate idle for more than ``idle`` at ``step``."""
        for i in [i for i, t in self.last.items() if step - t > self.idle]:
            self.drop(i)

    def step(self, step: int, row: tuple[list[int], list[float], float, float]) -> float:
        if self.idle:
            self.expire(step)
        idx, vals, y, imp = row
        x = {i: v for i, v in merged(idx, vals).items()
             if i in self.last or self.gate is None or self.gate.admit(i, step)}
        w = self.ref.weights()
        margin = sum(w[i] * v for i, v in x.items())
        p = sigmoid(margin)
        g = np.zeros(D)
        for i, v in x.items():
            g[i] = (p - y) * imp * v
            if i not in self.last and i in self.ever_dropped:
                self.returned += 1
            self.last[i] = step
        self.ref.update(g)
        return p


def run_bounded(name: str, extra: dict[str, Any], admit: str | None, idle: int,
                cap: int, check_every: int = 25) -> tuple[Any, RefEviction]:
    opt, ref, rows = setup(name, extra, "plain")
    bounds = make_bounds(admit, str(idle) if idle else None, cap or None)
    assert bounds is not None and bounds.eviction is not None
    # checks every 25 rows, so that 600 rows see many (and batches cross check points); with
    # 1000, batches of 140 and 260 rows are cut at --evict-idle rows only
    bounds.eviction.spec = dataclasses.replace(bounds.eviction.spec, check_every=check_every)
    bounds.eviction.log = []
    opt.set_bounds(bounds)
    model = RefEviction(ref, None if admit is None else reference_gate(admit), idle)
    index = {int(k): i for i, k in enumerate(KEYS)}
    start = 0
    for size in (*CUTS[:2], 0, *CUTS[2:]):
        chunk = rows[start:start + size]
        p, _ = opt.learn(batch_of(chunk))
        caps = dict(bounds.eviction.log)
        bounds.eviction.log.clear()
        p_ref = []
        for k, row in enumerate(chunk):
            step = start + k
            if step in caps:  # the cap's evictions before this row
                if idle:
                    model.expire(step)
                evicted = [index[int(key)] for key in caps.pop(step)]
                assert evicted
                model.idle_evicted += [step - model.last[i] for i in evicted]
                model.idle_kept += [step - t for i, t in model.last.items() if i not in evicted]
                for i in evicted:
                    model.drop(i)
                assert len(model.last) <= cap
            p_ref.append(model.step(step, row))
        start += size
        np.testing.assert_allclose(p, p_ref, **TOL)
        if idle:  # what the next row would drop: already invisible to reads
            model.expire(start)
        if start in caps:  # a check point at the end of this batch
            for i in [index[int(key)] for key in caps.pop(start)]:
                model.drop(i)
        assert not caps
        live = sorted(model.last)
        # every coordinate: an idle record not swept yet reads as a key never seen
        np.testing.assert_allclose(opt.weights(KEYS), ref.weights(), **TOL)
        # the table holds the live coordinates, and idle ones no sweep has reached yet
        stored = set(opt.table.keys().tolist())
        assert {int(KEYS[i]) for i in live} <= stored
        for key in stored - {int(KEYS[i]) for i in live}:
            slot = int(opt.table.lookup(np.array([key], dtype=np.uint64))[0])
            assert idle and start - opt.table.ages[slot] > idle
    assert start == STEPS
    state = opt.state_of(KEYS)
    for column, expected in ref.state().items():
        np.testing.assert_allclose(state[column][live], expected[live], **TOL, err_msg=column)
    return opt, model


@pytest.mark.parametrize(("admit", "check_every"), [(None, 25), ("bloom:2:40", 25),
                                                   ("bloom:2:40", 1000)])
@pytest.mark.parametrize(("name", "extra"), LEARNERS, ids=IDS)
def test_idle_eviction_equals_dense_reference(name: str, extra: dict[str, Any],
                                              admit: str | None, check_every: int) -> None:
    opt, model = run_bounded(name, extra, admit, idle=40, cap=0, check_every=check_every)
    # the stream exercises the rule: coordinates dropped, and some of them came back
    assert model.dropped > 3 and model.returned > 0
    assert opt.eviction.evicted >= model.dropped - len(KEYS)  # unswept ones are pending


@pytest.mark.parametrize("admit", [None, "poisson:0.3"])
@pytest.mark.parametrize(("name", "extra"), LEARNERS, ids=IDS)
def test_max_coordinates_equals_dense_reference(name: str, extra: dict[str, Any],
                                                admit: str | None) -> None:
    opt, model = run_bounded(name, extra, admit, idle=0, cap=12)
    assert model.dropped > 0 and model.returned > 0
    # approximately least recently used: those evicted had been idle far longer
    assert np.mean(model.idle_evicted) > 2 * np.mean(model.idle_kept)
    assert opt.eviction.evicted == model.dropped


@pytest.mark.parametrize(("name", "extra"), LEARNERS, ids=IDS)
def test_an_idle_record_not_swept_yet_predicts_as_a_key_never_seen(
        name: str, extra: dict[str, Any]) -> None:
    """Probability and uncertainty: the same as the same model with that record deleted."""
    opt, _, rows = setup(name, extra, "plain")
    opt.set_bounds(make_bounds(None, "30"))
    opt.learn(batch_of(rows[:200]))  # no check point (1024) reached: nothing swept
    steps = opt.steps
    ages = opt.table.ages[opt.table.lookup(KEYS)]
    present = opt.table.lookup(KEYS) >= 0
    idle = present & (steps - ages > 30)
    assert idle.any() and (present & ~idle).any()
    probe = batch_of([([i, 0], [1.0, 1.0], 1.0, 1.0) for i in range(1, D)])
    p, u = opt.predict(probe)
    w = opt.weights(KEYS)
    plain = OPTIMIZERS[name](**opt.config()["params"], **opt.config().get("extra", {}))
    plain.table = StateTable.from_records(opt.table.records())
    plain.counters = opt.counters.copy()
    for k in KEYS[idle]:  # the reference: the idle records deleted
        slot = int(plain.table.lookup(np.array([k], dtype=np.uint64))[0])
        _delete_kernel(plain.table.words, plain.table.stride, plain.table.capacity, slot,
                       plain.table.ages, plain.table.meta)
    p_ref, u_ref = plain.predict(probe)
    np.testing.assert_array_equal(p, p_ref)
    np.testing.assert_array_equal(u, u_ref)
    np.testing.assert_array_equal(w, plain.weights(KEYS))
    assert (w[idle] == 0).all()
    assert opt.table.size == int(present.sum())  # hidden, not deleted: reads change nothing


def test_idle_seconds_use_the_clock() -> None:
    opt, _, _ = setup("ftrl", {}, "plain")
    bounds = make_bounds(None, "10s")
    assert bounds is not None and bounds.eviction is not None
    bounds.eviction.spec = dataclasses.replace(bounds.eviction.spec, check_every=1)
    opt.set_bounds(bounds)
    now = [1000.0]
    assert opt.eviction is not None
    opt.eviction.clock = lambda: now[0]
    a, b, c = (make_key(2, np.uint64(v), np.uint64(0)) for v in (1, 2, 3))

    def learn(*keys: np.uint64) -> None:
        opt.learn(batch_of_keys(list(keys)))

    learn(a, b)
    now[0] = 1005.0
    learn(a)
    now[0] = 1012.0
    learn(c)  # the sweep is due: b is idle 12 s > 10 s, a only 7 s
    assert set(opt.table.keys().tolist()) == {int(a), int(c)}
    n_before = opt.state_of(np.array([a]))["n"][0]
    assert n_before > 0
    now[0] = 1016.0
    learn(a)  # a idle 11 s at its row: dropped, then learned as a key never seen
    fresh, _, _ = setup("ftrl", {}, "plain")
    fresh.counters[:] = opt.counters
    fresh.counters[0] -= 1
    fresh.learn(batch_of_keys([a]))
    np.testing.assert_array_equal(opt.state_of(np.array([a]))["n"],
                                  fresh.state_of(np.array([a]))["n"])
    assert opt.eviction.evicted == 2


def batch_of_keys(keys: list[np.uint64]) -> Any:
    from ftrl_core.batch import Batch

    return Batch.from_arrays(np.array([0, len(keys)]), np.array(keys, dtype=np.uint64),
                             np.ones(len(keys)), labels=[1.0])


@pytest.mark.parametrize("flags", [("40", None), (None, 12), ("30", 10)])
def test_eviction_state_round_trip_continues_identically(
        flags: tuple[str | None, int | None]) -> None:
    from ftrl_core.model import Model

    opt, _, rows = setup("fobos", {"rate": "adaptive"}, "plain")
    rows = rows * 4  # past two check points (eviction.CHECK_EVERY)
    opt.set_bounds(make_bounds("bloom:2:50", *flags))
    model = Model(opt, keep_names=False)
    model.learn(batch_of(rows[:1000]))
    clone = Model.from_config(model.config(), {**opt.state(), **model.metrics.state()})
    for part in (rows[1000:1500], rows[1500:]):
        batch = batch_of(part)
        np.testing.assert_array_equal(clone.learn(batch), model.learn(batch))
    np.testing.assert_array_equal(np.sort(clone.optimizer.table.keys()),
                                  np.sort(opt.table.keys()))
    assert clone.optimizer.eviction.evicted == opt.eviction.evicted > 0


@pytest.mark.parametrize(("idle", "cap", "match"), [
    ("0", None, "--evict-idle"), ("x", None, "--evict-idle"), ("5m", None, "--evict-idle"),
    (None, 0, "--max-coordinates"), (None, "many", "--max-coordinates")])
def test_bad_eviction_values_are_refused_naming_the_flag(idle: str | None, cap: Any,
                                                         match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_bounds(None, idle, cap)

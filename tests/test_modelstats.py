"""The figures' pass reads copies made under the learn lock (``service.modelstats``): they
must be the figures of the moment of the copy, whatever is learned after it."""

from __future__ import annotations

import copy

import numpy as np

from ftrl_core.batch import Batch
from ftrl_core.bounded import make_bounds
from ftrl_core.fields import FieldRegistry
from ftrl_core.hashing import make_key
from ftrl_core.model import Model
from ftrl_core.optimizers import OPTIMIZERS
from ftrl_core.readers import FeatureOptions
from service.modelstats import _Frozen, compute, freeze


def batch(seed: int, rows: int = 400) -> Batch:
    rng = np.random.default_rng(seed)
    width = 6
    keys = np.array([int(make_key(f, np.uint64(v), np.uint64(0)))
                     for f, v in zip(np.tile(np.arange(1, width + 1), rows),
                                     rng.integers(0, 300, rows * width), strict=True)],
                    dtype=np.uint64)
    indptr = np.arange(rows + 1) * width
    return Batch.from_arrays(indptr, keys, np.ones(keys.size),
                             labels=(rng.random(rows) < 0.3).astype(np.float64))


def reference(model: Model) -> _Frozen:
    """What the copy must hold: the whole learner deep-copied at the same moment."""
    opt = copy.deepcopy(model.optimizer)
    bounded = None if opt.bounds is None else opt.bounds.per_field()
    return _Frozen("p", True, model.rows, opt, copy.deepcopy(model.metrics),
                   copy.deepcopy(model.registry), bounded)


def test_frozen_figures_are_those_of_the_moment_of_the_copy() -> None:
    """Learning after ``freeze`` (the table growing, new keys, the bounds' totals moving)
    changes nothing in the figures of its copy, which equal those of a deep copy taken at
    the same moment; the next ``freeze`` reuses the kept buffer and sees the new rows."""
    opt = OPTIMIZERS["ftrl"](alpha=0.2, l1=0.5)
    opt.set_bounds(make_bounds("bloom:2", "5000", None))
    model = Model(opt, FieldRegistry(), FeatureOptions(), "criteo")
    model.learn(batch(1))
    buffers: dict[int, np.ndarray] = {}
    frozen = freeze([("p", model)], buffers)[0]
    expected = compute(reference(model))
    for seed in range(2, 12):
        model.learn(batch(seed))
    got = compute(frozen)
    assert got == expected and got.bounded_fields is not None
    assert got.coordinates > 0 and got.nnz > 0
    again = freeze([("p", model)], buffers)[0]
    later = compute(again)
    assert later == compute(reference(model)) and later.version > got.version
    if again.optimizer.table.words.shape == frozen.optimizer.table.words.shape:
        assert again.optimizer.table.words is frozen.optimizer.table.words

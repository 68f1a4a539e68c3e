"""The figures' pass reads copies made under the learn lock (``service.modelstats``): they
must be the figures of the moment of the copy, whatever is learned after it."""

from __future__ import annotations

import copy

import numpy as np
import pytest

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


def test_the_pass_counts_fields_and_the_abs_w_histogram_as_written_plainly() -> None:
    """``compute``'s per-field coordinates, non-zeros and L1 mass and its |w| histogram
    against the rule written plainly, one stored coordinate at a time (a model with zero
    weights and weights spread over the bins); weights beyond the bins go to the end ones."""
    import math

    from ftrl_core.sparsity import SparsityCounter
    from service.modelstats import ABS_W_BINS, ABS_W_LOW, ABS_W_PER_DECADE

    model = Model(OPTIMIZERS["ftrl"](alpha=5.0, l1=0.5), FieldRegistry(), FeatureOptions())
    for s in range(6):
        model.learn(batch(s))
    opt = model.optimizer
    keys = opt.table.keys()
    weights = opt.weights(keys)
    assert (weights == 0).any() and (weights != 0).any()
    fields: dict[int, list[float]] = {}
    hist = [0] * ABS_W_BINS
    for k, w in zip(keys.tolist(), weights.tolist(), strict=True):
        f = fields.setdefault((k >> 54) - 1, [0, 0, 0.0])
        f[0] += 1
        f[1] += w != 0.0
        f[2] += abs(w)
        if w != 0.0:
            b = math.floor((math.log10(abs(w)) - ABS_W_LOW) * ABS_W_PER_DECADE)
            hist[min(max(b, 0), ABS_W_BINS - 1)] += 1
    stats = compute(reference(model))
    assert stats.abs_w_counts == hist and sum(hist) == stats.nnz
    assert stats.coordinates == keys.size
    got = {model.registry.name(f): v for f, v in fields.items()}
    assert {n: (v["coordinates"], v["nnz"]) for n, v in stats.fields.items()} == \
        {n: (v[0], v[1]) for n, v in got.items()}
    for n, v in stats.fields.items():
        assert v["l1"] == pytest.approx(got[n][2], rel=1e-12)
    ends = SparsityCounter(ABS_W_BINS, ABS_W_LOW, ABS_W_PER_DECADE)
    ends.add(keys[:3], np.array([1e-12, -1e5, 0.0]))
    assert (ends.hist[0], ends.hist[-1], ends.hist.sum()) == (1, 1, 2)

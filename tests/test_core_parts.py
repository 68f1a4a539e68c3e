"""The state table, progressive metrics, names and sparsity statistics."""

from __future__ import annotations

import numpy as np
import pytest

from ftrl_core._jit import kernel
from ftrl_core.hashing import make_key
from ftrl_core.metrics import ProgressiveMetrics, exact_auc, logloss
from ftrl_core.table import MAX_LOAD, StateTable, find_or_insert


@kernel
def _insert_many(words: np.ndarray, stride: int, capacity: int, keys: np.ndarray,
                 meta: np.ndarray) -> None:
    """Insert ``keys``, writing each key into its first state word."""
    for i in range(keys.size):
        s = find_or_insert(words, stride, capacity, keys[i], meta)
        if s < 0:
            s = -1 - s
        words[s * stride + 1] = keys[i]


def _keys(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.unique(rng.integers(1, 2**63, size=n, dtype=np.int64).astype(np.uint64))


def test_table_grows_keeps_records_and_stays_dense() -> None:
    table = StateTable(stride=2)
    keys = _keys(200_000)
    for chunk in np.array_split(keys, 50):
        table.ensure_room(chunk.size)
        _insert_many(table.words, table.stride, table.capacity, chunk, table.meta)
    assert table.size == keys.size
    slots = table.lookup(keys)
    assert (slots >= 0).all() and np.unique(slots).size == keys.size
    assert table.words[slots * 2 + 1].tolist() == keys.tolist()  # payload written = key
    assert table.lookup(_keys(1000, seed=1)).tolist().count(-1) >= 999
    # memory follows the live keys: load stays in [MAX_LOAD / GROWTH^2, MAX_LOAD]
    load = table.size / table.capacity
    assert 0.3 < load <= MAX_LOAD
    copy = StateTable.from_records(table.records())
    assert copy.size == table.size
    assert np.array_equal(np.sort(copy.keys()), np.sort(keys))
    s2 = copy.lookup(keys)
    assert copy.words[s2 * 2 + 1].tolist() == keys.tolist()


def test_binned_auc_matches_exact_auc() -> None:
    rng = np.random.default_rng(3)
    p = rng.beta(1, 8, size=50_000)
    y = (rng.random(p.size) < p * 1.3).astype(float)
    m = ProgressiveMetrics()
    for a, b in zip(np.array_split(p, 7), np.array_split(y, 7), strict=True):
        m.update(a, b)
    assert m.rows == p.size
    assert abs(m.auc - exact_auc(y, p)) < 1e-5
    assert m.logloss == pytest.approx(logloss(y, p), rel=1e-12)
    assert m.calibration == pytest.approx(p.mean() / y.mean(), rel=1e-12)
    # state round trip
    m2 = ProgressiveMetrics()
    m2.load_state(m.state())
    assert (m2.auc, m2.logloss) == (m.auc, m.logloss)


def test_auc_of_one_class_is_nan() -> None:
    m = ProgressiveMetrics()
    m.update(np.array([0.1, 0.2]), np.array([0.0, 0.0]))
    assert np.isnan(m.auc)


def test_keys_carry_their_field() -> None:
    from ftrl_core.hashing import field_of_keys

    keys = np.array([make_key(f, np.uint64(12345 + f), np.uint64(0)) for f in range(0, 1000, 7)],
                    dtype=np.uint64)
    assert field_of_keys(keys).tolist() == list(range(0, 1000, 7))
    assert (keys != 0).all()


def test_hashed_keys_are_tagged_and_never_zero() -> None:
    from ftrl_core.hashing import HASHED_FIELD, field_of_keys

    mask = np.uint64((1 << 8) - 1)
    keys = np.array([make_key(f, np.uint64(h), mask) for f in (0, 5, 900)
                     for h in (0, 255, 256, 2**64 - 1)], dtype=np.uint64)
    assert (keys != 0).all()
    assert (field_of_keys(keys) == HASHED_FIELD).all()
    assert np.unique(keys & np.uint64(2**54 - 1)).tolist() == [0, 255]


def test_batch_slice_keeps_per_row_extras() -> None:
    from ftrl_core.batch import Batch

    b = Batch.from_arrays([0, 1, 2, 3], [11, 12, 13], [1.0, 1.0, 1.0], [0, 1, 0])
    b.extra["event_index"] = np.array([5, 6, 7])
    b.extra["note"] = "kept"
    s = b.slice(1, 3)
    assert s.extra["event_index"].tolist() == [6, 7] and s.extra["note"] == "kept"

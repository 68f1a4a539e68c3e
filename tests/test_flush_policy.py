"""The Redis store's flush policy (``service/stores/redis/policy.py``): when pending deltas
are due, for each mode, at the bounds' edges."""

from __future__ import annotations

from service.stores.redis.policy import (
    ADAPTIVE_MS,
    ADAPTIVE_ROWS,
    MAX_COORDINATES,
    FlushPolicy,
)


def test_adaptive_flushes_on_age_rows_or_coordinates() -> None:
    policy = FlushPolicy()  # a data directory, no flag
    assert policy.adaptive and not policy.immediate
    assert not policy.due(0, 0, 10 * ADAPTIVE_MS)  # nothing pending
    assert not policy.due(ADAPTIVE_ROWS - 1, 10, ADAPTIVE_MS - 1)
    assert policy.due(ADAPTIVE_ROWS, 10, 0.0)
    assert policy.due(1, 10, ADAPTIVE_MS)
    assert policy.due(1, MAX_COORDINATES, 0.0)
    assert f"{ADAPTIVE_ROWS} rows" in policy.describe()


def test_explicit_bounds_replace_the_adaptive_ones() -> None:
    every_second = FlushPolicy(every_ms=1000.0)
    assert not every_second.adaptive
    assert not every_second.due(10 * ADAPTIVE_ROWS, 10, 999.0)
    assert every_second.due(1, 10, 1000.0)
    every_rows = FlushPolicy(every_events=100)
    assert not every_rows.due(99, 10, 10 * ADAPTIVE_MS)  # no age bound of its own
    assert every_rows.due(100, 10, 0.0)


def test_without_a_data_directory_every_batch_is_due() -> None:
    immediate = FlushPolicy(durable_locally=False)
    assert immediate.immediate and not immediate.adaptive
    assert immediate.due(1, 1, 0.0)
    assert not immediate.due(0, 0, 0.0)

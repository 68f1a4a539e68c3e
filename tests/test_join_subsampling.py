"""Negative subsampling (``--negative-rate r``) keeps predictions calibrated: a negative is
kept with probability ``r`` (by a hash of its id) and learned with weight ``1/r``.

The issue asks for calibration within 2% of 1.0 on a 1M-row stream with r = 0.1. In process
(``tests/join_stream.py``: the join's own code, no HTTP) 200k synthetic rows take ~2 s a
run and are the smallest stream where the check is stable: over seeds 1-8 the calibration
of the second half (100k impressions, ~15k clicks) stays within 1.6% of 1.0 at r = 0.1,
whereas at 100k rows one seed in three was 2.2% off. Dropping the 1/r weight puts it near
3.5 (the model learns p / (p + (1 - p) r)), so the check can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from unittest import mock

import numpy as np
import pytest
from join_stream import Run, Stream, calibration, make_stream, requests, run, score

from service.learner_options import LearnerOptions

pytestmark = pytest.mark.slow

ROWS = 200_000
SEED = 1
RATE = 0.1
OPTIONS = LearnerOptions(alpha=0.2)


@pytest.fixture(scope="module")
def stream() -> Stream:
    return make_stream(ROWS, SEED)


@pytest.fixture(scope="module")
def reqs(stream: Stream) -> list[tuple[bool, bytes]]:
    return requests(stream)


@pytest.fixture(scope="module")
def full(reqs: list[tuple[bool, bytes]]) -> Run:
    return run(reqs, OPTIONS, 1.0)


@pytest.fixture(scope="module")
def subsampled(reqs: list[tuple[bool, bytes]]) -> Run:
    return run(reqs, OPTIONS, RATE)


@pytest.fixture
def unweighted() -> Iterator[None]:
    """The join with the 1/r weight dropped (what the test must catch)."""
    with mock.patch("service.join.pending.subsampled_weight", lambda rate: 1.0):
        yield


def tail(x: np.ndarray) -> np.ndarray:
    """The second half of the stream: the model has learned the first."""
    return x[len(x) // 2:]


def test_subsampled_negatives_stay_calibrated(stream: Stream, full: Run,
                                              subsampled: Run) -> None:
    y = tail(stream.clicked)
    assert y.sum() > 10_000  # enough clicks for a 2% check to mean something
    for r in (full, subsampled):
        assert abs(calibration(tail(r.p), y) - 1.0) < 0.02
        # and against the true probabilities, free of the labels' own noise
        assert abs(tail(r.p).mean() / tail(stream.p).mean() - 1.0) < 0.02
    # the logloss hardly moves
    assert score(tail(subsampled.p), y) < 1.01 * score(tail(full.p), y)


def test_subsampling_learns_the_clicks_and_a_tenth_of_the_negatives(stream: Stream,
                                                                    full: Run,
                                                                    subsampled: Run) -> None:
    s = subsampled.status
    closed = int(s["expired"])  # type: ignore[call-overload]
    clicks = int(s["learned_positives"])  # type: ignore[call-overload]
    kept = int(s["learned_negatives"])  # type: ignore[call-overload]
    assert subsampled.learned == clicks + kept
    assert kept + int(s["negatives_dropped"]) == closed - clicks  # type: ignore[call-overload]
    assert full.learned == closed
    assert kept / (closed - clicks) == pytest.approx(RATE, rel=0.03)
    # every click joined; the last window's impressions are still pending, not learned
    assert s["joined"] == int(stream.clicked.sum()) and s["late"] == 0
    assert 0 < int(stream.clicked.sum()) - clicks < 1000  # type: ignore[call-overload]
    print(f"rows learned: {full.learned} at r=1, {subsampled.learned} at r={RATE}")


def test_without_the_weight_calibration_is_far_off(stream: Stream,
                                                   reqs: list[tuple[bool, bytes]],
                                                   unweighted: None) -> None:
    r = run(reqs, OPTIONS, RATE)
    assert calibration(tail(r.p), tail(stream.clicked)) > 2.0

"""Prediction workers' counters, added into the learner's ``/metrics``.

Every worker forwards ``/metrics`` to the learner, so one scrape shows the whole service
whichever process took the connection. Each prediction worker owns one row of the shared
``readers`` file (claimed with a lock file, so that a worker restarted after a crash takes
the row of the one it replaces and the counts never go back): the predictions it served,
then for each status a ``/v1/predict`` answer can have, the latency histogram of those
answers (counts per bucket of ``observability.LATENCY_BUCKETS``, one above them, and the
sum of seconds). Rows are written by their worker and read by the learner without locks: a
scrape may miss the last few requests, never count one twice.
"""

from __future__ import annotations

import bisect
import fcntl
import os
from pathlib import Path

import numpy as np

from ..observability import LATENCY_BUCKETS, LatencySeries
from . import shm

ROUTE = ("/v1/predict", "POST")
#: every status a prediction can be answered with (499: the client went away)
STATUSES = (200, 400, 401, 403, 413, 415, 422, 499, 500, 503)
_SERIES = len(LATENCY_BUCKETS) + 2  # bucket counts, the one above them, the sum
ROW = 1 + len(STATUSES) * _SERIES
_INDEX = {s: 1 + i * _SERIES for i, s in enumerate(STATUSES)}


def create(directory: Path, rows: int) -> None:
    shm.map_words(directory / "readers", rows * ROW, np.float64)


class ReaderRow:
    """This worker's row (or none if every row is taken: then nothing is counted)."""

    def __init__(self, directory: Path) -> None:
        table = shm.map_words(directory / "readers", dtype=np.float64)
        self.row: np.ndarray | None = None
        for slot in range(table.size // ROW):
            fd = os.open(directory / f"readers-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._lock_fd = fd  # held until the process ends
            self.row = table[slot * ROW:(slot + 1) * ROW]
            return

    def add_predictions(self, n: int) -> None:
        if self.row is not None:
            self.row[0] += n

    def observe(self, status: int, seconds: float) -> None:
        start = _INDEX.get(status)
        if self.row is None or start is None:
            return
        row = self.row
        row[start + bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        row[start + _SERIES - 1] += seconds


class ReaderTotals:
    """The learner's view: every row summed."""

    def __init__(self, directory: Path) -> None:
        self._rows = shm.map_words(directory / "readers", dtype=np.float64).reshape(-1, ROW)

    def _table(self) -> np.ndarray:
        return self._rows.sum(axis=0)

    def predictions(self) -> int:
        return int(self._table()[0])

    def series(self) -> dict[tuple[str, str, int], LatencySeries]:
        total = self._table()
        out = {}
        for status, start in _INDEX.items():
            counts = total[start:start + _SERIES - 1]
            if counts.any():
                out[(*ROUTE, status)] = ([int(c) for c in counts],
                                         [float(total[start + _SERIES - 1])])
        return out

"""A Redis worker's pending impressions across restarts: a snapshot of its ``JoinState``
in its data-directory slot (``join.npz``), and the part of its write-ahead log after it.

Why a snapshot of its own: a Redis worker drops its log as its flushes are confirmed
(``worker_log``), but an impression stays pending for a whole window, long after the flush
that carried the batches logged beside it. So the log is dropped only up to the last
snapshot (``droppable``), and a snapshot is taken, at most every ``--snapshot-every``
seconds (60; 0: never, and the log keeps everything), when a flush is prepared, under the
learn lock: at that moment the flush carries the rows of every record logged so far, so
once it is applied, the snapshot (whose position ``S`` is the log's last record) and the
shared state agree. It is written only after that flush is confirmed (a snapshot on disk
never runs ahead of the shared state).

After a restart (``LearnerService.open``): the snapshot is loaded; the join records after
``S`` are replayed; those up to the last logged flush's position (``U``) without learning
(their rows are in the shared state: learning them again would count them twice), those
after ``U`` learned as the first time. Records up to ``S`` are not read at all.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np

from ..wal.segments import fsync_dir

#: seconds between two snapshots of the pending impressions (when flushes happen), unless
#: the learner says (``--snapshot-every``)
SNAPSHOT_EVERY = 60.0
FILE = "join.npz"


def read(slot: Path) -> tuple[int, dict[str, np.ndarray]] | None:
    """(log position, the ``JoinState`` arrays) of the slot's snapshot, if any."""
    path = slot / FILE
    if not path.exists():
        return None
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    seq = int(arrays.pop("_log_seq")[0])
    return seq, arrays


def write(slot: Path, seq: int, arrays: dict[str, np.ndarray]) -> None:
    """Write the snapshot whole (synced, then renamed over the last one)."""
    buf = io.BytesIO()
    np.savez(buf, _log_seq=np.array([seq], dtype=np.int64), **arrays)  # type: ignore[arg-type]
    tmp = slot / (FILE + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(buf.getbuffer())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, slot / FILE)
    fsync_dir(slot)


class JoinSnapshots:
    """When to take the next snapshot, and what the log may drop."""

    def __init__(self, slot: Path, seq: int, every: float = SNAPSHOT_EVERY) -> None:
        self.slot = slot
        self.seq = seq  # the position of the snapshot on disk (0: none)
        self.every = every  # 0: never
        self._last = time.monotonic()

    def due(self) -> bool:
        return self.every > 0 and time.monotonic() - self._last >= self.every

    def taken(self) -> None:
        self._last = time.monotonic()

    def written(self, seq: int) -> None:
        self.seq = max(self.seq, seq)

    def droppable(self, upto: int) -> int:
        """The log position the log may drop through, given the flushes' ``upto``."""
        return min(upto, self.seq)

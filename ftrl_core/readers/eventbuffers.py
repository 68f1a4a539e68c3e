"""The output arrays of an in-memory event body: allocated, grown when the scanner runs out
of room, or reused from one body to the next.

A body is scanned into CSR outputs (``base.Outputs``), the id ranges of its events and the
scanner's state. The scanner needs room for a whole row before each one (up to
``max_row_features``, 10,000 by default), so even a one-event body asks for about 0.4 MB of
arrays; allocating and slicing them took longer than scanning that event (about 12 us of
19 us per one-event prediction on the machine this was measured on).

``Recycled`` keeps one set and hands it out again for every body that fits. The batch
parsed from a body is then a view into arrays that the next parse with the same format
overwrites, so it is only for callers that are done with a batch before they parse the
next body, in the same thread: the service's predictions (parse, predict, encode the
answer, with nothing in between).
"""

from __future__ import annotations

import numpy as np

from .base import Outputs
from .jsonkernel import ID_ROWS, STATE_SIZE

#: bodies needing more feature room than this get fresh arrays, never kept (8 MB of arrays
#: at 32 bytes a feature: a one-off large body must not pin its arrays for good)
MAX_RECYCLED_NNZ = 1 << 18


def fresh(rows_cap: int, nnz_cap: int) -> tuple[Outputs, np.ndarray]:
    """New outputs and id arrays (4 x rows: the id's start, length, escaped; where ``ts``
    starts) for a body."""
    out = Outputs.allocate(rows_cap, nnz_cap)
    out.state = np.zeros(STATE_SIZE, dtype=np.int64)
    return out, np.empty((ID_ROWS, rows_cap), dtype=np.int64)


def grow(out: Outputs, ids: np.ndarray) -> tuple[Outputs, np.ndarray]:
    """The same outputs with twice the room where the kernel ran out of it (never recycled:
    the scan goes on in the new arrays, which the caller drops with the batch)."""
    rows, used = int(out.state[1]), int(out.state[2])
    rows_cap = out.labels.size * (2 if rows + 1 >= out.labels.size else 1)
    new = Outputs.allocate(rows_cap, 2 * out.keys.size)
    new.indptr[: rows + 1] = out.indptr[: rows + 1]
    for name in ("keys", "fields", "values", "refs", "kinds"):
        getattr(new, name)[:used] = getattr(out, name)[:used]
    for name in ("labels", "weights", "lines"):
        getattr(new, name)[:rows] = getattr(out, name)[:rows]
    new_ids = np.empty((ID_ROWS, rows_cap), dtype=np.int64)
    new_ids[:, :rows] = ids[:, :rows]
    new.err, new.state = out.err.copy(), out.state.copy()
    return new, new_ids


class Recycled:
    """One set of outputs handed out again for every body that fits in it."""

    def __init__(self) -> None:
        self._out: Outputs | None = None
        self._ids = np.empty((ID_ROWS, 0), dtype=np.int64)

    def take(self, rows_cap: int, nnz_cap: int) -> tuple[Outputs, np.ndarray]:
        """Outputs with room for ``rows_cap`` rows and ``nnz_cap`` features, state and
        error cleared; the previous batch taken from them is overwritten from now on."""
        if nnz_cap > MAX_RECYCLED_NNZ:
            return fresh(rows_cap, nnz_cap)
        out = self._out
        if out is None or out.labels.size < rows_cap or out.keys.size < nnz_cap:
            # grow geometrically, so that bodies of slowly rising sizes do not reallocate
            # each time; the largest body seen sets the size kept
            if out is not None:
                rows_cap = max(rows_cap, 2 * out.labels.size)
                nnz_cap = min(max(nnz_cap, 2 * out.keys.size), MAX_RECYCLED_NNZ)
            out, self._ids = fresh(rows_cap, nnz_cap)
            self._out = out
            return out, self._ids
        out.state.fill(0)
        out.err.fill(0)
        return out, self._ids

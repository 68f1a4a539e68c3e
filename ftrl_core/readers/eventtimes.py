"""The join's ``ts`` of each event of a parsed JSON body, read where the scanner found it.

The scanner (``jsonkernel.scan_events``) records where the value of each event's top-level
``ts`` key starts (``Batch.extra["ts_start"]``, -1: none) and has validated the body's
syntax; ``event_times`` converts those values in one compiled pass (numbers exactly, as
``numparse`` does everywhere, so bit-equal to msgspec's), instead of decoding the body a
second time in Python.
"""

from __future__ import annotations

import numpy as np

from .._jit import kernel
from .numparse import NUM_OK, POW5, POW10, json_simple_number, parse_number


@kernel
def _times(buf, starts, lo, hi, pow5, pow10, out):  # type: ignore[no-untyped-def]
    """``out[i]``: the number at ``starts[i]`` (NaN: no ts or null). Returns False when a
    value is anything else or out of ``[lo, hi]`` (the caller checks those in full)."""
    end = buf.size
    for i in range(starts.size):
        p = starts[i]
        if p < 0:
            out[i] = np.nan
            continue
        c = buf[p]
        if c == 110:  # null
            out[i] = np.nan
            continue
        if not (c == 45 or 48 <= c <= 57):
            return False
        simple, v, _q = json_simple_number(buf, p, end, pow10)
        if not simple:
            status, v, _r = parse_number(buf, p, end, True, pow5, pow10)
            if status != NUM_OK:
                return False
        if not lo <= v <= hi:  # NaN fails too
            return False
        out[i] = v
    return True


def event_times(buf: np.ndarray, starts: np.ndarray, lo: float, hi: float
                ) -> np.ndarray | None:
    """Each event's ``ts`` as float64 (NaN: absent or null), or None when one is not a
    number from ``lo`` to ``hi``."""
    out = np.empty(starts.size, dtype=np.float64)
    if not _times(buf, np.ascontiguousarray(starts, dtype=np.int64), float(lo), float(hi),
                  POW5, POW10, out):
        return None
    return out

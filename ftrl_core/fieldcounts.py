"""Per-field counters of bounded memory: admitted, refused and evicted, by field id.

One int64 array of shape (3, fields), indexed by field id, that the admission gate and the
eviction kernels add to where they decide (``admission.gate``, ``eviction.sweep_idle``,
``eviction.evict_sampled``). It grows when a batch brings a field id past its end, so it
costs 24 bytes per field in use, never per coordinate.

Which field a count goes to: the gate knows each occurrence's field (``Batch.fields``); the
sweep and the sampled eviction only see a stored key, whose top bits hold the field
(``hashing``); in hashed mode those bits say "hashed" and evictions go to the ``*`` field.

Saved with the model (``field_counts``), so that after a resume the per-field figures still
add up to the running totals that are saved too. A model file written before these counters
existed loads with zeros: its per-field figures then count from the resume only.
"""

from __future__ import annotations

import numpy as np

from .hashing import VALUE_BITS

ADMITTED, REFUSED, EVICTED = 0, 1, 2
NAMES = ("admitted", "refused", "evicted")
STATE_KEY = "field_counts"


class FieldCounts:
    """admitted / refused / evicted per field id (rows ``ADMITTED``, ``REFUSED``,
    ``EVICTED``)."""

    def __init__(self, fields: int = 1) -> None:
        self.counts = np.zeros((len(NAMES), max(fields, 1)), dtype=np.int64)

    def grow(self, fields: int) -> None:
        """Room for field ids below ``fields`` (the kernels do not check bounds)."""
        if fields > self.counts.shape[1]:
            grown = np.zeros((len(NAMES), fields), dtype=np.int64)
            grown[:, : self.counts.shape[1]] = self.counts
            self.counts = grown

    def cover(self, fields: np.ndarray, keys: np.ndarray) -> None:
        """Room for every field id in ``fields`` and every field a key in ``keys`` carries
        in its top bits (the key's tag is field id + 1: the largest key has the largest)."""
        need = 0
        if fields.size:
            need = int(fields.max()) + 1
        if keys.size:
            need = max(need, int(np.uint64(keys.max()) >> np.uint64(VALUE_BITS)))
        self.grow(need)

    def per_field(self) -> dict[int, dict[str, int]]:
        """{field id: {admitted, refused, evicted}} for the fields with any count."""
        used = np.flatnonzero(self.counts.any(axis=0))
        return {int(f): {n: int(self.counts[i, f]) for i, n in enumerate(NAMES)}
                for f in used}

    def to_state(self) -> dict[str, np.ndarray]:
        return {STATE_KEY: self.counts.copy()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        if STATE_KEY not in arrays:  # an older model file: count from here
            return
        counts = np.asarray(arrays[STATE_KEY], dtype=np.int64)
        if counts.ndim != 2 or counts.shape[0] != len(NAMES):
            raise ValueError(f"per-field counts of shape {counts.shape}")
        self.counts = np.zeros((len(NAMES), max(counts.shape[1], 1)), dtype=np.int64)
        self.counts[:, : counts.shape[1]] = counts

"""What the model keeps and what it drops: non-zeros, L1 norm, per-field statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .fields import FieldRegistry
from .hashing import HASHED_FIELD, field_of_keys


@dataclass
class Sparsity:
    coordinates: int  # stored coordinates (live keys in the state table)
    nnz: int  # of those, weights that are not zero
    l1_norm: float
    fields: dict[str, dict[str, float]]  # field -> {coordinates, nnz, l1}

    def as_dict(self) -> dict[str, Any]:
        return {"coordinates": self.coordinates, "nnz": self.nnz, "l1_norm": self.l1_norm,
                "fields": self.fields}


class SparsityCounter:
    """Accumulates per-field coordinates, non-zeros and L1 mass over chunks of weights."""

    def __init__(self) -> None:
        n_slots = HASHED_FIELD + 1
        self.coords = np.zeros(n_slots, dtype=np.int64)
        self.nnz = np.zeros(n_slots, dtype=np.float64)
        self.mass = np.zeros(n_slots, dtype=np.float64)

    def add(self, keys: np.ndarray, weights: np.ndarray) -> None:
        fids = field_of_keys(keys)
        fids = np.where((fids >= 0) & (fids <= HASHED_FIELD), fids, HASHED_FIELD)
        n_slots = self.coords.size
        self.coords += np.bincount(fids, minlength=n_slots)
        self.nnz += np.bincount(fids, weights=(weights != 0.0).astype(np.float64),
                                minlength=n_slots)
        self.mass += np.bincount(fids, weights=np.abs(weights), minlength=n_slots)

    def result(self, registry: FieldRegistry) -> Sparsity:
        per_field = {
            registry.name(int(f)): {"coordinates": int(self.coords[f]),
                                    "nnz": int(self.nnz[f]), "l1": float(self.mass[f])}
            for f in np.flatnonzero(self.coords)
        }
        return Sparsity(int(self.coords.sum()), int(self.nnz.sum()), float(self.mass.sum()),
                        per_field)


def sparsity(keys: np.ndarray, weights: np.ndarray, registry: FieldRegistry) -> Sparsity:
    counter = SparsityCounter()
    counter.add(keys, weights)
    return counter.result(registry)


def top_weights(keys: np.ndarray, weights: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` largest weights by |w| (keys, weights), largest first."""
    n = min(n, keys.size)
    if n <= 0:
        return keys[:0], weights[:0]
    idx = np.argpartition(-np.abs(weights), n - 1)[:n]
    idx = idx[np.argsort(-np.abs(weights[idx]), kind="stable")]
    return keys[idx], weights[idx]

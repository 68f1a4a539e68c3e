"""Figures that need a pass over the stored weights, for the primary and every variant.

A pass over a million coordinates costs tens of milliseconds per learner, too much to hold
the learn lock for. So the lock is held only to *copy* what the pass reads (each learner's
state table's words, into a buffer kept from one pass to the next, and its counters,
metrics histogram and field names: memory-speed copies), and the pass runs on the copies
in a worker thread while learning goes on. The result is cached per model
state (``changes``: rows learned and coordinates evicted): ``/v1/model``, ``/v1/variants``,
``/metrics`` and the dashboard's sampler all read the same figures for the same state, and
an idle model is never scanned twice.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ftrl_core.fields import FieldRegistry
from ftrl_core.metrics import ProgressiveMetrics
from ftrl_core.model import Model
from ftrl_core.optimizers import Optimizer
from ftrl_core.sparsity import SparsityCounter

#: the |w| histogram: log10 bins from 1e-8 to 1e2, four per decade (outside: the end bins)
ABS_W_LOW, ABS_W_HIGH, ABS_W_PER_DECADE = -8, 2, 4
ABS_W_BINS = (ABS_W_HIGH - ABS_W_LOW) * ABS_W_PER_DECADE
CALIBRATION_BUCKETS = 10


@dataclass
class ModelStats:
    """One learner's figures at one model version."""

    version: int
    coordinates: int
    nnz: int
    l1_norm: float
    name: str = "primary"
    primary: bool = True
    optimizer: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    rows: int = 0
    logloss: float | None = None
    auc: float | None = None
    calibration: float | None = None
    fields: dict[str, dict[str, float]] = field(default_factory=dict)
    abs_w_counts: list[int] = field(default_factory=list)
    calibration_buckets: list[dict[str, float]] = field(default_factory=list)
    #: with --admit / --evict-idle / --max-coordinates: per field name, admitted, refused
    #: and evicted (running totals) and live coordinates; None without bounds
    bounded_fields: dict[str, dict[str, int]] | None = None

    def summary(self) -> dict[str, Any]:
        """The ``/v1/variants`` entry."""
        return {"name": self.name, "primary": self.primary, "optimizer": self.optimizer,
                "params": self.params, "rows": self.rows, "logloss": self.logloss,
                "auc": self.auc, "calibration": self.calibration, "nnz": self.nnz,
                "coordinates": self.coordinates, "l1_norm": self.l1_norm}

    def details(self) -> dict[str, Any]:
        """The dashboard's entry: the summary, per-field figures and the distributions."""
        return {**self.summary(), "fields": self.fields, "abs_w_counts": self.abs_w_counts,
                "calibration_buckets": self.calibration_buckets,
                "bounded_fields": self.bounded_fields}


def abs_w_edges() -> list[float]:
    return [10.0 ** (ABS_W_LOW + i / ABS_W_PER_DECADE) for i in range(ABS_W_BINS + 1)]


@dataclass
class _Frozen:
    name: str
    primary: bool
    version: int
    optimizer: Optimizer
    metrics: ProgressiveMetrics
    registry: FieldRegistry
    #: the bounds' running totals per field (None: the learner is not bounded)
    bounded: dict[int, dict[str, int]] | None


def freeze(models: Sequence[tuple[str, Model]],
           buffers: dict[int, np.ndarray] | None = None) -> list[_Frozen]:
    """Copies of what the stats read (call it holding the learn lock). Of an optimizer only
    the table's words, its ages and the counters are copied: a shallow copy shares the rest,
    its configuration, which learning does not change (a deep copy took the bounds' filter
    and every other part too: 40-100 ms of the lock at 850k coordinates, each sample).
    ``buffers`` (learner index -> words) keeps the copies' memory from one pass to the next:
    a fresh table-sized array faulted all its pages in each time, most of the copy's cost."""
    out = []
    for i, (name, m) in enumerate(models):
        live = m.optimizer.table
        words = None if buffers is None else buffers.get(i)
        if words is None or words.shape != live.words.shape:
            words = np.empty_like(live.words)
            if buffers is not None:
                buffers[i] = words
        np.copyto(words, live.words)
        table = copy.copy(live)
        table.words, table.ages, table.meta = words, live.ages.copy(), live.meta.copy()
        opt = copy.copy(m.optimizer)
        opt.table, opt.counters = table, m.optimizer.counters.copy()
        bounded = None if opt.bounds is None else opt.bounds.per_field()
        out.append(_Frozen(name, i == 0, m.rows, opt, copy.deepcopy(m.metrics),
                           copy.deepcopy(m.registry), bounded))
    return out


def compute(frozen: _Frozen) -> ModelStats:
    """The pass over one frozen learner's weights (no lock needed)."""
    opt = frozen.optimizer
    counter = SparsityCounter(ABS_W_BINS, ABS_W_LOW, ABS_W_PER_DECADE)
    for keys in opt.table.iter_keys():
        counter.add(keys, opt.weights(keys))
    sp = counter.result(frozen.registry)
    bounded = None if frozen.bounded is None else bounded_fields(
        frozen.bounded, counter.coords, frozen.registry)
    cfg = opt.config()
    m = frozen.metrics
    return ModelStats(
        version=frozen.version, coordinates=sp.coordinates, nnz=sp.nnz, l1_norm=sp.l1_norm,
        name=frozen.name, primary=frozen.primary, optimizer=cfg["optimizer"],
        params={**cfg["params"], **cfg.get("extra", {})}, rows=m.rows,
        logloss=finite(m.logloss), auc=finite(m.auc), calibration=finite(m.calibration),
        fields=sp.fields, abs_w_counts=counter.hist.tolist(),
        calibration_buckets=m.calibration_buckets(CALIBRATION_BUCKETS),
        bounded_fields=bounded)


def bounded_fields(counts: dict[int, dict[str, int]], live: np.ndarray,
                   registry: FieldRegistry) -> dict[str, dict[str, int]]:
    """Per field name: the bounds' counters and the live coordinates (from the same pass
    over the table as the sparsity figures), for every field with any of them, in field id
    order. A field whose features were all refused or evicted shows with live 0."""
    ids = sorted(set(counts) | {int(f) for f in np.flatnonzero(live)})
    zero = {"admitted": 0, "refused": 0, "evicted": 0}
    return {registry.name(f): {**counts.get(f, zero),
                               "live": int(live[f]) if f < live.size else 0}
            for f in ids}


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def changes(models: Sequence[tuple[str, Model]]) -> int:
    """A count that grows whenever a learner's figures can change: the rows learned, and the
    coordinates evicted (a sweep changes the table without learning a row: keyed by the
    rows alone, the figures of an idle model stayed those from before its sweep)."""
    total = 0
    for _, m in models:
        total += m.rows
        bounds = m.optimizer.bounds
        if bounds is not None and bounds.eviction is not None:
            total += bounds.eviction.evicted
    return total


class StatsCache:
    """The figures of every learner, computed at most once per state (``changes``)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.latest: list[ModelStats] | None = None
        self._changes = -1  # ``changes`` when ``latest`` was copied (at least)
        self._buffers: dict[int, np.ndarray] = {}  # ``freeze``'s, used under ``_lock``

    async def get(self,
                  read: Callable[[Callable[[Model], list[_Frozen]]], Awaitable[list[_Frozen]]],
                  models: Callable[[], Sequence[tuple[str, Model]]]) -> list[ModelStats]:
        """The figures now, or those of the last pass if nothing changed since; ``read``
        runs a function under the learn lock, ``models`` lists (name, model), the primary
        first."""
        async with self._lock:  # one computation at a time; the waiters reuse it
            now = changes(models())  # before the copy, which is then at least this new
            if self.latest is not None and self._changes >= now:
                return self.latest
            frozen = await read(lambda _: freeze(models(), self._buffers))
            stats = await asyncio.to_thread(lambda: [compute(f) for f in frozen])
            self.latest, self._changes = stats, now
            return stats

"""The dashboard's history: a bounded ring of samples taken every ``--stats-every`` seconds.

A sample holds, per learner (the primary, then each variant), the figures of
``modelstats`` (nnz, L1 norm, progressive logloss and AUC) and, for the service, events
learned per second and the p50/p99 latency of the predictions answered since the previous
sample. Sampling is the only place the stats are computed for the dashboard: ``GET
/v1/stats`` serves the latest sample and the history, computing nothing, however many pages
poll it. An idle model costs no scan (figures are cached per model version).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from .learner import LearnerService
from .modelstats import ModelStats, abs_w_edges
from .observability import LatencyWindow

log = logging.getLogger(__name__)

#: figures kept over time for every learner
MODEL_SERIES = ("nnz", "l1_norm", "logloss", "auc", "rows")


@dataclass
class Sample:
    seq: int
    t: float  # Unix time
    events_per_s: float
    predictions_per_s: float
    predict_p50_ms: float | None
    predict_p99_ms: float | None
    models: dict[str, dict[str, Any]]  # name -> MODEL_SERIES figures


class StatsHistory:
    """The samples (oldest dropped first) and the latest full figures."""

    def __init__(self, capacity: int, interval: float) -> None:
        self.interval = interval
        self.boot = uuid.uuid4().hex[:12]
        self._samples: deque[Sample] = deque(maxlen=capacity)
        self._seq = 0
        self.latest: list[ModelStats] | None = None
        self.latest_at: float | None = None

    def add(self, stats: list[ModelStats], events_per_s: float, predictions_per_s: float,
            latencies: list[float]) -> Sample:
        self._seq += 1
        p50 = p99 = None
        if latencies:
            p50, p99 = (float(x) * 1000 for x in np.percentile(latencies, [50, 99]))
        now = time.time()
        sample = Sample(self._seq, now, events_per_s, predictions_per_s, p50, p99,
                        {s.name: {k: getattr(s, k) for k in MODEL_SERIES} for s in stats})
        self._samples.append(sample)
        self.latest, self.latest_at = stats, now
        return sample

    def __len__(self) -> int:
        return len(self._samples)

    def payload(self, since: int = 0) -> dict[str, Any]:
        """``GET /v1/stats``: the latest figures, and the samples after ``since`` as
        columns (what a chart library takes)."""
        samples = [s for s in self._samples if s.seq > since]
        names = [s.name for s in self.latest] if self.latest else []
        history: dict[str, Any] = {
            "seq": [s.seq for s in samples], "t": [s.t for s in samples],
            "events_per_s": [s.events_per_s for s in samples],
            "predictions_per_s": [s.predictions_per_s for s in samples],
            "predict_p50_ms": [s.predict_p50_ms for s in samples],
            "predict_p99_ms": [s.predict_p99_ms for s in samples],
            "models": {name: {k: [s.models.get(name, {}).get(k) for s in samples]
                              for k in MODEL_SERIES} for name in names}}
        return {"boot": self.boot, "interval": self.interval,
                "model_version": self.latest[0].version if self.latest else None,
                "sampled_at": self.latest_at, "abs_w_edges": abs_w_edges(),
                "models": [s.details() for s in self.latest or []], "history": history}


class Sampler:
    """Takes a sample now and then; rates are over the time since the previous sample."""

    def __init__(self, learner: LearnerService, history: StatsHistory,
                 latency: LatencyWindow) -> None:
        self.learner = learner
        self.history = history
        self.latency = latency
        self._last: tuple[float, int, int] | None = None

    async def sample(self) -> Sample | None:
        svc = self.learner
        if not svc.ready:
            return None
        stats = await svc.all_stats()
        now = time.monotonic()
        counts = (svc.events_learned, svc.predictions_served)
        latencies = self.latency.drain()
        rates = (0.0, 0.0)
        if self._last is not None:
            dt = max(now - self._last[0], 1e-9)
            rates = ((counts[0] - self._last[1]) / dt, (counts[1] - self._last[2]) / dt)
        self._last = (now, *counts)
        return self.history.add(stats, rates[0], rates[1], latencies)

    async def run(self) -> None:
        """Sample every ``interval`` seconds (the first as soon as the kernels are ready);
        errors are logged and the next tick tries again."""
        while not self.learner.ready:
            await asyncio.sleep(0.05)
        while True:
            try:
                await self.sample()
            except Exception:
                log.exception("sampling the dashboard's stats failed")
            await asyncio.sleep(self.history.interval)

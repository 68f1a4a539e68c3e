"""Prometheus metrics (one registry per app, never the global one) and the request
middleware: request ids, latency per route, and 500 problems for unexpected failures.

Model figures (nnz, L1 norm, coordinates) need a pass over the stored weights: the
``/metrics`` route refreshes them once per model version before rendering, and the collector
reads that cached value, so a scrape of an idle model costs nothing and counters never
touch the hot path (they are plain integers of the learner service, read at scrape time).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ftrl_core.fields import OVERFLOW_NAME
from ftrl_core.hashing import MAX_FIELDS

from .errors import Problem

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: where the request middleware leaves a request's id in its ASGI scope
REQUEST_ID_KEY = "ctr.request_id"


#: the join's counters on /metrics: (name, JoinState.counts key, help)
_JOIN_COUNTERS = (
    ("ctr_join_impressions", "impressions", "Impressions received by /v1/impressions"),
    ("ctr_join_clicks_joined", "joined", "Clicks joined to their pending impression"),
    ("ctr_join_expired", "expired", "Impressions closed by their attribution window"),
    ("ctr_join_closed_early", "closed_early", "Impressions closed early by --max-pending"),
    ("ctr_join_late_clicks", "late", "Clicks after their impression's window closed"),
    ("ctr_join_unknown_clicks", "unknown", "Clicks for ids never seen"),
    ("ctr_join_negatives_dropped", "negatives_dropped", "Negatives not learned "
     "(--negative-rate)"),
    ("ctr_join_clicks_forwarded", "forwarded", "Clicks for ids this worker does not hold, "
     "published for the other workers (Redis store)"),
    ("ctr_join_marks_matched", "marks_matched", "Clicks other workers published that this "
     "worker held the impression of (Redis store)"),
)


def _join_metrics(join: Any) -> Iterator[Metric]:
    """The attribution join's counters and gauges (``service.join``), when it runs."""
    if join is None:
        return
    for name, key, doc in _JOIN_COUNTERS:
        yield CounterMetricFamily(name, doc, value=join.counts[key])
    yield GaugeMetricFamily("ctr_join_pending", "Impressions waiting for their window to "
                            "close", value=join.npending)
    yield GaugeMetricFamily("ctr_join_pending_bytes", "Bytes held by pending impressions",
                            value=join.bytes_held())


class ModelCollector(Collector):
    """Counters and model gauges, read from the learner service at scrape time."""

    def __init__(self, learner: Callable[[], Any]) -> None:
        self._learner = learner
        #: predictions served by other processes (prediction workers)
        self.external_predictions: Callable[[], int] | None = None

    def collect(self) -> Iterator[Metric]:
        svc = self._learner()
        if svc is None:
            return
        for name, doc, value in (
                ("ctr_events_learned", "Events learned by this process", svc.events_learned),
                ("ctr_events_rejected", "Events not learned: invalid, or in a rejected batch",
                 svc.events_rejected),
                ("ctr_predictions", "Predictions served", svc.predictions_served
                 + (self.external_predictions() if self.external_predictions else 0)),
                ("ctr_snapshots", "Checkpoints written", svc.snapshots_written),
                ("ctr_idempotent_replays", "Retried requests answered from their "
                 "Idempotency-Key, not learned again", svc.keys.replayed)):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("ctr_ready", "1 once the model is loaded and the kernels "
                                "compiled", value=float(svc.ready))
        store = svc.store.status()
        yield GaugeMetricFamily("ctr_store_healthy", "1 while the state store is reachable "
                                "(0: degraded, training refused, predictions from the cache)",
                                value=float(bool(store.get("healthy"))))
        if "rows_pending" in store:  # a shared store
            yield GaugeMetricFamily("ctr_store_rows_unflushed", "Rows learned here whose "
                                    "deltas the store has not confirmed",
                                    value=float(store["rows_pending"]))
            yield CounterMetricFamily("ctr_store_flushes", "Flushes applied",
                                      value=float(store["flushes"]))
            yield CounterMetricFamily("ctr_store_flush_failures", "Flushes that failed "
                                      "(kept and resent)", value=float(store["flush_failures"]))
        if "sweep_calls" in store:  # a shared store that evicts (redis ``sweep``)
            yield GaugeMetricFamily("ctr_store_live_coordinates", "Coordinates in the shared "
                                    "state (every shard), after this worker's last sweep",
                                    value=float(store["shared_live"]))
            yield GaugeMetricFamily("ctr_store_sweep_longest_call_seconds", "Longest call of "
                                    "this worker's last sweep (round trip: an upper bound on "
                                    "how long it blocked its shard)",
                                    value=float(store["sweep_longest_ms"]) / 1e3)
        if "log_seq" in store:  # a data directory's write-ahead log
            yield GaugeMetricFamily("ctr_wal_last_record", "Last record written to the "
                                    "write-ahead log", value=float(store["log_seq"]))
            yield GaugeMetricFamily("ctr_wal_synced_record", "Last record synced to disk",
                                    value=float(store["synced_seq"]))
        yield from _join_metrics(getattr(svc, "join", None))
        model = svc._model
        if model is None:
            return
        yield GaugeMetricFamily("ctr_model_version", "Model version (events learned)",
                                value=model.rows)
        yield GaugeMetricFamily("ctr_fields", "Field ids in use (of ctr_fields_capacity)",
                                value=len(model.registry))
        yield GaugeMetricFamily("ctr_fields_capacity", "Field ids a model has; past them, "
                                "new fields share the overflow field", value=MAX_FIELDS)
        yield CounterMetricFamily("ctr_overflow_features", "Feature occurrences learned in "
                                  "the shared overflow field (fields past the capacity)",
                                  value=svc.overflow_features)
        logloss, auc = model.metrics.logloss, model.metrics.auc
        yield GaugeMetricFamily("ctr_progressive_logloss",
                                "Progressive logloss of every event learned", value=logloss)
        yield GaugeMetricFamily("ctr_progressive_auc", "Progressive AUC", value=auc)
        yield GaugeMetricFamily("ctr_model_table_bytes", "Bytes of the state table",
                                value=model.optimizer.table.nbytes)
        yield GaugeMetricFamily("ctr_live_coordinates", "Coordinates in the state table",
                                value=model.optimizer.table.size)
        bounds = model.optimizer.bounds
        if bounds is not None:  # --admit, --evict-idle, --max-coordinates
            counts = bounds.counts(model.optimizer.table)
            for name, doc in (
                    ("admitted", "Features given a coordinate by the admission policy"),
                    ("refused", "Feature occurrences not admitted (dropped from their row)"),
                    ("evicted", "Coordinates dropped by eviction (idle or over the cap)")):
                yield CounterMetricFamily(f"ctr_coordinates_{name}", doc, value=counts[name])
            yield GaugeMetricFamily("ctr_admission_filter_bytes", "Bytes of the admission "
                                    "filter", value=bounds.nbytes)
        stats = svc._stats
        if stats is not None:
            yield GaugeMetricFamily("ctr_model_nnz", "Non-zero weights", value=stats.nnz)
            yield GaugeMetricFamily("ctr_model_coordinates", "Stored coordinates",
                                    value=stats.coordinates)
            yield GaugeMetricFamily("ctr_model_l1_norm", "L1 norm of the weights",
                                    value=stats.l1_norm)
            overflow = stats.fields.get(OVERFLOW_NAME, {})
            yield GaugeMetricFamily("ctr_overflow_coordinates", "Stored coordinates of the "
                                    "overflow field", value=overflow.get("coordinates", 0))
            if stats.bounded_fields:
                yield from _bounded_field_metrics(stats.bounded_fields)


def _bounded_field_metrics(per_field: dict[str, dict[str, int]]) -> Iterator[Metric]:
    """The bounded-memory counters split by field (label ``field``: its name), from the same
    stats pass as ``/v1/stats`` ``bounded_fields`` (refreshed per model version before a
    scrape), so a dashboard's per-field table and Prometheus agree. One series per field in
    use: the field registry is capped (``ctr_fields_capacity``), so the label's cardinality
    is too."""
    docs = {"admitted": "Features given a coordinate by the admission policy, by field",
            "refused": "Feature occurrences not admitted, by field",
            "evicted": "Coordinates dropped by eviction, by field"}
    for name, doc in docs.items():
        family = CounterMetricFamily(f"ctr_field_coordinates_{name}", doc, labels=["field"])
        for field, counts in per_field.items():
            family.add_metric([field], counts[name])
        yield family
    live = GaugeMetricFamily("ctr_field_live_coordinates", "Coordinates in the state table, "
                             "by field", labels=["field"])
    for field, counts in per_field.items():
        live.add_metric([field], counts["live"])
    yield live


class LatencyWindow:
    """The latencies of one route since the last ``drain`` (at most ``cap`` of them), for
    the dashboard's p50/p99 over each sampling interval: one list append per request."""

    def __init__(self, cap: int = 1 << 16) -> None:
        self.cap = cap
        self._values: list[float] = []

    def add(self, seconds: float) -> None:
        if len(self._values) < self.cap:
            self._values.append(seconds)

    def drain(self) -> list[float]:
        values, self._values = self._values, []
        return values


#: one histogram's counts per bucket (the last: above every bound) and its sum, in a list
LatencySeries = tuple[list[int], list[float]]


class LatencyHistograms(Collector):
    """``ctr_http_request_duration_seconds``: a Prometheus histogram per (route, method,
    status), kept as plain counts and rendered at scrape time. An observation is one
    ``bisect`` and two additions on the event loop's thread (prometheus_client's
    ``Histogram.observe`` takes a lock per bucket and sum update: a tenth of a single-event
    prediction's whole cost in the app when this was measured)."""

    name = "ctr_http_request_duration_seconds"

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        #: (route, method, status) -> [count per bucket (the last: above every bound), sum]
        self._series: dict[tuple[str, str, int], LatencySeries] = {}
        #: series observed by other processes (prediction workers), added when collected
        self.external: Callable[[], dict[tuple[str, str, int], LatencySeries]] | None = None

    def observe(self, key: tuple[str, str, int], seconds: float) -> None:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = ([0] * (len(self.bounds) + 1), [0.0])
        series[0][bisect.bisect_left(self.bounds, seconds)] += 1
        series[1][0] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, "Request latency by route, method and status",
                                       labels=("route", "method", "status"))
        series = dict(self._series)
        for key, (counts, total) in (self.external() if self.external else {}).items():
            mine = series.get(key)
            series[key] = (counts, total) if mine is None else (
                [a + b for a, b in zip(mine[0], counts, strict=True)], [mine[1][0] + total[0]])
        for (route, method, status), (counts, total) in series.items():
            cumulative = list(itertools.accumulate(counts))
            buckets = [(floatToGoString(b), float(c))
                       for b, c in zip(self.bounds, cumulative, strict=False)]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric([route, method, str(status)], buckets, sum_value=total[0])
        yield family


class AppMetrics:
    def __init__(self, learner: Callable[[], Any]) -> None:
        self.predict_latency = LatencyWindow()
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = LatencyHistograms()
        self.model = ModelCollector(learner)
        self.registry.register(self.latency)
        self.registry.register(self.model)

    def add_prediction_workers(self, directory: Path) -> None:
        """Count the predictions of the prediction workers sharing this model
        (``service.workers``) with this process's own."""
        from .workers.stats import ReaderTotals

        totals = ReaderTotals(directory)
        self.latency.external = totals.series
        self.model.external_predictions = totals.predictions

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.latency.observe((route, method, status), seconds)
        if status == 200 and route == "/v1/predict":
            self.predict_latency.add(seconds)


class RequestMiddleware:
    """Pure ASGI (no per-request task or body copy): tags every response with
    ``X-Request-ID`` (the client's if it sent a sane one), times it under its route
    template, and answers an unexpected exception with a bare 500 problem while the
    traceback goes to the log with the request id."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = scope[REQUEST_ID_KEY] = _request_id(scope) or self._ids.next()
        rid_header = (b"x-request-id", rid.encode())
        status = 500
        started = False

        async def send_tagged(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            await self.app(scope, receive, send_tagged)
        except Exception as exc:
            status = await answer_failure(exc, scope, receive, send_tagged, rid, started)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(path, scope.get("method", ""), status,
                                 time.perf_counter() - start)


async def answer_failure(exc: Exception, scope: Scope, receive: Receive, send: Send, rid: str,
                         started: bool) -> int:
    """How an exception ends a request (the status for the metrics): a client gone mid-body
    is 499 with nobody to answer; anything else is logged with its traceback and the request
    id, and answered, unless the answer had begun, with a bare 500 problem (``send`` tags
    it with the request id)."""
    if isinstance(exc, ClientDisconnect):
        log.info("client disconnected: %s %s (request id %s)", scope.get("method"),
                 scope.get("path"), rid)
        return 499
    log.error("request %s %s failed (request id %s)", scope.get("method"), scope.get("path"),
              rid, exc_info=exc)
    if not started:
        problem = Problem(500, None, "an unexpected error occurred; the request id "
                          "identifies it in the service log", request_id=rid)
        await problem.response()(scope, receive, send)
    return 500


class RequestIds:
    """Ids of requests that came without one: 32 hex digits, a random per-process prefix
    and a counter (unique without a random draw per request, which costs a system call)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8).encode()
        self._count = itertools.count()

    def next(self) -> str:
        return self.next_bytes().decode()

    def next_bytes(self) -> bytes:
        """The id as the header's bytes (what the lean path needs first)."""
        return b"%s%016x" % (self._prefix, next(self._count))


def _request_id(scope: Scope) -> str | None:
    """The client's ``X-Request-ID`` when it is a sane one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return sane_request_id(value.decode("latin-1"))
    return None


def sane_request_id(text: str | None) -> str | None:
    """A client's request id, if it is one we can log and echo (else None: we make one)."""
    return text if text is not None and _REQUEST_ID.fullmatch(text) else None

"""Prometheus metrics (one registry per app, never the global one) and the request
middleware: request ids, latency per route, and 500 problems for unexpected failures.

Model figures (nnz, L1 norm, coordinates) need a pass over the stored weights: the
``/metrics`` route refreshes them once per model version before rendering, and the collector
reads that cached value, so a scrape of an idle model costs nothing and counters never
touch the hot path (they are plain integers of the learner service, read at scrape time).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import Problem

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class ModelCollector(Collector):
    """Counters and model gauges, read from the learner service at scrape time."""

    def __init__(self, learner: Callable[[], Any]) -> None:
        self._learner = learner

    def collect(self) -> Iterator[Metric]:
        svc = self._learner()
        if svc is None:
            return
        for name, doc, value in (
                ("ctr_events_learned", "Events learned by this process", svc.events_learned),
                ("ctr_events_rejected", "Events not learned: invalid, or in a rejected batch",
                 svc.events_rejected),
                ("ctr_predictions", "Predictions served", svc.predictions_served),
                ("ctr_snapshots", "Snapshots written", svc.snapshots_written)):
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
        model = svc._model
        if model is None:
            return
        yield GaugeMetricFamily("ctr_model_version", "Model version (events learned)",
                                value=model.rows)
        logloss, auc = model.metrics.logloss, model.metrics.auc
        yield GaugeMetricFamily("ctr_progressive_logloss",
                                "Progressive logloss of every event learned", value=logloss)
        yield GaugeMetricFamily("ctr_progressive_auc", "Progressive AUC", value=auc)
        yield GaugeMetricFamily("ctr_model_table_bytes", "Bytes of the state table",
                                value=model.optimizer.table.nbytes)
        stats = svc._stats
        if stats is not None:
            yield GaugeMetricFamily("ctr_model_nnz", "Non-zero weights", value=stats.nnz)
            yield GaugeMetricFamily("ctr_model_coordinates", "Stored coordinates",
                                    value=stats.coordinates)
            yield GaugeMetricFamily("ctr_model_l1_norm", "L1 norm of the weights",
                                    value=stats.l1_norm)


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


class AppMetrics:
    def __init__(self, learner: Callable[[], Any]) -> None:
        self.predict_latency = LatencyWindow()
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram("ctr_http_request_duration_seconds",
                                 "Request latency by route, method and status",
                                 ("route", "method", "status"), registry=self.registry,
                                 buckets=LATENCY_BUCKETS)
        self.registry.register(ModelCollector(learner))
        self._children: dict[tuple[str, str, int], Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.latency.labels(route, method, str(status))
        child.observe(seconds)
        if route == "/v1/predict" and status == 200:
            self.predict_latency.add(seconds)


class RequestMiddleware:
    """Pure ASGI (no per-request task or body copy): tags every response with
    ``X-Request-ID`` (the client's if it sent a sane one), times it under its route
    template, and answers an unexpected exception with a bare 500 problem while the
    traceback goes to the log with the request id."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = _request_id(scope)
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
        except ClientDisconnect:  # the client went away mid-body: nobody to answer
            status = 499
            log.info("client disconnected: %s %s (request id %s)", scope.get("method"),
                     scope.get("path"), rid)
        except Exception:
            log.exception("request %s %s failed (request id %s)", scope.get("method"),
                          scope.get("path"), rid)
            status = 500
            if not started:
                problem = Problem(500, None, "an unexpected error occurred; the request id "
                                  "identifies it in the service log", request_id=rid)
                await problem.response()(scope, receive, send_tagged)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(path, scope.get("method", ""), status,
                                 time.perf_counter() - start)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex

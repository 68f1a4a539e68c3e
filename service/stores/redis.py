"""``redis://host:port[,redis://...]`` or ``redis+cluster://host:port[,...]``: the model's
state shared by workers through Redis shards or a cluster's slot groups
(``ftrl_core.stores.RedisState`` does the work: worker-local cache, additive deltas, one
script call per shard per flush).

When this store flushes (``flush_wanted``): after a learned batch once ``sync_every_events``
rows are pending (0: after every batch) or ``sync_every_ms`` passed since the last flush;
the service's background task pushes deltas that would otherwise sit idle; ``sync`` pushes
everything (before snapshots, at shutdown). The learner sends a flush from a worker thread
while it goes on learning (``RedisState.prepare``/``roundtrip``/``apply``); the batches
learned meanwhile go in the next flush, so under load flushes grow and grow fewer.

A shard that is down: a failed flush stays in flight in ``RedisState`` (its batches were
learned and are kept) and marks the store degraded. While degraded, training requests are
refused (503 with Retry-After, nothing learned) and the flush is retried at most once a
second; resent unchanged, with its id, so a shard that applied it before another shard
failed does not apply it twice. Predictions keep serving from the cache. The deltas held
meanwhile are bounded by what was learned before the failure was seen: one flush in flight
plus the batches learned while it was on the wire.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from ftrl_core.batch import Batch
from ftrl_core.fields import FieldRegistry
from ftrl_core.model import Model
from ftrl_core.stores import StateStoreError as CoreStoreError
from ftrl_core.stores import open_state
from ftrl_core.stores.bulk import _read_shard, snapshot
from ftrl_core.stores.deltas import store_records
from ftrl_core.stores.redis_state import Flush

from .base import StateStoreError, StoreUnavailable

log = logging.getLogger(__name__)

#: RedisState flushes in its before_learn when this many rows are pending: never (this
#: store decides when to flush, in after_learn)
_NEVER = 1 << 62
#: seconds between two attempts of a degraded store to flush from a training request
RETRY_EVERY = 1.0


class RedisStore:
    def __init__(self, url: str, model_name: str = "default", *, sync_every_events: int = 0,
                 sync_every_ms: float = 0.0, buckets: int | None = None,
                 retries: int = 5) -> None:
        self.url = url
        self.model_name = model_name
        self.sync_every_events = max(int(sync_every_events), 0)
        self.sync_every_ms = max(float(sync_every_ms), 0.0)
        try:
            state = open_state(url, model_name, sync_every_events=_NEVER, buckets=buckets,
                               retries=retries)
        except CoreStoreError as exc:
            raise StateStoreError(str(exc)) from None
        assert state is not None
        self.state = state
        self.last_flush = time.monotonic()
        self.error: str | None = None  # the last flush failure, None while healthy
        self.failed_at = 0.0
        self.flush_failures = 0

    @property
    def flush_interval(self) -> float:
        """Seconds between background flushes (0: none)."""
        return self.sync_every_ms / 1000.0

    def open(self, build: Callable[[], Model], model_in: Path | None) -> Model:
        """The model of this name in Redis (created from ``build()`` or seeded from
        ``model_in`` when the name is free; refused when its config disagrees), with every
        stored coordinate loaded into the worker's cache, so predictions see the shared
        state from the start (over ``model_in``'s values when the name was not free)."""
        try:
            seeding = model_in is not None and self.state.stored_config() is None
            model = self.state.open(build, model_in)
            if not seeding:  # Redis is newer than any file: its state wins
                self._load_cache(model)
            # the cache holds every stored coordinate: no read before each batch
            self.state.fetch_missing = False
        except CoreStoreError as exc:
            raise StateStoreError(str(exc)) from None
        except RedisError as exc:
            raise StateStoreError(f"--state {self.url}: {exc}") from None
        return model

    def _load_cache(self, model: Model) -> None:
        """Read every shard's coordinates into the (fresh) cache. No pause: the cache need
        not be one point in time; a later flush of a coordinate refreshes it."""
        layout = self.state.layout
        loaded = 0
        for shard in self.state.shards:
            for keys, recs in _read_shard(self.state, shard.index, layout):
                store_records(model.optimizer.table, keys, recs)
                loaded += int(keys.size)
        if loaded:
            log.info("loaded %d coordinates of model %r from %s", loaded,
                     self.state.name, self.url)

    def share_fields(self, registry: FieldRegistry, known: int) -> list[str] | None:
        try:
            return self.state.share_fields(registry, known)
        except CoreStoreError as exc:
            raise StoreUnavailable(str(exc)) from None
        except RedisError as exc:
            raise StoreUnavailable(f"{self.url}: {exc}") from None

    def before_learn(self, model: Model, batch: Batch) -> None:
        if self.error is not None:  # the learner retried the flush just before, if due
            raise StoreUnavailable(self.error)
        try:
            self.state.before_learn(model, batch)
        except CoreStoreError as exc:  # fetching the batch's keys: nothing learned yet
            self._failed(exc)
            raise StoreUnavailable(str(exc)) from None

    def after_learn(self, model: Model, batch: Batch) -> None:
        self.state.after_learn(model, batch)

    def _due(self) -> bool:
        pending = self.state.rows_pending
        if pending <= 0:
            return False
        if self.sync_every_events and pending >= self.sync_every_events:
            return True
        if self.sync_every_ms:
            return (time.monotonic() - self.last_flush) * 1000.0 >= self.sync_every_ms
        return not self.sync_every_events  # the default: after every batch

    def flush_wanted(self) -> bool:
        if self.error is not None:  # degraded: a probe (the kept flush, or a read of the
            # counters) at most once a second; its success makes the store healthy again
            return time.monotonic() - self.failed_at >= RETRY_EVERY
        return self.state.in_flight is not None or self._due()

    def begin_flush(self, model: Model) -> Flush | None:
        return self.state.prepare()

    def roundtrip(self, flush: Flush) -> dict[int, Any]:
        try:
            return self.state.roundtrip(flush)
        except CoreStoreError as exc:  # the flush stays in flight, resent later
            self._failed(exc)
            raise StoreUnavailable(str(exc)) from None

    def finish_flush(self, model: Model, flush: Flush, replies: dict[int, Any]) -> None:
        self.state.apply(flush, replies)
        self.last_flush = time.monotonic()
        if self.error is not None:
            log.info("state store %s reachable again; pending deltas flushed", self.url)
        self.error = None

    def _failed(self, exc: Exception) -> None:
        self.failed_at = time.monotonic()
        self.flush_failures += 1
        if self.error is None:
            log.warning("state store %s: %s", self.url, exc)
        self.error = str(exc)

    def sync(self, model: Model) -> None:
        try:
            self.state.sync(model)
        except CoreStoreError as exc:
            self._failed(exc)
            raise StoreUnavailable(str(exc)) from None
        self.last_flush = time.monotonic()
        self.error = None

    def shared_copy(self, model: Model) -> Model | None:
        """Every shard's state read while flushes are paused (``bulk.snapshot``: consistent
        at flush granularity per shard), with this worker's progressive metrics and the
        feature names it recorded (the names of features only other workers met are not
        known here)."""
        try:
            shared = snapshot(self.state)
        except CoreStoreError as exc:
            raise StoreUnavailable(str(exc)) from None
        except RedisError as exc:
            raise StoreUnavailable(f"{self.url}: {exc}") from None
        shared.names = copy.deepcopy(model.names)
        shared.metrics = copy.deepcopy(model.metrics)
        return shared

    def status(self) -> dict[str, object]:
        """What ``/readyz`` and ``/v1/model`` say about the store."""
        return {"url": self.url, "model_name": self.model_name,
                "healthy": self.error is None, "error": self.error,
                "rows_pending": self.state.rows_unflushed, "flushes": self.state.flushes,
                "flush_failures": self.flush_failures}

    def close(self) -> None:
        if self.state.model is not None:
            try:
                self.state.sync(self.state.model)
            except CoreStoreError as exc:
                log.error("final flush to %s failed, deltas of %d rows lost: %s", self.url,
                          self.state.rows_unflushed, exc)
        self.state.close()

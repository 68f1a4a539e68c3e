"""The learner service: the one object the routes call.

It owns the model (through a state store), the learn lock, the model version, counters for
the metrics, and snapshots. Concurrency, on one event loop:

- Learning holds ``lock`` and runs parse + learn inline, with no ``await`` between them, so
  a batch is learned whole or not at all and batches are learned in arrival order.
- Predictions run inline without the lock: nothing mutates the model outside the event loop
  thread, and the loop runs one handler at a time between awaits.
- Slow reads (top features, snapshot copies) hold ``lock`` and run in a worker thread:
  learning waits, predictions do not (both sides only read). Sparsity figures copy the
  tables under the lock and scan the copies outside it (``modelstats``).
- Shadow variants (``variants``) learn each accepted batch right after the primary, in
  the same locked section: a batch is learned by all of them or by none. (Learning them in
  worker threads beside the primary, the kernels being nogil, was measured slower on the
  2 shared cores this was built on: 58-66k events/s against 68-80k with 3 variants.)

``model_version`` is the number of events the model has learned (its step counter): it
grows with every learned batch, is unchanged by a rejected one, and is saved in snapshots,
so a restarted service resumes at the same version.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ftrl_core.batch import Batch
from ftrl_core.fields import FieldRegistry, TooManyFieldsError
from ftrl_core.model import Model
from ftrl_core.readers.jsonl import EventError, JsonlFormat, parse_event_array, parse_events

from .errors import Problem, not_ready
from .events import body_problem
from .modelstats import ModelStats, StatsCache
from .settings import Settings
from .startup import SNAPSHOT_NAME
from .stores import StateStore, StoreUnavailable
from .variants import PRIMARY, Variant, open_variants, parse_variants
from .warmup import warm_up

log = logging.getLogger(__name__)
T = TypeVar("T")

#: unknown fields predictions may register in their copy of the registry before a re-copy
PREDICT_SPARE_FIELDS = 256


@dataclass
class LinesLearned:
    """What ``learn_lines`` did with a piece of an NDJSON stream."""

    p: np.ndarray  # of the learned events, before learning each
    labels: np.ndarray
    errors: list[EventError]  # index: 0-based line in the piece
    model_version: int


class LearnerService:
    def __init__(self, settings: Settings, store: StateStore,
                 build: Callable[[], Model]) -> None:
        """``build`` makes the fresh model used when the store has none to start from."""
        self.settings = settings
        self.store = store
        self._build = build
        self.lock = asyncio.Lock()
        self._snapshot_lock = asyncio.Lock()
        #: one flush at a time; taken before ``lock``, never while holding it
        self._flush_lock = asyncio.Lock()
        self._model: Model | None = None
        self._train_fmt: JsonlFormat | None = None
        self._predict_fmt: JsonlFormat | None = None
        self._predict_synced = -1  # fields of the training registry the predict copy has
        self.ready = False
        self.snapshot_version = -1
        self._stats: ModelStats | None = None  # the primary's, read by /metrics
        self._stats_cache = StatsCache()
        self.variants: list[Variant] = []
        # counters read by the metrics collector
        self.events_learned = 0
        self.events_rejected = 0
        self.predictions_served = 0
        self.snapshots_written = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Load or build the model (a failure here stops the server from starting)."""
        model = await asyncio.to_thread(self.store.open, self._build, self.settings.model_in)
        model_in = self.settings.model_in
        self.variants = await asyncio.to_thread(
            open_variants, parse_variants(self.settings.variants), model,
            None if model_in is None else Path(model_in).parent)
        self._install(model)
        self.snapshot_version = model.rows
        log.info("model loaded: %s, %d rows learned, state %s, %d variant(s)",
                 model.optimizer.name, model.rows, self.store.url, len(self.variants))

    async def warm_up(self) -> None:
        """Compile every kernel the routes use, on a throwaway model; then ready."""
        start = time.perf_counter()
        assert self._model is not None
        for _, m in self.models():
            await asyncio.to_thread(warm_up, Model.from_config(m.config()),
                                    self.settings.strict)
        self.ready = True
        log.info("kernels ready in %.1f s", time.perf_counter() - start)

    async def close(self) -> None:
        """Final snapshot (if a directory is set and the model changed), then close."""
        try:
            if self._model is not None and self.settings.snapshot_dir is not None:
                await self.snapshot(only_if_changed=True)
        finally:
            self.store.close()

    def _install(self, model: Model) -> None:
        self._model = model
        for v in self.variants:
            v.model.registry = model.registry
        self._install_formats(model)
        self._registry_checkpoint = copy.deepcopy(model.registry)

    def require_ready(self) -> None:
        if self._model is None or not self.ready:
            raise not_ready("the model is loading and the kernels are compiling")

    @property
    def model(self) -> Model:
        self.require_ready()
        assert self._model is not None
        return self._model

    @property
    def version(self) -> int:
        return 0 if self._model is None else self._model.rows

    def models(self) -> list[tuple[str, Model]]:
        """(name, model) of the primary, then of each variant."""
        assert self._model is not None
        return [(PRIMARY, self._model), *((v.name, v.model) for v in self.variants)]

    # -- learning -----------------------------------------------------------------------------

    async def train(self, body: bytes | bytearray) -> tuple[np.ndarray, int]:
        """Learn a ``{"events": [...]}`` body whole, or raise a problem having learned
        nothing; returns (p before learning each event, model version)."""
        model = self.model
        await self._retry_degraded(model)
        async with self.lock:
            out = self._train_locked(model, body)
        await self.flush(model)
        return out

    def _train_locked(self, model: Model, body: bytes | bytearray) -> tuple[np.ndarray, int]:
        assert self._train_fmt is not None
        fields_before = len(model.registry)
        result = parse_event_array(body, self._train_fmt, require_label=True)
        errors = result.errors
        if errors:
            if len(model.registry) != fields_before:
                self._restore_registry(model)
            self.events_rejected += result.batch.rows + len(result.errors)
            raise body_problem(body, sorted(errors, key=_by_index), "nothing was learned")
        if self._share_fields(model, result.batch.rows):
            assert self._train_fmt is not None
            result = parse_event_array(body, self._train_fmt, require_label=True)
        return self._learn(model, result.batch), model.rows

    def _share_fields(self, model: Model, rows: int) -> bool:
        """Agree on the ids of the fields a parsed batch registered with the store's shared
        registry (a shared store: other workers number fields too). True when the registry
        was renumbered: the batch must be parsed again (it is not learned yet)."""
        known = len(self._registry_checkpoint)
        if len(model.registry) == known:
            return False
        try:
            shared = self.store.share_fields(model.registry, known)
        except (StoreUnavailable, TooManyFieldsError) as exc:
            self._restore_registry(model)
            self.events_rejected += rows
            if isinstance(exc, TooManyFieldsError):
                raise Problem(422, "too-many-fields", f"{exc}; nothing was learned") from None
            raise store_unavailable(str(exc)) from None
        if shared is None:
            return False
        log.info("fields renumbered as the shared registry has them: %s", ", ".join(shared))
        self._restore_registry(model)
        for name in shared:
            model.registry.add(name)
        self._registry_checkpoint = copy.deepcopy(model.registry)
        self._install_formats(model)
        return True

    def _learn(self, model: Model, batch: Batch) -> np.ndarray:
        if batch.rows == 0:
            return np.empty(0)
        try:
            self.store.before_learn(model, batch)
        except StoreUnavailable as exc:
            if len(model.registry) != len(self._registry_checkpoint):
                self._restore_registry(model)
            self.events_rejected += batch.rows
            raise store_unavailable(str(exc)) from None
        p = model.learn(batch)
        for v in self.variants:  # before the store's push, which may fail
            v.model.learn(batch)
        self.store.after_learn(model, batch)
        self.events_learned += batch.rows
        if len(model.registry) != len(self._registry_checkpoint):
            self._registry_checkpoint = copy.deepcopy(model.registry)
        return p

    def _restore_registry(self, model: Model) -> None:
        """Undo the fields a rejected batch's good events registered."""
        model.registry = copy.deepcopy(self._registry_checkpoint)
        for v in self.variants:
            v.model.registry = model.registry
        self._install_formats(model)

    def _install_formats(self, model: Model) -> None:
        options = replace(model.options, strict=self.settings.strict)
        self._train_fmt = JsonlFormat(model.registry, options)
        self._predict_fmt = None
        self._predict_synced = -1

    async def learn_lines(self, piece: bytes) -> LinesLearned:
        """Learn the good NDJSON lines of ``piece`` in order; bad lines are skipped (those
        the scanner refuses register no field)."""
        model = self.model
        await self._retry_degraded(model)
        async with self.lock:
            assert self._train_fmt is not None
            result = parse_events(piece, self._train_fmt, require_label=True)
            if self._share_fields(model, result.batch.rows):
                assert self._train_fmt is not None
                result = parse_events(piece, self._train_fmt, require_label=True)
            batch = result.batch
            self.events_rejected += len(result.errors)
            out = LinesLearned(self._learn(model, batch), batch.labels, result.errors,
                               model.rows)
        await self.flush(model)
        return out

    # -- flushes to a shared store --------------------------------------------------------------

    async def flush(self, model: Model) -> None:
        """Push the store's pending deltas if it wants to now. Prepared under the learn
        lock, sent from a worker thread without it (learning and predictions go on), applied
        under the lock again. One flush at a time: a request that finds one on the wire
        waits for it, and its own deltas, if still pending, go in the next (so flushes grow
        with the load instead of queueing). A failed flush is kept by the store, which is
        then degraded, and resent on a later call."""
        if not self.store.flush_wanted():
            return
        async with self._flush_lock:
            async with self.lock:
                if not self.store.flush_wanted():  # the flush waited for took them
                    return
                job = self.store.begin_flush(model)
            if job is None:
                return
            try:  # the thread is waited for even if this task is cancelled: one at a time
                replies = await _locked_thread(lambda _: self.store.roundtrip(job), model)
            except StoreUnavailable:
                return
            async with self.lock:
                self.store.finish_flush(model, job, replies)

    async def _retry_degraded(self, model: Model) -> None:
        """Before learning: a degraded store's kept flush is retried (when due), so the
        request is refused only if the store is still unreachable."""
        if self.store.status().get("healthy") is False:
            await self.flush(model)

    # -- prediction ---------------------------------------------------------------------------

    def predict(self, body: bytes | bytearray) -> tuple[np.ndarray, np.ndarray, int]:
        """(p, uncertainty, model version) of a ``{"events": [...]}`` body; labels are
        ignored and unknown fields are registered only in a private copy of the registry
        (their ids are above every trained field's, so their keys are absent: weight 0)."""
        model = self.model
        fmt = self._predict_format(model)
        result = parse_event_array(body, fmt, require_label=False)
        errors = result.errors
        if errors:
            raise body_problem(body, sorted(errors, key=_by_index), "nothing was predicted")
        p, u = model.predict(result.batch)
        self.predictions_served += result.batch.rows
        return p, u, model.rows

    def _predict_format(self, model: Model) -> JsonlFormat:
        fields = len(model.registry)
        fmt = self._predict_fmt
        if fmt is None or self._predict_synced != fields \
                or len(fmt.registry) > fields + PREDICT_SPARE_FIELDS:
            registry: FieldRegistry = copy.deepcopy(model.registry)
            fmt = JsonlFormat(registry, replace(model.options, strict=self.settings.strict))
            self._predict_fmt = fmt
            self._predict_synced = fields
        return fmt

    # -- reads --------------------------------------------------------------------------------

    async def read(self, fn: Callable[[Model], T]) -> T:
        """Run a slow read of the model in a worker thread; learning waits meanwhile."""
        model = self.model
        async with self.lock:
            return await _locked_thread(fn, model)

    async def stats(self) -> ModelStats:
        """The primary's sparsity and metrics (cached per model version)."""
        return (await self.all_stats())[0]

    async def all_stats(self) -> list[ModelStats]:
        """The figures of the primary, then of each variant, at the current version."""
        model = self.model
        stats = await self._stats_cache.get(model.rows, self.read, self.models)
        self._stats = stats[0]
        return stats

    # -- snapshots ----------------------------------------------------------------------------

    @property
    def snapshot_path(self) -> Path | None:
        d = self.settings.snapshot_dir
        return None if d is None else Path(d) / SNAPSHOT_NAME

    async def consistent_copy(self) -> Model:
        """A copy of the model between two batches (memory speed, under the lock); with a
        shared store, of the whole shared model (see ``StateStore.shared_copy``)."""
        model = self.model
        async with self._flush_lock, self.lock:
            self._sync(model)
            return await _locked_thread(self._copy, model)

    def _copy(self, model: Model) -> Model:
        try:
            shared = self.store.shared_copy(model)
        except StoreUnavailable as exc:
            raise store_unavailable(str(exc)) from None
        return copy.deepcopy(model) if shared is None else shared

    async def _consistent_copies(self) -> tuple[Model, list[Variant]]:
        """Copies of the model and of every variant, taken between the same two batches."""
        model = self.model
        async with self._flush_lock, self.lock:
            self._sync(model)

            def copies(m: Model) -> tuple[Model, list[Variant]]:
                return self._copy(m), [Variant(v.spec, copy.deepcopy(v.model))
                                       for v in self.variants]

            return await _locked_thread(copies, model)

    async def save_copy(self, folder: Path) -> tuple[int, Path]:
        """Write a consistent copy of the model into ``folder``: (version, path)."""
        frozen = await self.consistent_copy()
        path = folder / f"model-{frozen.rows}.ctr"
        await asyncio.to_thread(frozen.save, path)
        return frozen.rows, path

    async def snapshot(self, only_if_changed: bool = False) -> dict[str, Any] | None:
        """Write the model to the snapshot directory atomically; None if unchanged and
        ``only_if_changed``."""
        path = self.snapshot_path
        if path is None:
            raise Problem(409, "no-snapshot-dir",
                          "no snapshot directory is configured (--snapshot-dir / "
                          "CTR_SNAPSHOT_DIR)")
        async with self._snapshot_lock:
            if only_if_changed and self._model is not None \
                    and self._model.rows == self.snapshot_version:
                return None
            if self._model is None:
                return None
            frozen, variants = await self._consistent_copies()
            # variants first: a primary file never stands beside older variant files
            for v in variants:
                await asyncio.to_thread(v.model.save, path.parent / v.spec.filename)
            await asyncio.to_thread(frozen.save, path)
            self.snapshot_version = frozen.rows
            self.snapshots_written += 1
            log.info("snapshot written: %s (%d rows)", path, frozen.rows)
            return {"path": str(path), "model_version": frozen.rows, "rows": frozen.rows}

    def _sync(self, model: Model) -> None:
        try:
            self.store.sync(model)
        except StoreUnavailable as exc:
            raise store_unavailable(str(exc)) from None

    async def flush_loop(self, every: float) -> None:
        """Push deltas idle for ``every`` seconds (a shared store's background flush)."""
        while True:
            await asyncio.sleep(every)
            if self._model is None:
                continue
            try:
                await self.flush(self._model)
            except Exception:  # the store keeps its deltas; the next tick tries again
                log.exception("background flush failed")

    async def snapshot_loop(self, every: float) -> None:
        """Snapshot every ``every`` seconds when the model changed; errors are logged."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.snapshot(only_if_changed=True)
            except Exception:  # the next tick tries again; the service keeps serving
                log.exception("periodic snapshot failed")


async def _locked_thread(fn: Callable[[Model], T], model: Model) -> T:
    """``fn(model)`` in a worker thread, for a caller holding the lock. If the caller is
    cancelled it still waits for the thread to end: releasing the lock while the thread
    reads would let learning write under it."""
    future = asyncio.get_running_loop().run_in_executor(None, fn, model)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        raise


def store_unavailable(detail: str) -> Problem:
    return Problem(503, "store-unavailable",
                   f"the state store cannot be reached; nothing was learned ({detail})",
                   headers={"Retry-After": "1"})


def _by_index(err: EventError) -> int:
    return err.index

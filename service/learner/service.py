"""The learner service: the one object the routes and the stream consumer call.

It owns the model, the learn lock, the shadow variants and the idempotency keys; its state
store (``service.stores``) owns where the state lives and how it is made durable. On one
event loop:

- learning holds ``lock`` and runs parse, log and learn inline, with no ``await`` between
  them (``training``), so a batch is learned whole or not at all and batches are learned
  in arrival order; the answer waits, without the lock, until the store says the batch is
  durable (``StateStore.durable``: the log synced, or the flush carrying it applied);
- predictions run inline without the lock (``prediction``): nothing mutates the model
  outside the event loop thread, and the loop runs one handler at a time between awaits;
- slow reads (top features, snapshot copies) hold ``lock`` and run in a worker thread:
  learning waits, predictions do not (``snapshots``);
- the attribution join (``joining``, ``service.join``; memory store and one worker, or a
  Redis store and any number of workers: ``join.marks``) runs its requests in the same
  locked sections, logged first, and closes impressions as event time advances (and on a
  background tick for impressions timed by arrival; with a Redis store, only on the tick,
  with the watermark the workers share);
- shadow variants learn each accepted batch right after the primary, in the same locked
  section. (Learning them in worker threads, the kernels being nogil, was measured slower
  on the 2 shared cores this was built on: 58-66k events/s against 68-80k with 3 variants.)

``model_version`` is the number of events the model has learned (its step counter): it
grows with every learned batch, is unchanged by a refused one, and is kept in checkpoints,
so a restarted service resumes at the same version.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ftrl_core.model import Model

from ..errors import Problem, not_ready
from ..join import JoinState
from ..join.marks import REMOTE_TICK_SECONDS, ClickMarks
from ..join.pending import COUNTERS
from ..modelstats import ModelStats, StatsCache
from ..settings import Settings
from ..startup import check_resumed
from ..stores import Claim, StateStore
from ..stores.wal import Kind
from ..variants import PRIMARY, Variant
from ..warmup import warm_up, warm_up_join
from . import recovery, snapshots
from .fields import FieldNumbering
from .idempotency import IdempotencyKeys, in_progress, mismatch
from .joining import FEEDBACK_COUNTS, JOIN_PART, Joining, fingerprint
from .prediction import Predictor
from .records import TrainRecord
from .snapshots import locked_thread
from .training import Counters, Learned, Training

log = logging.getLogger(__name__)
T = TypeVar("T")

#: seconds between two background ticks of the join's arrival clock
JOIN_TICK_SECONDS = 1.0


def _feedback_answer(counts: np.ndarray, version: int) -> dict[str, int]:
    # not strict: an answer kept by an older version has no "forwarded"
    out = {name: int(n) for (name, _), n in zip(FEEDBACK_COUNTS, counts.tolist(),
                                                strict=False)}
    out["model_version"] = version
    return out


def join_unsupported() -> Problem:
    return Problem(501, "join-unsupported", "the attribution join (/v1/impressions, "
                   "/v1/feedback, /v1/join) runs with the memory state store and one "
                   "worker, or with a Redis state store and any number of workers: not "
                   "with --state memory:// and --workers above 1")


class LearnerService:
    def __init__(self, settings: Settings, store: StateStore,
                 build: Callable[[], Model]) -> None:
        """``build`` makes the fresh model used when the store has none to start from."""
        self.settings = settings
        self.store = store
        self._build = build
        self.lock = asyncio.Lock()
        self._snapshot_lock = asyncio.Lock()
        self._model: Model | None = None
        self._training: Training | None = None
        self.fields: FieldNumbering | None = None
        self.ready = False
        self.snapshot_version = -1
        self.variants: list[Variant] = []
        self.keys = IdempotencyKeys(settings.dedupe_window)
        self.counters = Counters()
        self.predictor = Predictor(settings.strict)
        self.snapshots_written = 0
        self._stats: ModelStats | None = None  # the primary's, read by /metrics
        self._stats_cache = StatsCache()
        self._tasks: list[asyncio.Task[None]] = []
        #: the attribution join (memory store and one worker, or a Redis store; None: not
        #: offered)
        self.join: JoinState | None = None
        if settings.join_enabled:
            self.join = JoinState(settings.join_window, settings.join_policy,
                                  settings.max_pending, settings.negative_rate,
                                  shared=store.shared)
        self._joining: Joining | None = None
        self._join_snapshot_mark = 0  # ``JoinState.changes`` the checkpoint holds
        #: the log ticket of the last join request applied (durable once the store says so)
        self.join_ticket = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Load or build the model and learn the log after its checkpoint again (a failure
        here stops the server from starting); then start the store's background work."""
        opened = await asyncio.to_thread(self.store.open, self._build, self.settings.model_in)
        model = opened.model
        if opened.checkpoint is not None:
            check_resumed(self.settings, model)
        self.variants = recovery.variants(self.settings, opened)
        recovery.restore_keys(self.keys, opened)
        if self.join is not None and opened.checkpoint is not None \
                and JOIN_PART in opened.checkpoint.parts:
            self.join.load(opened.checkpoint.parts[JOIN_PART])
        resume = getattr(self.store, "join_resume", None)  # a Redis worker's own snapshot
        if self.join is not None and resume is not None:
            self.join.load(resume[1])
        self._install(model)
        self.snapshot_version = model.rows  # what the checkpoint holds
        self._join_snapshot_mark = self.join.changes if self.join is not None else 0
        if opened.records:
            start = time.perf_counter()
            assert self._training is not None
            n = await asyncio.to_thread(recovery.replay, self._training, self.keys,
                                        self.store, opened.records, self._joining,
                                        getattr(self.store, "flushed_upto", 0))
            log.info("learned the write-ahead log again: %d records, %d events, in %.1f s",
                     len(opened.records), n, time.perf_counter() - start)
        self._tasks = self.store.start(self.lock, model)
        if self.join is not None and self.store.shared:
            if resume is not None or self.join.changes:
                self._keep_join_log()
            self._tasks.append(asyncio.create_task(self._marks_ticks(REMOTE_TICK_SECONDS)))
        elif self.join is not None:
            self._tasks.append(asyncio.create_task(self._join_ticks(JOIN_TICK_SECONDS)))
        log.info("model loaded: %s, %d rows learned, state %s, %d variant(s)",
                 model.optimizer.name, model.rows, self.store.url, len(self.variants))

    def _install(self, model: Model) -> None:
        self._model = model
        for v in self.variants:
            v.model.registry = model.registry
        self.fields = FieldNumbering(model, self.variants, self.settings.strict)
        self._training = Training(model, self.fields, self.variants, self.store,
                                  self.counters)
        if self.join is not None:
            state = getattr(self.store, "state", None)  # a Redis store's shards
            marks = ClickMarks(state) if self.store.shared and state is not None else None
            self._joining = Joining(self._training, self.join, marks)

    async def warm_up(self) -> None:
        """Compile every kernel the routes use, on a throwaway model; then ready."""
        start = time.perf_counter()
        models = self.models()
        for _, m in models:
            await asyncio.to_thread(warm_up, Model.from_config(m.config()),
                                    self.settings.strict)
        if self.join is not None:  # the primary learns what the join closes
            await asyncio.to_thread(warm_up_join, Model.from_config(models[0][1].config()))
        self.ready = True
        log.info("kernels ready in %.1f s", time.perf_counter() - start)

    async def close(self) -> None:
        """Stop the background work, make everything durable, checkpoint, close."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            if self._model is not None:
                await self.store.sync()
                if self.store.data_dir is not None and not self.store.shared:
                    await self.snapshot(only_if_changed=True)
        except Exception:
            log.exception("final flush or checkpoint failed; the log keeps what it holds")
        finally:
            await self.store.close()

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

    async def train(self, body: bytes | bytearray, key: str = ""
                    ) -> tuple[np.ndarray, int, bool]:
        """Learn a ``{"events": [...]}`` body whole, or raise having learned nothing;
        returns (p before learning each event, model version, replayed). A ``key``
        (``Idempotency-Key``) already learned returns its first answer (replayed)."""
        self.require_ready()
        fingerprint = zlib.crc32(body) if key else 0
        at = time.time()
        # a shared store's claim, made before the lock (its round trip waits for neither
        # the loop nor other requests' learning); checked and completed under the lock
        ahead = await self.store.claim_ahead(key, fingerprint) if key else 0
        async with self.lock:
            found = self.keys.lookup(key, fingerprint, self.store.is_durable)
            if found is not None:
                return found.p64(), found.model_version, True
            claim = self.store.claim(key, fingerprint, ahead) if key else None
            if claim is not None and claim.status != "claimed":
                return self._claimed_elsewhere(key, claim)
            assert self._training is not None
            record = TrainRecord(body, key, at).encode()
            try:
                done = self._training.batch(body, record)
            except Problem:  # refused, nothing learned: the key is free for its retry
                if claim is not None:
                    self.store.release(key, fingerprint, claim)
                raise
            if key:  # its retries wait for the same ticket (409) and then get this answer
                self.keys.record(key, fingerprint, at, done.p.size, done.version, done.p,
                                 done.ticket)
                self.store.record_answer(key, fingerprint, done.p.size, done.version,
                                         done.p)
        # if this raises, the batch stays pending in the store and its key keeps waiting
        # for it, so a retry is never learned twice
        await self.store.durable(done.ticket)
        return done.p, done.version, False

    def _claimed_elsewhere(self, key: str, claim: Claim) -> tuple[np.ndarray, int, bool]:
        """A shared store's claim of ``key`` that another worker holds: the answer it gave
        (409 while it is being learned, 422 for another body)."""
        if claim.status == "pending":
            raise in_progress(key)
        if claim.status == "mismatch":
            raise mismatch(key)
        assert claim.p is not None
        self.keys.replayed += 1
        p = np.array([float(str(x)) for x in claim.p], dtype=np.float64)
        return p, claim.model_version, True

    async def learn_lines(self, piece: bytes, durable: bool = True) -> Learned:
        """Learn the good NDJSON lines of ``piece`` in order; bad lines are skipped and
        returned (``errors``, indexed by line in the piece). ``durable=False``: return once
        learned (a caller that makes them durable itself, with ``sync``)."""
        self.require_ready()
        async with self.lock:
            assert self._training is not None
            record = TrainRecord(piece, "", time.time()).encode()
            done = self._training.lines(piece, record)
        if durable:
            await self.store.durable(done.ticket)
        return done

    async def sync(self) -> None:
        """Make everything learned so far durable and shared now (the stream consumer's
        call before it acknowledges)."""
        await self.store.sync()

    # -- the join ---------------------------------------------------------------------------

    def _keep_join_log(self) -> None:
        """A Redis worker's log keeps the join's records until its own snapshot of the
        pending impressions (``stores.redis.join_log``, every ``--snapshot-every``) covers
        them. From the first join request on (or a start that found join state): a worker
        that never joins drops its log as its flushes are confirmed, as before."""
        store: Any = self.store
        if self.join is None or getattr(store, "join_capture", False) is not None:
            return  # not a Redis store, or kept already
        store.join_capture = self.join.state
        if store.join_snapshots is not None:
            store.join_snapshots.every = self.settings.snapshot_every

    def _require_join(self) -> Joining:
        self.require_ready()
        if self._joining is None:
            raise join_unsupported()
        if self._joining.marks is not None:
            self._keep_join_log()
        return self._joining

    async def impressions(self, body: bytes | bytearray, ids_required: bool = True,
                          key: str = "", durable: bool = True
                          ) -> tuple[np.ndarray, np.ndarray, int, bool]:
        """Score and remember impressions (``service.join``): (p, uncertainty, model
        version, replayed), answered once the request is in the log. ``ids_required=False``:
        a ``/v1/predict`` body with ``"log": true``, whose events without an id are only
        scored. A ``key`` (Idempotency-Key) already answered gets its first answer.
        ``durable=False``: answered once applied (the stream consumer waits for
        ``join_ticket`` itself)."""
        joining = self._require_join()
        kind = Kind.IMPRESSIONS if ids_required else Kind.PREDICT_LOG
        fp = fingerprint(kind, body) if key else 0
        at = time.time()
        async with self.lock:
            found = self.keys.lookup(key, fp, self.store.is_durable)
            if found is not None:  # p then uncertainty, as float32
                both, n = found.p64(), found.accepted
                return both[:n], both[n:], found.model_version, True
            p, u, version, ticket = joining.impressions(
                body, TrainRecord(body, key, at).encode(), at, ids_required=ids_required)
            if key:
                self.keys.record(key, fp, at, p.size, version, np.concatenate([p, u]),
                                 ticket)
            self.join_ticket = max(self.join_ticket, ticket)
        if durable:
            await self.store.durable(ticket)
        return p, u, version, False

    async def feedback(self, body: bytes | bytearray, key: str = "", durable: bool = True
                       ) -> tuple[dict[str, int], bool]:
        """Join clicks and explicit negatives: (what they did, replayed); ``durable`` as
        for ``impressions``."""
        joining = self._require_join()
        fp = fingerprint(Kind.FEEDBACK, body) if key else 0
        at = time.time()
        async with self.lock:
            found = self.keys.lookup(key, fp, self.store.is_durable)
            if found is not None:
                return _feedback_answer(found.p, found.model_version), True
            counts, version, ticket = joining.feedback(
                body, TrainRecord(body, key, at).encode(), at)
            if key:
                self.keys.record(key, fp, at, 0, version, counts, ticket)
            self.join_ticket = max(self.join_ticket, ticket)
        if durable:
            await self.store.durable(ticket)
        return _feedback_answer(counts, version), False

    async def join_status(self) -> dict[str, object]:
        """This worker's join; with a Redis store also ``cluster``: every worker's
        counters as last reported (each reports on its ticks), summed."""
        joining = self._require_join()
        out = joining.state.status()
        if joining.marks is not None:
            marks = joining.marks
            out["worker"] = marks.state.worker
            out["cluster"] = await asyncio.to_thread(marks.cluster, COUNTERS)
        return out

    async def _join_ticks(self, every: float) -> None:
        """Close the impressions timed by arrival as the wall clock passes their window
        (event-time impressions close as events arrive). A tick that closes something is
        logged first, so learning the log again closes them at the same point."""
        while True:
            await asyncio.sleep(every)
            joining = self._joining
            if joining is None or not self.ready:
                continue
            try:
                async with self.lock:
                    now = time.time()
                    if not joining.state.due(now):
                        continue
                    joining.tick(now, TrainRecord(b"", "", now).encode())
            except Exception:  # the next tick tries again; the service keeps serving
                log.exception("join tick failed")

    async def _marks_ticks(self, every: float) -> None:
        """The shared join's tick (``join.marks``): read the agreed watermark and the clicks
        other workers published, close what the watermark passed; report this worker's
        counters for ``/v1/join``'s ``cluster``."""
        reported = 0.0
        failing = False
        while True:
            await asyncio.sleep(every)
            joining = self._joining
            if joining is None or not self.ready:
                continue
            state, marks = joining.state, joining.marks
            if not (state.changes or state.npending or state.cursor):
                continue  # the join is not used here: no traffic to shard 0 for it
            try:
                assert marks is not None
                # read without the lock, in a thread: a slow shard 0 delays the join, not
                # the requests (predictions run on this loop)
                cursor = state.cursor
                read = await asyncio.to_thread(marks.read, state.seen, cursor)
                async with self.lock:
                    joining.marks_tick(time.time(), read, cursor)
                if time.monotonic() - reported >= 1.0:
                    reported = time.monotonic()
                    await asyncio.to_thread(marks.report, state.status())
                if failing:
                    log.info("join tick: shard 0 answers again")
                failing = False
            except Exception:  # the next tick tries again; the service keeps serving
                if not failing:  # once per outage, not four times a second
                    log.exception("join tick failed; retried every %g s", every)
                failing = True

    # -- prediction ---------------------------------------------------------------------------

    def predict(self, body: bytes | bytearray, events_only: bool = False
                ) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(p, uncertainty, model version) of a ``{"events": [...]}`` body; labels are
        ignored and unknown fields weigh 0 (``prediction``). ``events_only``: None, nothing
        predicted, for a body that may hold a top-level key besides ``events``."""
        model = self.model
        assert self.fields is not None
        scored = self.predictor.predict(model, self.fields, body, events_only)
        if scored is None:
            return None
        return *scored, model.rows

    @property
    def predictions_served(self) -> int:
        return self.predictor.served

    @property
    def events_learned(self) -> int:
        return self.counters.learned

    @property
    def events_rejected(self) -> int:
        return self.counters.rejected

    @property
    def overflow_features(self) -> int:
        return self.counters.overflow_features

    # -- reads --------------------------------------------------------------------------------

    async def shared_rows(self) -> tuple[int, int]:
        """(events the model has learned, this worker's unflushed ones): with a shared
        store, the rows stored in it (every worker's flushed events), read now."""
        status = self.store.status()
        unflushed = int(status.get("rows_pending", 0) or 0)  # type: ignore[call-overload]
        reader = getattr(self.store, "shared_rows", None)
        if reader is None:
            return self.model.rows, 0
        stored = await asyncio.to_thread(reader)
        return (self.model.rows - unflushed if stored is None else int(stored)), unflushed

    async def read(self, fn: Callable[[Model], T]) -> T:
        """Run a slow read of the model in a worker thread; learning waits meanwhile."""
        model = self.model
        async with self.lock:
            return await locked_thread(fn, model)

    async def stats(self) -> ModelStats:
        """The primary's sparsity and metrics (cached per model version)."""
        return (await self.all_stats())[0]

    async def all_stats(self) -> list[ModelStats]:
        """The figures of the primary, then of each variant, as they are now."""
        self.require_ready()
        stats = await self._stats_cache.get(self.read, self.models)
        self._stats = stats[0]
        return stats

    # -- snapshots ----------------------------------------------------------------------------

    async def consistent_copy(self) -> Model:
        """A copy of the whole model between two batches (with a shared store, of every
        worker's flushed state)."""
        model = self.model
        await self.store.sync()
        async with self.lock:
            return await locked_thread(lambda m: snapshots.copy_model(self.store, m), model)

    async def save_copy(self, folder: Path) -> tuple[int, Path]:
        """Write a consistent copy of the model into ``folder``: (version, path)."""
        frozen = await self.consistent_copy()
        path = folder / f"model-{frozen.rows}.ctr"
        await asyncio.to_thread(frozen.save, path)
        return frozen.rows, path

    async def snapshot(self, only_if_changed: bool = False) -> dict[str, Any] | None:
        """Write a checkpoint into the data directory; None if unchanged and
        ``only_if_changed``."""
        if self.store.data_dir is None:
            raise snapshots.no_data_dir()
        model = self.model if not only_if_changed else self._model
        if model is None:
            return None
        async with self._snapshot_lock:
            join_mark = self.join.changes if self.join is not None else 0
            if only_if_changed and model.rows == self.snapshot_version \
                    and join_mark == self._join_snapshot_mark:
                return None
            await self.store.sync()
            async with self.lock:
                cp = await locked_thread(
                    lambda m: snapshots.capture(self.store, m, self.variants, self.keys,
                                                self.join), model)
            path = await asyncio.to_thread(self.store.write_checkpoint, cp)
            self.snapshot_version = cp.model.rows
            self._join_snapshot_mark = join_mark  # pending impressions change the state too
            self.snapshots_written += 1
            log.info("checkpoint written: %s (%d rows)", path, cp.model.rows)
            return {"path": str(path), "model_version": cp.model.rows, "rows": cp.model.rows}

    async def snapshot_loop(self, every: float) -> None:
        """Checkpoint every ``every`` seconds when the model changed; errors are logged."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.snapshot(only_if_changed=True)
            except Exception:  # the next tick tries again; the service keeps serving
                log.exception("periodic checkpoint failed")


__all__ = ["Kind", "LearnerService"]

"""``redis://host:port[,redis://...]`` or ``redis+cluster://host:port[,...]``: the model's
state shared by workers through Redis shards or a cluster's slot groups.

``RedisStore`` is the one class a worker talks to. It owns:

- the cache and the deltas (``state.RedisState``: the worker's table, one script call per
  shard per flush, flush ids that make a resent flush harmless);
- the flush policy (``policy.FlushPolicy``) and the background task that applies it, and
  retries a failed flush on its own timer (once a second), with or without traffic;
- the worker's write-ahead log in the data directory (``slots``): every accepted request
  is logged (and synced, ``--fsync``) before it is learned and answered; every flush is
  logged before it is sent, and marked done once every shard confirmed it. A worker that
  restarts resends the flush its log holds unconfirmed (the shards that applied it know its
  id and skip it) and learns again, against the shared state, the requests logged after
  the last flush; their idempotency keys are claimed again first, so a request another
  worker learned meanwhile is not learned twice;
- the shards' health (``health``): a shard that does not answer a PING within a second makes
  the store degraded: ``/readyz`` 503, training refused with 503 (nothing learned), while
  predictions keep serving from the cache;
- its errors: every driver error becomes a ``StoreError`` in ``transport``.

Without a data directory the log is the flush itself: a request is answered once the flush
carrying it is applied, flushes leave one after the other as soon as anything is pending,
and a worker killed meanwhile loses what it had not flushed (its clients saw no answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ftrl_core.batch import Batch
from ftrl_core.deltas import store_records
from ftrl_core.fields import FieldRegistry
from ftrl_core.model import Model

from ...threads import run_to_end
from ..base import Claim, Opened, load_model_in
from ..checkpoints import Checkpoint
from ..errors import NotYetDurable, StoreError, StoreUnavailable
from ..wal import FsyncPolicy, Kind, Record, WriteAheadLog
from . import deltalog, idempotency, join_log, staging, worker_log
from .bulk import read_shard, seed, snapshot
from .health import ShardHealth
from .policy import FlushPolicy
from .slots import WorkerSlot
from .state import Flush, RedisState
from .sweep import SWEEP_EVERY, SweepReport

log = logging.getLogger(__name__)

#: a worker's admission filter and bounded-memory counters, in its slot (``_save_bounds``)
BOUNDS_FILE = "bounds.npz"
#: seconds between two attempts of a degraded store to send its kept flush
RETRY_EVERY = 1.0
#: seconds after start a worker looks for slots no worker took
ORPHAN_CHECK_AFTER = 60.0
#: seconds an answer waits for its flush without a data directory before a 503 (the retry
#: timer has tried several times by then)
DURABLE_TIMEOUT = 5.0


class RedisStore:
    shared = True

    def __init__(self, url: str, model_name: str = "default", *,
                 policy: FlushPolicy | None = None, data_dir: Path | None = None,
                 fsync: FsyncPolicy = "always", buckets: int | None = None,
                 dedupe_window: float = 600.0, auto_flush: bool = True) -> None:
        self.url = url
        self.model_name = model_name
        self.data_dir = data_dir
        self.policy = policy or FlushPolicy(durable_locally=data_dir is not None)
        self.auto_flush = auto_flush
        self.state = RedisState(url, model_name, buckets=buckets)
        self.state.answer_ttl = max(int(dedupe_window), 1)
        self.dedupe_window = dedupe_window
        self.slot = WorkerSlot(data_dir) if data_dir is not None else None
        self._fsync = fsync
        self.log: WriteAheadLog | None = None
        self.health = ShardHealth(self._shard_urls)
        self.error: str | None = None  # the last flush failure, None once one succeeds
        self.failed_at = 0.0
        self.flush_failures = 0
        self._lock: asyncio.Lock | None = None
        self._flush_lock = asyncio.Lock()
        self._compact_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._applied = asyncio.Condition()
        self._last_ticket = 0  # of the last batch learned
        self._applied_upto = 0  # tickets up to this one are in an applied flush
        self._learned = 0  # batches learned (the tickets without a log)
        self._pending_since: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: the attribution join (``join_log``): its snapshot found at start (position,
        #: arrays), the last flush's position then, what the learner captures, the timing
        self.join_resume: tuple[int, dict[str, Any]] | None = None
        self.flushed_upto = 0
        self.join_capture: Callable[[], dict[str, Any]] | None = None
        self.join_snapshots: join_log.JoinSnapshots | None = None
        self._model: Model | None = None

    # -- opening ------------------------------------------------------------------------------

    def open(self, build: Callable[[], Model], model_in: Path | None) -> Opened:
        """The model of this name (created from ``build()`` or seeded from ``model_in``
        when the name is free; refused when its config disagrees), every stored coordinate
        in the cache; with a data directory, the flush its log kept resent first and the
        requests logged after the last flush returned, to be learned again."""
        records: list[Record] = []
        if self.slot is not None:
            self.slot.acquire()
            self.state.worker = self.slot.worker
        try:
            seeding = model_in is not None and self.state.stored_config() is None
            model = load_model_in(model_in) if model_in is not None else build()
            if seeding:
                seed(self.state, model)
            else:
                self.state.attach(model)
            if self.slot is not None:
                self.log = WriteAheadLog(self.slot.wal, self._fsync)
                assert self.slot.path is not None
                self.join_resume = join_log.read(self.slot.path)
                join_from = self.join_resume[0] if self.join_resume is not None else 0
                self.join_snapshots = join_log.JoinSnapshots(self.slot.path, join_from)
                records, self.flushed_upto = worker_log.recover(self.log, self.state,
                                                                join_from)
            if not seeding:  # Redis is newer than any file: its state wins
                self._load_cache(model)
            self._load_bounds(model)
            # the cache holds every stored coordinate: no read before each batch (with
            # bounds the shared state evicts and the cache is trimmed: it is read, ``sweep``)
            self.state.fetch_missing = model.optimizer.bounds is not None
        except BaseException:
            self.state.close()
            if self.slot is not None:
                self.slot.release()
            raise
        return Opened(model, None, records)

    def _load_cache(self, model: Model) -> None:
        """Read every shard's coordinates into the (fresh) cache. With the delta log, each
        shard as of one entry (``RedisState.load_all``), from which the log keeps the cache
        current. With the bucketed flush no pause: the cache need not be one point in time;
        a later flush of a coordinate refreshes it."""
        loaded = 0
        table = model.optimizer.table
        if self.state.logged:
            self.state.load_all()
            loaded = table.size
        else:
            for shard in self.state.shards:
                for keys, recs in read_shard(self.state, shard.index):
                    store_records(table, keys, recs)
                    loaded += int(keys.size)
        if table.ages.size and model.optimizer.bounds is not None:
            # loaded now: trimmed from the cache an idle window after, unless used
            table.ages[table.live_slots()] = model.optimizer.bounds.clock(
                model.optimizer.steps)
        if loaded:
            log.info("loaded %d coordinates of model %r from %s", loaded,
                     self.state.name, self.url)

    def _bounds_file(self) -> Path | None:
        """Where this worker keeps its admission filter and bounded-memory counters between
        two runs: its slot of the data directory (each worker has its own filter; the
        shared coordinates and their ages are in Redis)."""
        if self.slot is None or self.slot.path is None:
            return None
        return self.slot.path / BOUNDS_FILE

    def _load_bounds(self, model: Model) -> None:
        path = self._bounds_file()
        bounds = model.optimizer.bounds
        if path is None or bounds is None or not path.is_file():
            return
        try:
            with np.load(path) as arrays:
                bounds.load_state({k: arrays[k] for k in arrays.files})
        except (OSError, ValueError, KeyError) as exc:  # another policy, a damaged file
            log.warning("%s: not loaded (%s); the filter starts empty", path, exc)
            return
        log.info("loaded this worker's admission filter and counters from %s", path)

    def _save_bounds(self) -> None:
        """At a graceful stop (the flush done): this worker's filter and counters, written
        whole then renamed. A crash keeps the last stop's (or none): the filter is then
        older than the shared state, which admission tolerates (it only counts)."""
        path = self._bounds_file()
        model = self._model
        if path is None or model is None or model.optimizer.bounds is None:
            return
        tmp = path.with_suffix(".tmp.npz")
        arrays: dict[str, Any] = model.optimizer.bounds.state()
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    def _shard_urls(self) -> list[str]:
        if self.state.cluster is not None:
            return [node.url for node in list(self.state.cluster.nodes.values())]
        return [shard.url for shard in self.state.shards]

    def start(self, lock: asyncio.Lock, model: Model) -> list[asyncio.Task[None]]:
        self._lock = lock
        self._model = model
        self.health.start()
        if self.auto_flush:
            self._tasks = [asyncio.create_task(self._flusher(), name="ctr-store-flush")]
            if self.state.logged:
                self._tasks.append(asyncio.create_task(self._compactor(),
                                                       name="ctr-store-compact"))
        if self.state.sweeper is not None:
            self._tasks.append(asyncio.create_task(self._sweeper(), name="ctr-store-sweep"))
        if self.slot is not None:
            self._tasks.append(asyncio.create_task(self._report_orphans(),
                                                   name="ctr-orphan-slots"))
        return self._tasks

    async def _report_orphans(self) -> None:
        """Once the other workers had time to take their slots: a slot still free that
        holds a log was left by a worker that did not come back (fewer workers than
        before); its unflushed requests wait for a worker to take it."""
        assert self.slot is not None
        await asyncio.sleep(ORPHAN_CHECK_AFTER)
        for path in await asyncio.to_thread(self.slot.orphans):
            log.warning("worker slot %s is not taken by any worker: requests its log holds "
                        "unflushed are learned when a worker takes it (restart with as many "
                        "workers as before)", path)

    # -- learning -----------------------------------------------------------------------------

    def share_fields(self, registry: FieldRegistry, known: int) -> list[str] | None:
        return self.state.share_fields(registry, known)

    def claim(self, key: str, fingerprint: int, ahead: int = 0) -> Claim:
        """Claim an idempotency key for the request about to be learned (under the lock).
        ``ahead``: the flush a ``claim_ahead`` of the key named; while the flush that will
        carry the request is not later than that one, the key is already this worker's."""
        self._refuse_if_degraded()
        if ahead and self.state.seq + 1 <= ahead:
            return Claim("claimed", seq=ahead)
        return idempotency.claim(self.state, key, fingerprint, int(self.dedupe_window))

    async def claim_ahead(self, key: str, fingerprint: int) -> int:
        """Claim ``key`` from a worker thread before the learn lock is taken (a round trip
        to shard 0, which may be busy with a flush script for a while: under the lock it
        would hold up the event loop and every other request's learning). It names the
        flush after the next (``idempotency.CLAIM_AHEAD``): one flush prepared meanwhile
        leaves it valid; the flush number, or 0 (not claimed, or degraded: ``claim``
        decides)."""
        if not self.health.healthy or self.error is not None:
            return 0
        seq = self.state.seq + idempotency.CLAIM_AHEAD
        ttl = int(self.dedupe_window)
        try:
            claimed = await run_to_end(
                lambda: idempotency.claim_ahead(self.state, key, fingerprint, ttl, seq))
        except Exception:  # any failure: claimed again under the lock
            return 0
        return seq if claimed else 0

    def release(self, key: str, fingerprint: int, claim: Claim) -> None:
        if claim.status != "claimed" or not claim.seq:
            return
        try:
            idempotency.release(self.state, key, fingerprint, claim.seq)
        except Exception as exc:  # the claim stays until its flush, as without a release
            log.info("Idempotency-Key %r: its claim was not released (%s)", key, exc)

    def record_answer(self, key: str, fingerprint: int, accepted: int, version: int,
                      p: Any) -> None:
        """The answer of a claimed key, recorded on shard 0 by the flush carrying it."""
        self.state.answers.append(
            idempotency.pack_answer(key, fingerprint, accepted, version, p))

    def _refuse_if_degraded(self) -> None:
        if not self.health.healthy:
            url, why = next(iter(self.health.down.items()))
            raise StoreUnavailable(f"shard {url}: {why}")
        if self.error is not None:
            raise StoreUnavailable(self.error)

    def before_learn(self, model: Model, batch: Batch) -> None:
        self._refuse_if_degraded()
        self.state.before_learn(model, batch)

    def check_writable(self) -> None:
        """Raise ``StoreUnavailable`` when a request would be refused (the join checks
        before logging, as it learns after)."""
        self._refuse_if_degraded()

    def track_learn(self, model: Model, batch: Batch) -> None:
        """``before_learn`` without the refusal: the join's rows, of a request logged."""
        self.state.before_learn(model, batch)

    def append(self, kind: int, payload: bytes) -> int:
        return 0 if self.log is None else self.log.append(kind, payload)

    def after_learn(self, model: Model, batch: Batch, seq: int) -> int:
        self.state.after_learn(model, batch)
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        if self.log is not None:
            ticket = seq
        else:
            self._learned += 1
            ticket = self._learned
        self._last_ticket = max(self._last_ticket, ticket)
        self._wake.set()
        return ticket

    def is_durable(self, ticket: int) -> bool:
        if self.log is not None:
            return self.log.fsync != "always" or ticket <= self.log.synced_seq
        return ticket <= self._applied_upto

    async def durable(self, ticket: int) -> None:
        if self.log is not None:
            if ticket:
                await self.log.durable(ticket)
            return
        deadline = time.monotonic() + DURABLE_TIMEOUT
        async with self._applied:
            while self._applied_upto < ticket:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NotYetDurable(
                        f"the batch was learned but the flush carrying it is not applied "
                        f"after {DURABLE_TIMEOUT:g} s ({self.error or 'the shards are slow'})"
                        "; it stays pending and is retried: resend it with the same "
                        "Idempotency-Key for its answer once it lands (without a key the "
                        "resend is learned again; a --data-dir avoids this)")
                # asyncio.timeout, not wait_for (the flusher's reason: a swallowed cancel)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._applied.wait()

    # -- flushing -----------------------------------------------------------------------------

    def _pending(self) -> bool:
        st = self.state
        return bool(st.rows_pending or st.tracker.pending or st.answers)

    def _due(self) -> bool:
        if self.state.in_flight is not None:  # kept after a failure: resent on the timer
            return time.monotonic() - self.failed_at >= RETRY_EVERY
        if not self._pending():
            return False
        age = 0.0 if self._pending_since is None else time.monotonic() - self._pending_since
        return self.policy.due(self.state.rows_pending, self.state.tracker.pending,
                               age * 1000.0)

    def _next_check(self) -> float | None:
        """Seconds until the policy's age bound or the retry timer (None: wait to be
        woken by a learned batch)."""
        if self.state.in_flight is not None:
            return max(RETRY_EVERY - (time.monotonic() - self.failed_at), 0.01)
        # the delta log: an idle worker's reads come on a timer too
        idle = deltalog.COMPACT_EVERY if self.state.logged else None
        bound = self.policy.age_bound_ms / 1000.0
        if not self._pending() or self._pending_since is None or not bound:
            return idle
        due = max(bound - (time.monotonic() - self._pending_since), 0.001)
        return due if idle is None else min(due, idle)

    async def _flusher(self) -> None:
        while True:
            timeout = self._next_check()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # comes as the event is set (CPython gh-86296), and the stopping app's gather
            # then waited for this loop forever (tests/test_service_redis.py hung 1 run in 6)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            if self._due():
                with contextlib.suppress(StoreUnavailable):
                    await self.flush_once()
            elif self.state.catch_up_due and self.state.in_flight is None \
                    and not self._pending():  # (a read would drop unflushed counters)
                with contextlib.suppress(StoreUnavailable):
                    await self.catch_up()

    async def _compactor(self) -> None:
        """The delta log's compactions on a timer of their own, beside the flusher: run
        in its loop, a compaction held the next flush back for as long as it took (60 ms of
        a worker thread's CPU, 300-600 ms of wall time beside a busy event loop), and every
        2 s a window grew to 25,000-48,000 rows, the staleness the adaptive window's
        bound in rows is there to cap. The two share the shards' raw connections under
        ``state.wire`` only, a command at a time."""
        while True:
            since = time.monotonic() - self.state.compacted_at
            await asyncio.sleep(max(deltalog.COMPACT_EVERY - since, 0.05))
            await self._compact()

    async def _compact(self) -> None:
        """Fold the delta log into the buckets when due (``RedisState.compact``): the
        compactor's timer, and after a sync (the stream consumer flushes that way); not
        while a shard is down (the kept flush is what the flusher retries then)."""
        if not self.state.compaction_due or not self.health.healthy or self.error is not None:
            return
        async with self._compact_lock:
            try:
                await run_to_end(self.state.compact)
            except StoreError as exc:
                log.warning("state store %s: the delta log's compaction failed (%s); tried "
                            "again later", self.url, exc)

    async def catch_up(self) -> None:
        """An idle worker's read of the delta log (``deltalog``): the others' entries
        merged, its cursor kept live."""
        assert self._lock is not None
        async with self._flush_lock:
            async with self._lock:
                job = self.state.prepare(write=False)
            if job is None:
                return
            replies = await run_to_end(lambda: self.state.roundtrip(job))
            async with self._lock:
                self.state.apply(job, replies)

    async def _sweeper(self) -> None:
        """Evict in the shared state every ``sweep.SWEEP_EVERY`` seconds: the calls from a
        worker thread without the learner's lock (each blocks its shard a few ms at most),
        the cache's side under it. A failed sweep is tried again at the next tick."""
        assert self._lock is not None
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            try:
                await self.sweep_once()
            except StoreError as exc:
                log.warning("state store %s: sweep failed (%s); tried again in %g s",
                            self.url, exc, SWEEP_EVERY)

    async def sweep_once(self, start_pass: bool = False) -> SweepReport | None:
        """One sweep now (the timer's; tests call it with ``start_pass`` to run a whole
        idle pass without waiting for half an idle window)."""
        assert self._lock is not None
        now = self.state.sweep_now()
        report = await run_to_end(lambda: self.state.sweep(now, start_pass))
        if report is not None:
            async with self._lock:
                self.state.after_sweep(report, now)
        return report

    async def flush_once(self) -> bool:
        """Send the pending deltas (or the flush kept after a failure) and apply the
        replies: prepared under the learn lock, sent from a worker thread without it
        (learning and predictions go on), applied under the lock again. One at a time.
        False: nothing to send. Raises ``StoreUnavailable`` (the flush is kept)."""
        assert self._lock is not None
        async with self._flush_lock:
            async with self._lock:
                new = self.state.in_flight is None
                job = self.state.prepare()
                if job is None:
                    return False
                captured = None
                if new:  # it carries everything learned so far
                    job.upto = self._last_ticket
                    self._pending_since = None
                    captured = self._capture_join()
                logged = self._log_flush(job)
            if logged:
                assert self.log is not None
                await self.log.durable(logged)  # on disk before any shard applies it
            try:
                if not self.auto_flush:  # the stream consumer's: staged on shard 0 first
                    await run_to_end(lambda: staging.stage(self.state, job))
                replies = await run_to_end(lambda: self.state.roundtrip(job))
                if not self.auto_flush:
                    await run_to_end(lambda: staging.unstage(self.state, job.flush_id))
            except StoreUnavailable as exc:
                self._failed(exc)
                raise
            async with self._lock:
                self.state.apply(job, replies)
                if self.log is not None:
                    self.log.append(Kind.FLUSH_DONE, job.flush_id.encode())
                    snaps = self.join_snapshots
                    self.log.drop_through(job.upto if snaps is None or self.join_capture
                                          is None else snaps.droppable(job.upto))
            self._succeeded()
            if captured is not None:  # its flush is applied: the snapshot may be used
                await self._write_join(*captured)
            async with self._applied:
                self._applied_upto = max(self._applied_upto, job.upto)
                self._applied.notify_all()
            return True

    def _capture_join(self) -> tuple[int, dict[str, Any]] | None:
        """The join's pending impressions now, with the log's position, when a snapshot is
        due (under the lock, as a new flush is prepared: ``join_log``)."""
        snaps = self.join_snapshots
        if self.join_capture is None or snaps is None or self.log is None \
                or not snaps.due():
            return None
        snaps.taken()
        return self.log.last_seq, self.join_capture()

    async def _write_join(self, seq: int, arrays: dict[str, Any]) -> None:
        snaps = self.join_snapshots
        assert snaps is not None
        try:
            await asyncio.to_thread(join_log.write, snaps.slot, seq, arrays)
        except OSError:  # the log keeps what the snapshot would have covered
            log.exception("join snapshot not written")
            return
        snaps.written(seq)

    def _log_flush(self, job: Flush) -> int:
        """Log a flush before it is first sent (a restart resends it from the log); its
        sequence, 0 if it needs no logging."""
        if self.log is None or job.logged:
            return 0
        seq = self.log.append(Kind.FLUSH, worker_log.encode_flush(job))
        job.logged = True
        return seq

    def _failed(self, exc: Exception) -> None:
        self.failed_at = time.monotonic()
        self.flush_failures += 1
        if self.error is None:
            log.warning("state store %s: %s; the flush is kept and retried", self.url, exc)
        self.error = str(exc)

    def _succeeded(self) -> None:
        if self.error is not None:
            log.info("state store %s reachable again; the kept flush is applied", self.url)
        self.error = None

    async def sync(self) -> None:
        """Flush until nothing is pending (the kept flush first)."""
        if self._lock is None:
            return
        while self.state.in_flight is not None or self._pending():
            await self.flush_once()
        await self._compact()

    # -- checkpoints and copies ---------------------------------------------------------------

    def checkpoint_position(self) -> int:
        return 0  # the shared state is in Redis; a checkpoint here is a backup copy of it

    def write_checkpoint(self, checkpoint: Checkpoint) -> Path | None:
        if self.data_dir is None:
            return None
        from .. import checkpoints

        return checkpoints.write(self.data_dir / "backup", checkpoint)

    def shared_copy(self, model: Model) -> Model | None:
        """Every shard's state read while flushes are paused (``bulk.snapshot``: consistent
        at flush granularity per shard), with this worker's progressive metrics and the
        feature names it recorded (the names of features only other workers met are not
        known here)."""
        shared = snapshot(self.state)
        shared.names = copy.deepcopy(model.names)
        shared.metrics = copy.deepcopy(model.metrics)
        bounds, copied = model.optimizer.bounds, shared.optimizer.bounds
        if bounds is not None and copied is not None:
            # this worker's filter and counters (each worker keeps its own: ``sweep``);
            # the ages came with the snapshot
            copied.load_state(bounds.state())
        return shared

    def shared_rows(self) -> int | None:
        """The step counter stored on shard 0: the events learned by every worker and
        flushed (None if shard 0 does not answer)."""
        try:
            return self.state.stored_rows()
        except StoreError:
            return None

    def status(self) -> dict[str, object]:
        """What ``/readyz``, ``/v1/model`` and ``/metrics`` say about the store."""
        healthy = self.health.healthy and self.error is None
        error = self.error or next(iter(self.health.down.values()), None)
        out: dict[str, object] = {
            "url": self.url, "model_name": self.model_name, "healthy": healthy,
            "error": error, "shards_down": sorted(self.health.down),
            "rows_pending": self.state.rows_unflushed, "flushes": self.state.flushes,
            "flush_failures": self.flush_failures, "flush_policy": self.policy.describe(),
            "worker": self.state.worker}
        sweep = self.state.last_sweep
        if sweep is not None:
            out.update(sweep_calls=sweep.calls, sweep_longest_ms=round(sweep.longest * 1e3, 3),
                       shared_live=sweep.live)
        if self.log is not None:
            out.update(data_dir=str(self.data_dir), fsync=self.log.fsync,
                       log_seq=self.log.last_seq, synced_seq=self.log.synced_seq)
        return out

    async def close(self) -> None:
        if self.error is None and self.state.in_flight is None:
            try:
                self._save_bounds()
            except OSError as exc:
                log.warning("this worker's admission filter was not saved: %s", exc)
        self.health.close()
        if self.log is not None:
            self.log.close()
        self.state.close()
        if self.slot is not None:
            self.slot.release()

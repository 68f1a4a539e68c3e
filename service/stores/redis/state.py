"""The Redis state store: a worker-local cache plus additive deltas pushed to N shards.

What lives where:

- the worker's optimizer table is a cache of the coordinates it has used; the hot path
  (predict, learn) never leaves the process;
- Redis holds, per model name (keys ``ctr:<name>:...``): ``config`` (the model's identity,
  on every shard with the shard's index), the coordinates (``b:<bucket>`` hashes, or
  ``c:<chunk>`` strings in hashed mode), the global step counters (``t``, on shard 0; for
  FOBOS/TG the regularisation clock too), per worker the sequence number of its last
  applied flush (``w:<worker>``, on every shard it wrote, with a TTL of ``flush_ttl``);
- with --evict-idle / --max-coordinates (``sweep``), per shard (per slot group in a
  cluster): each coordinate's age (``a:<bucket>`` hashes beside the buckets, stamped by the
  flush script), the live count (``n``) and the idle sweep's cursor (``sweep``);
- per coordinate the additive state: FTRL (z, n), RDA G, FOBOS/TG (w, n, c). For the lazy
  learners w and the clock stamp c are pushed as deltas too: one worker is exact; with
  several, c becomes the sum of the workers' stamp moves, an approximation of "the clock
  when last brought current" (the global clock itself is the sum of all workers' advances).

With ``redis+cluster://`` the shards are G slot groups of the cluster (``cluster``): the same
layout over G virtual shards, each group's keys under its hash-tagged prefix
``ctr:{<name>:<g>}:`` (one slot per group), ``config`` in every group, the counters and the
field list in group 0; a flush sends one call per group to the master serving the group's
slot, following MOVED / ASK.

The flush protocol: before a batch is learned, ``before_learn`` captures the base records
of its coordinates (and, for a cache that did not load every stored coordinate, reads the
keys it lacks). When the store's policy says so (``RedisStore``; this class has none), one
script call per shard applies the pending deltas: with the delta log (``deltalog``; exact
keys, the default) it appends them to the shard's log and its reply brings the other
workers' entries, merged into the cache (``_merge_entries``); with the bucketed flush
(models that evict) the shard merges them and the replies (merged values) refresh the
cache. Each call carries a flush id ``<worker>:<sequence>``, sequences growing by one per
writing flush: a shard applies a worker's flush only if its sequence is above the last one
it applied for that worker (``w:<worker>``), so a call resent after a lost reply, or after
the worker's restart (its data directory keeps the flush), is answered with the current
values instead of being applied twice.

A flush is three steps, so that the service can learn while one is on the wire:
``prepare`` (under the learner's lock: collects the deltas, the base table starts afresh),
``roundtrip`` (sockets only, in a worker thread), ``apply`` (under the lock: the merged
values or entries, plus whatever was learned on a key since ``prepare``).
One flush is in flight at a time; a failed one stays in flight and is resent unchanged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from ftrl_core.batch import Batch
from ftrl_core.deltas import DeltaTracker, fold_rows, store_records
from ftrl_core.eviction import drop_keys
from ftrl_core.fieldcounts import EVICTED
from ftrl_core.fields import FieldRegistry
from ftrl_core.hashing import field_of_keys
from ftrl_core.model import Model
from ftrl_core.table import StateTable

from ..errors import IdentityError, StoreConfigError, StoreError
from ..urls import check_model_name, parse_state_url
from . import deltalog, fieldsync, transport
from .buckets import BucketLayout
from .chunks import ChunkLayout
from .cluster import CLUSTER_GROUPS, ClusterMap, SlotGroup
from .deltalog import DeltaLogLayout
from .shard import Shard
from .sweep import SharedSweep, SweepReport, trim_cache

log = logging.getLogger(__name__)

DEFAULT_BUCKETS = 1 << 14
#: seconds a shard remembers a worker's last applied flush: longer than any restart of a
#: worker whose data directory holds a flush to resend (one small key per worker)
FLUSH_TTL = 30 * 86400
#: config entries that must agree between workers (fields may grow, names may differ)
IDENTITY_KEYS = ("optimizer", "params", "field_l1", "field_l2", "extra", "features", "format",
                 "admit", "evict_idle", "max_coordinates")


def _script(layout_file: str) -> str:
    lua = resources.files(__package__).joinpath("lua")
    return lua.joinpath("common.lua").read_text() + "\n" + lua.joinpath(layout_file).read_text()


@dataclass
class Flush:
    """A prepared exchange: one script call per shard (payload, written keys and read keys
    in reply order), the rows whose deltas it carries, the counters it sent."""

    flush_id: str  # '' for a read-only exchange
    calls: dict[int, tuple[bytes, np.ndarray, np.ndarray]]
    rows: int
    counters: np.ndarray | None
    #: the store's ticket of the last batch whose deltas it carries (``RedisStore``)
    upto: int = 0
    #: written to the worker's log (a flush is logged before it is first sent)
    logged: bool = False

    @property
    def seq(self) -> int:
        return int(self.flush_id.rpartition(":")[2]) if self.flush_id else 0


class RedisState:
    """Keeps a ``Model``'s optimizer table in step with the state held by Redis shards."""

    def __init__(self, url: str, model_name: str = "default", *,
                 buckets: int | None = None, flush_ttl: int = FLUSH_TTL, retries: int = 5,
                 pause_timeout: float = 60.0, socket_timeout: float = 30.0,
                 groups: int | None = None, worker: str | None = None,
                 layout: str | None = None) -> None:
        parsed = parse_state_url(url)
        if parsed.scheme not in ("redis", "redis+cluster"):
            raise StoreConfigError(f"--state {url}: not a redis:// or redis+cluster:// URL")
        self.url = url
        self.name = check_model_name(model_name)
        #: the cluster's slot map (None: standalone shards); ``groups``: a new model's slot
        #: groups (a stored model keeps its own count)
        self.cluster = ClusterMap(parsed.shards, socket_timeout) \
            if parsed.scheme == "redis+cluster" else None
        self.groups = groups or CLUSTER_GROUPS
        self.shards: list[Shard] | list[SlotGroup] = \
            [Shard(u, i, socket_timeout, f"ctr:{self.name}:") for i, u in
             enumerate(parsed.shards)] if self.cluster is None else self._slot_groups(self.groups)
        #: shard / group 0's prefix: its keys hold the config read first, the counters, the
        #: field list and the flush ids ``flush_applied`` checks
        self.prefix = self.shards[0].prefix
        self.buckets = buckets
        #: the layout of a new model with exact keys ('log' or 'buckets'; None: by the
        #: model, ``_make_layout``); a stored model keeps its own
        self.new_layout = layout
        self.flush_ttl = flush_ttl
        self.retries = retries
        self.pause_timeout = pause_timeout
        #: this worker's id in flush ids: kept by its data directory across restarts (so
        #: a flush the log holds is recognised when resent), random otherwise
        self.worker = worker or os.urandom(6).hex()
        self.seq = 0  # of the last writing flush prepared
        self.rows_pending = 0
        self.flushes = 0
        #: the flush prepared and not yet applied here (sent, or failed): resent unchanged
        #: with the same id until its replies are applied, so a shard that applied it
        #: before a failure (another shard failed, or the reply was lost) does not apply
        #: it twice; at most one at a time
        self.in_flight: Flush | None = None
        self.model: Model | None = None
        self.layout: BucketLayout | ChunkLayout | None = None
        self.counter_base = np.zeros(0, dtype=np.float64)
        self.ncounters = 0
        self.fields_known = 0  # the model's fields known to agree with the shared list
        #: read the shared value of a batch's coordinates absent from the cache before
        #: learning it (a round trip per batch that brings new keys). A cache that loaded
        #: every stored coordinate at start (the service's) can skip it: a coordinate it
        #: lacks is then new or was created by another worker since, and starts from zero
        #: locally until the next flush's reply brings the shared value (its delta is added
        #: to the shared value all the same), the staleness every cached coordinate has.
        self.fetch_missing = True
        #: idempotency answers (``idempotency.pack_answer``) for the next writing flush,
        #: which records them on shard 0 with the deltas of their requests
        self.answers: list[bytes] = []
        self.answer_ttl = 600
        #: cluster replies met by flush calls: MOVED, ASK, and waits (TRYAGAIN, CLUSTERDOWN)
        self.redirects = {"moved": 0, "ask": 0, "wait": 0}
        #: one exchange at a time on the shards' raw connections: the service sends a flush
        #: from a worker thread while the learning thread may read a batch's missing keys
        #: (``fetch_missing``, with bounds); the reader waits for the flush's round trip
        self.wire = threading.Lock()
        #: the model's eviction in the shared state (``sweep``), None if it does not evict
        self.sweeper: SharedSweep | None = None
        #: the last sweep's report (the service's /v1/model and the tests read it)
        self.last_sweep: SweepReport | None = None
        #: the delta log (``deltalog``): per shard, the last entry merged into the cache
        #: (none before the state is loaded); the first flush sequence this process
        #: prepared (its entries are in the cache); when it last compacted, exchanged
        self.cursors: dict[int, bytes] = {}
        self.own_from = 0
        self.compacted_at = time.monotonic()
        self.exchanged_at = time.monotonic()

    # -- identity -------------------------------------------------------------------------

    def _make_layout(self, model: Model, buckets: int, kind: str | None
                     ) -> BucketLayout | ChunkLayout:
        """The stored model's layout (``kind``), or a new model's: chunks with
        --hash-bits, the bucketed hashes alone for a model that admits or evicts (the sweep
        works on them), the delta log otherwise."""
        opt = model.optimizer
        if model.options.hash_bits:
            return ChunkLayout(opt.stride, opt.state_dtype, model.options.hash_bits,
                               len(self.shards))
        if kind == BucketLayout.kind or (kind is None and opt.bounds is not None):
            return BucketLayout(opt.stride, opt.state_dtype, buckets, len(self.shards))
        return DeltaLogLayout(opt.stride, opt.state_dtype, buckets, len(self.shards))

    @property
    def logged(self) -> bool:
        """Whether the model's layout is the delta log."""
        return isinstance(self.layout, DeltaLogLayout)

    def _slot_groups(self, n: int) -> list[SlotGroup]:
        assert self.cluster is not None
        if not 1 <= n <= 1024:
            raise StoreConfigError(f"slot groups must be in [1, 1024], got {n}")
        return [SlotGroup(self.cluster, self.name, g) for g in range(n)]

    def stored_config(self) -> dict[str, Any] | None:
        raw = self.call(0, "get", self.prefix + "config")
        stored = None if raw is None else dict(json.loads(raw))
        if self.cluster is not None:  # a stored model keeps its slot groups, a new one gets
            n = int(stored["shards"]) if stored is not None else self.groups
            if n != len(self.shards):
                self.shards = self._slot_groups(n)
        return stored

    def _record(self, model: Model, layout: BucketLayout | ChunkLayout, shard: int) -> str:
        return json.dumps({"config": model.config(), "store": layout.identity(),
                           "shards": len(self.shards), "shard": shard}, sort_keys=True)

    def attach(self, model: Model) -> Model:
        """Bind ``model`` to the stored model of this name: claim the name if it is free,
        refuse if the stored config disagrees; then read the shared counters."""
        stored = self.stored_config()
        buckets = self.buckets or (stored or {}).get("store", {}).get("buckets") \
            or DEFAULT_BUCKETS
        kind = (stored or {}).get("store", {}).get("layout") if stored else self.new_layout
        layout = self._make_layout(model, int(buckets), kind)
        for shard in self.shards:
            mine = self._record(model, layout, shard.index)
            old = self.call(shard.index, "set", shard.prefix + "config", mine, nx=True,
                             get=True)
            if old is not None:
                self._check(json.loads(old), json.loads(mine), shard)
        self._attach_fields(model)
        self.model, self.layout = model, layout
        self._attach_bounds(model, layout)
        script = _script(layout.script)
        for shard in self.shards:
            transport.retry(self, shard, lambda s: s.load_script(script))
        self.tracker = DeltaTracker(model.optimizer.stride)
        self.ncounters = len(model.optimizer.counter_names)
        self._exchange(write=False, missing=np.empty(0, dtype=np.uint64), counters=True)
        self.warm_up()
        return model

    def warm_up(self) -> None:
        """Compile (or load from Numba's cache) the kernels of a flush, of merging what it
        brings back and of a compaction, on throwaway tables, while the worker starts.
        Loaded on first use, they held a fresh install's first flush or compaction up for
        seconds: compiling holds the GIL (the event loop waited too), and a compaction
        holds its shard's lock meanwhile."""
        assert self.model is not None and self.layout is not None
        opt = self.model.optimizer
        stride, dtype = opt.stride, opt.state_dtype
        keys = np.array([1, 2], dtype=np.uint64)
        table, tracker = StateTable(stride), DeltaTracker(stride)
        tracker.capture(table, Batch.from_arrays(np.array([0, keys.size]), keys,
                                                 np.ones(keys.size)))
        keys, base, cur = tracker.collect(table)
        tracker.refresh(table, keys, cur, dtype)
        fold_rows(table, keys, base, cur, dtype, tracker.base)
        fold_rows(table, keys, base, cur, dtype)
        store_records(table, keys, cur)
        table.lookup(table.keys())
        self.layout.warm_up()

    def _attach_bounds(self, model: Model, layout: BucketLayout | ChunkLayout) -> None:
        """With --admit / --evict-idle / --max-coordinates: the cache is a cache of the
        shared state, which evicts (``sweep`` says how); every batch's keys missing from
        the cache are read first, so that a key another worker admitted counts as admitted
        here too."""
        bounds = model.optimizer.bounds
        if bounds is None:
            return
        if not isinstance(layout, BucketLayout):
            raise StoreConfigError(
                "--admit, --evict-idle and --max-coordinates work with redis:// shards or "
                "redis+cluster:// in exact-key mode only (not --hash-bits)")
        bounds.shared = True
        self.fetch_missing = True
        if bounds.eviction is not None:
            self.sweeper = SharedSweep(self, bounds.eviction.spec, layout.buckets)

    def _attach_fields(self, model: Model) -> None:
        """Number ``model``'s fields as the shared list does (see ``fieldsync``)."""
        shared = fieldsync.share(self, model.registry, 0, adopt=True)
        if shared is not None:
            if model.optimizer.table.size:
                raise IdentityError(
                    f"model {self.name!r}: this process's model numbers its fields "
                    f"({', '.join(model.registry.names[1:6])}...) unlike the stored model "
                    f"({', '.join(shared[1:6])}...); start it without --model-in, or seed "
                    "another --model-name")
            model.registry = fieldsync.renumbered(model.registry, shared)
        self.fields_known = len(model.registry)

    def share_fields(self, registry: FieldRegistry, known: int) -> list[str] | None:
        """Claim the fields ``registry`` registered beyond its first ``known`` (see
        ``fieldsync.share``; other processes' new fields are adopted). None when the ids
        agree, else the shared names from ``known`` on: the caller renumbers by them."""
        shared = fieldsync.share(self, registry, known, adopt=True)
        if shared is None:
            self.fields_known = len(registry)
        return shared

    def _check(self, stored: dict[str, Any], mine: dict[str, Any],
               shard: Shard | SlotGroup) -> None:
        where = f"model {self.name!r} on {shard.url}"
        a = {k: stored["config"].get(k) for k in IDENTITY_KEYS}
        b = {k: mine["config"].get(k) for k in IDENTITY_KEYS}
        if a != b:
            diff = [k for k in IDENTITY_KEYS if a[k] != b[k]]
            raise IdentityError(
                f"{where} was created with another config ({', '.join(diff)} differ: stored "
                f"{json.dumps({k: a[k] for k in diff})}, this process "
                f"{json.dumps({k: b[k] for k in diff})}); use the same learner flags, "
                "another --model-name, or clear the model")
        if stored["store"] != mine["store"]:
            raise IdentityError(f"{where} is stored as {stored['store']}, this process would "
                                f"write {mine['store']}")
        if (stored["shards"], stored["shard"]) != (mine["shards"], mine["shard"]):
            raise IdentityError(
                f"{where} holds shard {stored['shard']} of {stored['shards']}, but the --state "
                f"URL lists it as shard {mine['shard']} of {mine['shards']}: list the shards "
                "in the same order as when the model was created")

    # -- the learner's hooks ----------------------------------------------------------------

    def before_learn(self, model: Model, batch: Batch) -> None:
        """Capture the base records of the batch's coordinates (and, with
        ``fetch_missing``, read the keys the cache lacks first)."""
        if len(model.registry) > self.fields_known:
            # a reader that registers fields as it parses (ctr train): its ids must be the
            # shared ones; others' fields are not adopted, its parsing thread owns the registry
            known = self.fields_known
            if fieldsync.share(self, model.registry, known, adopt=False) is not None:
                raise IdentityError(
                    f"model {self.name!r}: another process registered new fields in another "
                    f"order while this one read {', '.join(model.registry.names[known:])}; "
                    "with a format whose fields appear in the data (jsonl, vw), start "
                    "`ctr train --state` once the fields exist, or feed it through the service")
            self.fields_known = len(model.registry)
        cache = model.optimizer.table
        if self.logged:  # the whole state in the cache, kept current by the log
            if len(self.cursors) < len(self.shards):
                self.load_all()
        elif self.fetch_missing:
            missing = self.tracker.missing(cache, batch)
            if missing.size:
                self._exchange(write=False, missing=missing, counters=False)
        self.tracker.capture(cache, batch)

    def after_learn(self, model: Model, batch: Batch) -> None:
        self.rows_pending += batch.rows

    def sync(self, model: Model | None = None) -> None:
        """Push every pending delta now (before snapshots, at shutdown): the flush in
        flight first, if any, then what was learned since."""
        if self.in_flight is None and not (self.rows_pending or self.tracker.pending
                                           or self.answers):
            return
        self._exchange(write=True, missing=np.empty(0, dtype=np.uint64), counters=True)
        self.compact()

    @property
    def rows_unflushed(self) -> int:
        """Rows learned here whose deltas no shard has confirmed yet."""
        return self.rows_pending + (self.in_flight.rows if self.in_flight else 0)

    @property
    def next_flush_id(self) -> str:
        """The id of the flush that will carry the deltas learned so far (the flush in
        flight when nothing was learned since), for callers that record what a flush
        carries before sending it."""
        if self.in_flight is not None and not (self.rows_pending or self.tracker.pending):
            return self.in_flight.flush_id
        return f"{self.worker}:{self.seq + 1}"

    def resend(self, payloads: dict[int, bytes]) -> None:
        """Send a logged flush's calls again, as they were (a restarted worker's flush its
        log kept unconfirmed: a shard that applied it answers 'repeat')."""
        with self.wire:
            transport.roundtrip(self, payloads)

    def refresh_counters(self) -> None:
        """Read the shared step counters into the model's (a read-only exchange)."""
        self._exchange(write=False, missing=np.empty(0, dtype=np.uint64), counters=True)

    def stored_rows(self) -> int:
        """The shared step counter: events learned by every worker and flushed."""
        raw = self.call(0, "hget", self.prefix + "t", "1")
        return int(np.frombuffer(raw, dtype="<f8")[0]) if raw else 0

    def flush_applied(self, flush_id: str) -> bool:
        """Whether the flush ``flush_id`` reached shard 0 (every flush that writes calls
        shard 0, which holds the step counters)."""
        worker, _, seq = flush_id.rpartition(":")
        return self.applied_seq(worker) >= int(seq)

    def applied_seq(self, worker: str) -> int:
        """The sequence of ``worker``'s last flush applied on shard 0 (0: none)."""
        raw = self.call(0, "get", f"{self.prefix}w:{worker}")
        return int(raw) if raw is not None else 0

    def close(self) -> None:
        if self.logged and self.cursors:
            for shard in self.shards:
                # on failure kept until it ages out (deltalog.CURSOR_KEEP_MS)
                with contextlib.suppress(StoreError):
                    deltalog.forget_cursor(self, shard.index)
            if self.in_flight is None:
                try:  # the log folded and trimmed: no memory beyond the buckets
                    self.compact(force=True)
                except StoreError as exc:
                    log.info("model %r: the delta log was not folded at close (%s)",
                             self.name, exc)
        for shard in self.shards:
            shard.close()
        if self.cluster is not None:
            self.cluster.close()

    # -- the flush call ---------------------------------------------------------------------

    def _exchange(self, write: bool, missing: np.ndarray, counters: bool) -> None:
        """One synchronous exchange: a flush in flight is resent and applied first; then the
        pending deltas (``write``), the reads of ``missing`` keys and the counters."""
        if write and self.in_flight is not None:
            self.apply(self.in_flight, self.roundtrip(self.in_flight))
        flush = self.prepare(write=write, missing=missing, counters=counters)
        if flush is not None:
            self.apply(flush, self.roundtrip(flush))

    def prepare(self, write: bool = True, missing: np.ndarray | None = None,
                counters: bool = True) -> Flush | None:
        """Build the script calls of a flush (under the learner's lock: it reads the cache).
        A writing flush takes the pending deltas with it: the base table starts afresh, so
        the cache may go on learning while the calls are in flight (``apply`` merges). The
        flush in flight, if any, is returned instead, to be resent; None: nothing to send."""
        assert self.model is not None and self.layout is not None
        if write and self.in_flight is not None:
            return self.in_flight
        if missing is None:
            missing = np.empty(0, dtype=np.uint64)
        if write and not (self.rows_pending or self.tracker.pending or self.answers):
            write = False
            if not (missing.size or counters):
                return None
        opt = self.model.optimizer
        if write:
            keys, base, cur = self.tracker.collect(opt.table)
            if opt.bounds is not None:  # keys read but not learned (refused): nothing to send
                sent = base.any(axis=1) | cur.any(axis=1)
                keys, base, cur = keys[sent], base[sent], cur[sent]
            self.seq += 1
            self.own_from = self.own_from or self.seq
            flush_id = f"{self.worker}:{self.seq}"
        else:
            keys = np.empty(0, dtype=np.uint64)
            base = cur = np.empty((0, opt.stride - 1), dtype=np.uint64)
            flush_id = ""
        nc = self.ncounters
        now = opt.counters[:nc].copy()
        cc = now.astype("<f8").tobytes() if counters else b""
        cb = self.counter_base.astype("<f8").tobytes() if write else cc
        answers = self._take_answers() if write else b""
        evicting = opt.bounds is not None and opt.bounds.eviction is not None
        stamp = str(opt.bounds.clock(opt.steps)).encode() if evicting and opt.bounds else b""
        _, wshard = self.layout.route(keys)
        _, rshard = self.layout.route(missing)
        calls: dict[int, tuple[bytes, np.ndarray, np.ndarray]] = {}
        for shard in self.shards:
            i = shard.index
            wsel = np.flatnonzero(wshard == i)
            rsel = np.flatnonzero(rshard == i)
            # the delta log: every shard, for the entries the others appended
            if not (wsel.size or rsel.size or (i == 0 and counters) or self.logged):
                continue
            prefix = shard.prefix.encode()
            declared = [prefix + b"w:" + self.worker.encode(), prefix + b"pause"]
            head = [prefix, flush_id.encode(), str(self.flush_ttl).encode(),
                    cb if i == 0 else b"", cc if i == 0 else b"",
                    answers if i == 0 else b""]
            if isinstance(self.layout, DeltaLogLayout):
                payload = self.layout.encode_flush(
                    shard.sha or "", declared, head, self.worker.encode(),
                    self.cursors.get(i, b""), keys[wsel], base[wsel], cur[wsel])
                calls[i] = (payload, keys[wsel], missing[:0])
                continue
            payload, wo, ro = self.layout.encode(shard.sha or "", declared, head, keys[wsel],
                                                 base[wsel], cur[wsel], missing[rsel], stamp)
            calls[i] = (payload, keys[wsel][wo], missing[rsel][ro])
        flush = Flush(flush_id, calls, self.rows_pending if write else 0,
                      now if counters else None)
        if write:
            self.tracker.clear()
            self.rows_pending = 0
            self.in_flight = flush
        return flush

    def _take_answers(self) -> bytes:
        if not self.answers:
            return b""
        blob = struct.pack("<I", max(int(self.answer_ttl), 1)) + b"".join(self.answers)
        self.answers = []
        return blob

    def roundtrip(self, flush: Flush) -> dict[int, Any]:
        """Send a prepared flush and read its replies (no cache access: a worker thread may
        run it while the cache learns). A failure leaves a writing flush in flight."""
        with self.wire:
            return transport.roundtrip(self, {i: c[0] for i, c in flush.calls.items()})

    def apply(self, flush: Flush, replies: dict[int, Any]) -> None:
        """Store a flush's replies in the cache (under the learner's lock), merged with what
        was learned since it was prepared (``DeltaTracker.refresh``)."""
        assert self.model is not None and self.layout is not None
        opt = self.model.optimizer
        nc = self.ncounters
        merged_counters = None
        self.exchanged_at = time.monotonic()
        for i, (_, wkeys, rkeys) in flush.calls.items():
            if self.logged:
                _status, got_counters, entries, behind = replies[i]
                if behind:
                    self._resync(i)
                else:
                    self._merge_entries(i, entries)
                if got_counters:
                    merged_counters = np.frombuffer(got_counters, dtype="<f8").copy()
                continue
            _status, got_counters, body = replies[i]
            recs = self.layout.decode(body, wkeys.size + rkeys.size)
            both = np.concatenate([wkeys, rkeys])
            cached = opt.table.lookup(both) >= 0 if opt.bounds is not None else None
            self.tracker.refresh(opt.table, both, recs, opt.state_dtype)
            if cached is not None:
                self._drop_absent(both, recs, cached)
            if got_counters:
                merged_counters = np.frombuffer(got_counters, dtype="<f8").copy()
        if merged_counters is not None and flush.counters is not None:
            # counters learned since the flush was prepared stay on top of the merged ones
            # (the same rule as the coordinates: equal to what was sent, nothing changes)
            sent = flush.counters
            if not np.array_equal(merged_counters, sent):
                opt.counters[:nc] = merged_counters + (opt.counters[:nc] - sent)
            self.counter_base = merged_counters
        if flush is self.in_flight:
            self.in_flight = None
            self.flushes += 1

    # -- the delta log (``deltalog``) ---------------------------------------------------------

    def _merge_entries(self, i: int, flat: list[bytes]) -> None:
        """Merge the entries a flush's reply brought from shard ``i`` (after the cursor it
        was sent with: those up to the cursor now, met again when a flush is resent, and
        this process's own are skipped) and move the cursor past them."""
        assert self.model is not None and isinstance(self.layout, DeltaLogLayout)
        cursor = self.cursors.get(i)
        if cursor is None or not flat:
            return
        rows = []
        for k in range(0, len(flat), 3):
            entry, flush_id, blob = flat[k], flat[k + 1], flat[k + 2]
            if not deltalog.id_before(cursor, entry):
                continue
            cursor = entry
            if not deltalog.own_entry(flush_id, self.worker, self.own_from):
                rows.append(blob)
        self.cursors[i] = cursor
        if rows:
            opt = self.model.optimizer
            keys, base, cur = self.layout.parse_rows(rows)
            fold_rows(opt.table, keys, base, cur, opt.state_dtype, self.tracker.base)

    def load_all(self) -> None:
        """Read every shard's state into the cache (``deltalog.read_folded``) and start
        each shard's cursor there."""
        assert self.model is not None
        table = self.model.optimizer.table
        for shard in self.shards:
            keys, recs, last = deltalog.read_folded(self, shard.index)
            store_records(table, keys, recs)
            self.cursors[shard.index] = last
            deltalog.note_cursor(self, shard.index, last)

    def _resync(self, i: int) -> None:
        """Shard ``i`` trimmed entries this worker had not read (it was gone for
        ``deltalog.CURSOR_KEEP_MS``): its state read again, what was learned here since the
        last flush kept on top (``DeltaTracker.refresh``)."""
        assert self.model is not None
        opt = self.model.optimizer
        log.warning("model %r: shard %s trimmed log entries this worker had not read; "
                    "reading its state again", self.name, self.shards[i].url)
        keys, recs, last = deltalog.read_folded(self, i)
        self.tracker.refresh(opt.table, keys, recs, opt.state_dtype)
        self.cursors[i] = last
        deltalog.note_cursor(self, i, last)

    def compact(self, force: bool = False) -> int:
        """Fold the delta log into the buckets on every shard, every
        ``deltalog.COMPACT_EVERY`` seconds (``force``: now, until the log is folded); the
        coordinates written. Sockets only: no cache access."""
        if not ((force and self.logged) or self.compaction_due):
            return 0
        self.compacted_at = time.monotonic()
        written = 0
        for shard in self.shards:
            # forced: until the log is folded, or as many calls as a few seconds of
            # traffic take (other workers may go on appending meanwhile); on the timer:
            # again while a call finds a full batch, so that the log cannot outgrow it
            for _ in range(64 if force else deltalog.COMPACT_ROUNDS):
                folded = deltalog.compact(self, shard.index, trim=force)
                written += folded.coordinates
                if not folded.entries or (not force
                                          and folded.entries < deltalog.COMPACT_ENTRIES):
                    break
        return written

    @property
    def compaction_due(self) -> bool:
        """This worker's turn to try a compaction (``deltalog.COMPACT_EVERY``)."""
        return self.logged and time.monotonic() - self.compacted_at >= deltalog.COMPACT_EVERY

    @property
    def catch_up_due(self) -> bool:
        """An idle worker's read of the log is due (its cursor kept live, its cache
        current)."""
        return self.logged and time.monotonic() - self.exchanged_at >= deltalog.CATCH_UP_EVERY

    def _drop_absent(self, keys: np.ndarray, recs: np.ndarray, cached: np.ndarray) -> None:
        """A zero record in a reply is a key the shared state does not hold (never
        admitted, or evicted: ``sweep``). The refresh put it in the cache; out again, so
        that the gate meets it as a key never seen, unless the cache held it before
        (``cached``) and it was learned on since the flush was prepared: that learning is
        kept. A key the cache lacked is only a key read (a refused one may have a base
        here too: the base is captured before the gate)."""
        assert self.model is not None
        table = self.model.optimizer.table
        zero = ~recs.any(axis=1)
        if not zero.any():
            return
        keys, cached = keys[zero], cached[zero]
        learned = cached & (self.tracker.base.lookup(keys) >= 0) if self.tracker.pending \
            else np.zeros(keys.size, dtype=np.bool_)
        gone = np.ascontiguousarray(keys[~learned])
        if gone.size:
            drop_keys(table.words, table.stride, table.capacity, table.ages, table.meta, gone)

    # -- eviction (``sweep``) -----------------------------------------------------------------

    def sweep_now(self) -> int:
        """The time a sweep starts from: this worker's clock in the unit of --evict-idle
        (events: its view of the shared step counter)."""
        assert self.model is not None and self.model.optimizer.bounds is not None
        opt = self.model.optimizer
        assert opt.bounds is not None
        return opt.bounds.clock(opt.steps)

    def sweep(self, now: int, start_pass: bool = False) -> SweepReport | None:
        """One sweep of the shared state (sockets only; ``after_sweep`` then applies it to
        the cache, under the learner's lock). None if the model does not evict."""
        if self.sweeper is None:
            return None
        return self.sweeper.run(now, start_pass)

    def after_sweep(self, report: SweepReport, now: int) -> int:
        """Count a sweep's evictions (running total and per field), drop their cached
        copies (those with unflushed deltas: their flush's reply drops them) and trim the
        cache by its own ages; how many cached records were dropped."""
        assert self.model is not None
        opt = self.model.optimizer
        bounds, table = opt.bounds, opt.table
        assert bounds is not None and bounds.eviction is not None
        keys = report.evicted
        if keys.size:
            bounds.fields.cover(keys[:0].astype(np.int64), keys)
            np.add.at(bounds.fields.counts[EVICTED], field_of_keys(keys), 1)
            bounds.eviction.state[0] += keys.size
        bounds.shared_live = report.live
        self.last_sweep = report
        live = table.keys()
        pending = self.tracker.base.lookup(live) >= 0 if self.tracker.pending \
            else np.zeros(live.size, dtype=np.bool_)
        if self.in_flight is not None:  # its reply refreshes them: kept until then
            sent = [c[1] for c in self.in_flight.calls.values()]
            if sent:
                pending |= np.isin(live, np.concatenate(sent))
        drop = trim_cache(live, table.ages[table.live_slots()], pending, now,
                          bounds.eviction.spec)
        if keys.size:
            drop = np.concatenate([drop, keys[self.tracker.base.lookup(keys) < 0]])
        if not drop.size:
            return 0
        return int(drop_keys(table.words, table.stride, table.capacity, table.ages,
                             table.meta, np.ascontiguousarray(drop, dtype=np.uint64)))

    def script(self) -> str:
        """The flush script of this store's layout (loaded again by a restarted shard)."""
        assert self.layout is not None
        return _script(self.layout.script)

    def call(self, i: int, method: str, *args: Any, **kw: Any) -> Any:
        """An ordinary command on shard (or slot group) ``i``, retried while transient."""
        return transport.call(self, i, method, *args, **kw)

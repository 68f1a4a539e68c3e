"""The Redis Streams consumer: a consumer group's events learned through the learner service,
each entry acknowledged (XACK) only once the deltas it produced are in the state store.

Per batch of entries (XREADGROUP ``>``; first, entries idle for ``claim_idle_ms`` in any
consumer's pending list, taken with XAUTOCLAIM; at start, this consumer name's own pending
entries):

1. an entry that cannot be an event (``entries``) is a dead letter;
2. dedupe (``seen``): each event's key is looked up and, if free, recorded with the id the
   next flush will carry, in one atomic script call. A record of another flush: that flush
   is in the state (``staging.settled``, which first completes a flush its consumer
   staged and died in) -> a duplicate, acknowledged without learning;
   not applied and the record older than ``claim_idle_ms`` -> its consumer died: taken over
   (atomically) and learned; not applied and younger -> left pending (a live consumer holds
   the event: the entry comes back through XAUTOCLAIM once idle, and is settled then);
3. the free events are learned in stream order (``LearnerService.learn_lines``); the ones the
   parser refuses are dead letters and their records are released;
4. dead letters are XADDed to the dead-letter stream (the entry's fields, ``reason``,
   ``source_id``) and acknowledged in one MULTI; duplicates likewise;
5. when a flush is due (after every batch, or every ``sync_every_events`` rows or
   ``sync_every_ms``, and whenever the stream is idle) the deltas are flushed; then the
   entries of the window are acknowledged, with the group's totals (``<stream>:stats:<group>``:
   learned, logloss_sum, duplicates, dead_letters) in the same MULTI.

Exactly once, and what it rests on. A consumer killed at any point leaves its unacknowledged
entries pending, each event recorded with a flush id that is either in the state on every
shard (a claimer skips it), or staged on shard 0 and maybe partly applied (a claimer
completes it, each shard applying it at most once, and skips it), or never sent (its worker
id died with it: a claimer learns it): a flush is staged on shard 0 before any shard gets
it and unstaged once every shard applied it (``stores.redis.staging``). A failure of the state
store or of the source stops the consumer without flushing (crash-only: a flush after a
refused batch would apply a flush id that events of that batch are recorded under); what
it held is claimed by the others. Not covered:

- a consumer stalled longer than ``claim_idle_ms`` between recording events and flushing
  them (a stopped process, a flush slower than the timeout): its events may be learned by a
  claimer too. A window is flushed at the latest ``claim_idle_ms / 2`` after its first
  event, whatever ``sync_every_events`` / ``sync_every_ms`` say;
- replays found after the window (``dedupe_window`` to twice that, ``seen``): learned again;
  and events without an ``id`` are keyed by their entry, so the same event XADDed twice is
  learned twice (an entry delivered twice is not);
- a process killed between a flush and its XACK counts the window in the model's step
  counter but not in the group's totals (claimers skip those events as duplicates).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import redis

from ftrl_core.metrics import EPS, ProgressiveMetrics

from ..errors import Problem
from ..learner import LearnerService
from ..stores import StoreUnavailable
from ..stores.redis import FlushPolicy, RedisState, staging
from .entries import Entry, ndjson, prepare, reason
from .options import ConsumerOptions
from .plan import plan_batch
from .seen import SeenWindow
from .window import Counts, Window

log = logging.getLogger(__name__)

RawEntry = tuple[bytes, dict[bytes, bytes] | None]


class ConsumerError(Exception):
    """The consumer stopped; nothing it had not flushed was acknowledged."""


class StreamConsumer:
    def __init__(self, source: redis.Redis, service: LearnerService, state: RedisState,
                 options: ConsumerOptions,
                 on_flush: Callable[[StreamConsumer], None] | None = None) -> None:
        self.source = source
        self.service = service
        self.state = state
        self.o = options
        self.on_flush = on_flush
        self.seen = SeenWindow(source, options.seen_prefix, options.dedupe_window)
        # the flush ids records name must outlive the records (found up to two windows)
        state.flush_ttl = max(state.flush_ttl, math.ceil(2 * options.dedupe_window) + 60)
        #: when the window is flushed (and then acknowledged): the store's flush policy,
        #: capped at half the claim timeout (a window older than that could be claimed by
        #: others while unflushed)
        self.policy = FlushPolicy(options.sync_every_events, options.sync_every_ms,
                                  durable_locally=False, cap_ms=options.claim_idle_ms / 2)
        self.window = Window()
        self.counts = Counts()
        self.metrics = ProgressiveMetrics()
        self.stopping = False
        self._cursor: bytes | str = b"0-0"
        self._next_claim = 0.0
        #: when the first entry came and the last flush ended (events/s of the busy time)
        self.first_entry: float | None = None
        self.last_flush = 0.0

    def stop(self) -> None:
        """Finish the batch in hand, flush, acknowledge, return (a signal handler's call)."""
        self.stopping = True

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> Counts:
        self.ensure_group()
        await self._own_pending()
        while not self.stopping and not self._enough():
            entries = self._claim() if time.monotonic() >= self._next_claim else []
            if not entries:
                entries = self._read()
            if entries:
                await self._handle(entries)
            if self._flush_due(idle=not entries):
                await self.flush()
            if not entries and self.o.exit_when_idle and not self.window.ids \
                    and self.group_pending() == 0:
                break
        await self.flush()
        return self.counts

    def ensure_group(self) -> None:
        """Create the group at the start of the stream (and the stream) if missing."""
        try:
            self.source.xgroup_create(self.o.stream, self.o.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def group_pending(self) -> int:
        return int(self.source.xpending(self.o.stream, self.o.group)["pending"])

    def _enough(self) -> bool:
        return self.o.max_events is not None and self.counts.read >= self.o.max_events

    def _count(self) -> int:
        if self.o.max_events is None:
            return self.o.batch_size
        return max(min(self.o.batch_size, self.o.max_events - self.counts.read), 1)

    async def _own_pending(self) -> None:
        """Entries delivered to this consumer name before a restart, read back from its
        pending list (ID 0 pages through it)."""
        last: bytes | str = b"0"
        while not self.stopping and not self._enough():
            entries = _entries(self.source.xreadgroup(
                self.o.group, self.o.consumer, {self.o.stream: last}, count=self._count()))
            if not entries:
                return
            last = entries[-1][0]
            await self._handle(entries)
            if self._flush_due(idle=False):
                await self.flush()

    def _claim(self) -> list[RawEntry]:
        reply: Any = self.source.xautoclaim(
            self.o.stream, self.o.group, self.o.consumer, self.o.claim_idle_ms,
            start_id=self._cursor, count=self._count())
        self._cursor = reply[0]
        entries = [e for e in reply[1] if e[0] is not None]
        if self._cursor in (b"0-0", "0-0") and not entries:  # a full pass found nothing
            self._next_claim = time.monotonic() + self.o.claim_every
        deleted = list(reply[2]) if len(reply) > 2 else []
        if deleted:  # Redis dropped them from the pending list: trimmed before learned
            log.warning("%d pending entries were trimmed from %s before being learned",
                        len(deleted), self.o.stream)
            self.counts.gone += len(deleted)
        self.counts.claimed += len(entries)
        return entries

    def _read(self) -> list[RawEntry]:
        # a window waiting for its flush must not wait for new entries: read without BLOCK,
        # and flush when nothing came
        block = None if self.window.ids else self.o.block_ms
        return _entries(self.source.xreadgroup(self.o.group, self.o.consumer,
                                               {self.o.stream: ">"}, count=self._count(),
                                               block=block))

    def _flush_due(self, idle: bool) -> bool:
        w = self.window
        if not w.ids:
            return False
        age_ms = (time.monotonic() - w.started) * 1000.0
        return idle or self.policy.due(w.rows, 0, age_ms)

    # -- one batch ------------------------------------------------------------------------------

    async def _handle(self, raw: list[RawEntry]) -> None:
        if self.first_entry is None:
            self.first_entry = time.perf_counter()
        entries: list[Entry] = []
        gone: list[bytes] = []
        for entry_id, fields in raw:
            if entry_id in self.window.held:  # ours, learned, waiting for its flush (claimed
                continue  # back by our own XAUTOCLAIM on a slow machine): not read again
            self.counts.read += 1
            if not fields:  # pending, but its data was trimmed from the stream
                gone.append(entry_id)
                continue
            entries.append(prepare(entry_id, fields, len(entries)))
        dead = [(e, e.reason or "") for e in entries if e.event is None]
        plan = plan_batch([e for e in entries if e.event is not None], self.window.keys,
                          self._window_flush_id(), self.seen, self._flush_settled,
                          self.o.claim_idle_ms)
        dead += await self._learn(plan.learn)
        dead.sort(key=lambda d: d[0].pos)  # the dead-letter stream keeps the source's order
        plan.settle_twins(self.window.keys)
        w = self.window
        w.hold(plan.in_window)
        w.duplicates += len(plan.in_window)
        self.counts.deferred += len(plan.deferred)
        self.counts.gone += len(gone)
        self._settle(plan.duplicates, dead, gone)

    def _flush_settled(self, flush_id: str) -> bool:
        return staging.settled(self.state, flush_id)

    def _window_flush_id(self) -> str:
        """The id the window's flush will carry: fixed from its first event to the flush."""
        flush_id = self.state.next_flush_id
        if self.window.ids and flush_id != self.window.flush_id:
            raise ConsumerError(f"the state store flushed outside the consumer's flush (next "
                                f"flush {flush_id}, events recorded under "
                                f"{self.window.flush_id}); stopping unacknowledged")
        return flush_id

    async def _learn(self, entries: list[Entry]) -> list[tuple[Entry, str]]:
        """Learn ``entries``; the window holds the learned ones; returns the refused ones
        with the reason."""
        if not entries:
            return []
        w = self.window
        flush_id = self._window_flush_id()
        flushes = self.state.flushes
        try:  # made durable by the window's flush, before the acknowledgement
            done = await self.service.learn_lines(ndjson(entries), durable=False)
        except StoreUnavailable as exc:  # the store: stop (see the module docstring)
            raise ConsumerError(f"learning refused: {exc}") from None
        except Problem as exc:  # refused whole: nothing of it was learned
            if len(entries) > 1:  # for what some events bring (too many fields): one by one
                return [r for e in entries for r in await self._learn([e])]
            self.seen.release([entries[0].key], flush_id)
            return [(entries[0], f"event: {exc.detail}")]
        if self.state.flushes != flushes:
            raise ConsumerError("the state store flushed while learning a batch: its events "
                                f"are recorded under flush {flush_id}; stopping unacknowledged")
        bad = {err.index: err for err in done.errors}
        refused = [(entries[i], reason(entries[i].event or b"", err)) for i, err in
                   sorted(bad.items())]
        learned = [e for i, e in enumerate(entries) if i not in bad]
        if len(learned) != done.p.size:
            raise ConsumerError(f"{len(learned)} events learned, {done.p.size} predictions: "
                                "entries and lines are out of step")
        if refused:
            self.seen.release([e.key for e, _ in refused], flush_id)
        if learned:
            if not w.ids:
                w.started = time.monotonic()
                w.flush_id = flush_id
            w.hold(learned)
            w.keys.update(e.key for e in learned)
            w.p.append(done.p)
            w.labels.append(done.labels)
            w.rows += len(learned)
        return refused

    def _settle(self, duplicates: list[Entry], dead: list[tuple[Entry, str]],
                gone: list[bytes]) -> None:
        """Dead-letter and acknowledge what needs no flush, in one MULTI."""
        if not (duplicates or dead or gone):
            return
        o = self.o
        pipe = self.source.pipeline(transaction=True)
        for e, why in dead:
            log.info("dead letter %s: %s", e.entry_id.decode(), why)
            letter: dict[Any, Any] = {**e.fields, b"reason": why.encode(),
                                      b"source_id": e.entry_id}
            pipe.xadd(o.dead_letter, letter)
        ids = [e.entry_id for e in duplicates] + [e.entry_id for e, _ in dead] + gone
        pipe.xack(o.stream, o.group, *ids)
        if duplicates:
            pipe.hincrby(o.stats_key, "duplicates", len(duplicates))
        if dead:
            pipe.hincrby(o.stats_key, "dead_letters", len(dead))
        pipe.execute()
        self.counts.duplicates += len(duplicates)
        self.counts.dead_letters += len(dead)

    # -- flush, then acknowledge ------------------------------------------------------------------

    async def flush(self) -> None:
        """Flush the window's deltas; once they are in the store, acknowledge its entries."""
        if not self.window.ids:
            return
        await self._sync_window()
        self._ack_window()
        self.last_flush = time.perf_counter()
        if self.on_flush is not None:
            self.on_flush(self)

    async def _sync_window(self) -> None:
        w = self.window
        try:
            await self.service.sync()
        except StoreUnavailable as exc:
            raise ConsumerError(f"flush failed, {len(w.ids)} entries left pending for "
                                f"other consumers: {exc}") from None
        if self.state.next_flush_id == w.flush_id:
            raise ConsumerError(f"flush {w.flush_id} was not sent; entries left pending")

    def _ack_window(self) -> None:
        w = self.window
        p = np.concatenate(w.p)
        y = np.concatenate(w.labels)
        q = np.clip(p, EPS, 1.0 - EPS)
        loss = -float(np.sum(y * np.log(q) + (1.0 - y) * np.log1p(-q)))
        o = self.o
        pipe = self.source.pipeline(transaction=True)
        pipe.xack(o.stream, o.group, *w.ids)
        pipe.hincrby(o.stats_key, "learned", w.rows)
        pipe.hincrbyfloat(o.stats_key, "logloss_sum", loss)
        if w.duplicates:
            pipe.hincrby(o.stats_key, "duplicates", w.duplicates)
        pipe.execute()
        self.metrics.update(p, y)
        self.counts.learned += w.rows
        self.counts.duplicates += w.duplicates
        self.counts.flushes += 1
        self.window = Window()

    def group_stats(self) -> dict[str, Any]:
        """The group's totals over all its consumers (``<stream>:stats:<group>``)."""
        raw: dict[bytes, bytes] = self.source.hgetall(self.o.stats_key)  # type: ignore[assignment]
        stats = {k.decode(): float(v) for k, v in raw.items()}
        out: dict[str, Any] = {k: int(stats.get(k, 0)) for k in
                               ("learned", "duplicates", "dead_letters")}
        total = stats.get("logloss_sum", 0.0)
        out["logloss"] = total / out["learned"] if out["learned"] else None
        return out


def _entries(reply: Any) -> list[RawEntry]:
    """The entries of an XREADGROUP reply on one stream (RESP2: [[stream, entries]])."""
    return list(reply[0][1]) if reply else []

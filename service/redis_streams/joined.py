"""The join consumer: an impressions stream and a clicks stream (Redis Streams, one consumer
group on each) fed into the attribution join of an embedded learner service (memory store,
a data directory), each entry acknowledged (XACK) only once the request carrying it is in
the write-ahead log (synced, under ``--fsync always``).

Entries. Each entry's ``event`` field holds one JSON event: on the impressions stream an
event as ``POST /v1/impressions`` takes it (``{"id", "ts", "features"}``), on the clicks
stream one as ``POST /v1/feedback`` takes it (``{"id", "ts", "label"}``, label 1 by
default). ``gen_events.py``'s lines (with their ``type``) are such events.

Acknowledgement. A round's requests are appended to the log as they are applied; the
wait for the log's sync starts at the round's end and runs while the next round is read
and applied; the round's entries are acknowledged after that (at the end of the next
round, or at once when the consumer stops).

Order. Both streams are read in one XREADGROUP per round (up to ``batch_size`` entries of
each) into two buffers, and the buffers are merged by ``ts`` (an event without one first;
on a tie the impression first), each stream's own order kept: an event is taken only while
the other stream's buffer holds something to compare it with, or that stream had nothing
new on its last read. So the join sees event-time order whenever each stream is in
``ts`` order and neither producer lags behind the other by more than the time between
reads; a click written after the consumer found its stream empty and applied impressions
with later ``ts`` comes after them (it joins if its impression is still pending, else it
is ``late``). The merged sequence is
cut into runs of one stream, each run one join request (at most ``batch_size`` events).

Exactly once. Each request carries a stream mark as its key (``learner.idempotency``: the
stream's tag -- a crc32 of its name -- and the run's last entry id), so the log records how
far each stream has been applied, atomically with what was applied; the marks come back
from checkpoints and from learning the log again. Entries are applied in entry-id order
per stream (pending ones first, then new ones), so after a restart a pending entry at or
below its stream's mark is in the log (acknowledged, counted as a duplicate) and one above
it is not (applied now). At start the consumer takes over every pending entry of the group
(XAUTOCLAIM from 0 ms): the join lives in one process, so the group has one consumer; a
restart under another name finds its predecessor's entries.

Bad entries (no ``event`` field, not a JSON object, or refused by the join: a 422 of the
request is retried one event at a time) go to the dead-letter stream (``<stream>:dead`` by
default) with the entry's fields, a ``reason`` and the ``source_id``, acknowledged in the
same MULTI, before anything after them in the stream is applied; the consumer goes on. A
bad entry whose dead letter was not written before a crash is refused again after it (at
most one dead letter more). SIGTERM (``stop``) ends the round in hand, waits for the log and
acknowledges; entries read and not yet merged stay pending for the next start. Not
covered: two join consumers on one group (each would join half the events); entries
trimmed from a stream before they were read (counted as ``gone``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis

from ..errors import Problem
from ..learner import LearnerService
from ..learner.idempotency import entry_id, mark_key
from ..stores import StoreUnavailable
from .consumer import ConsumerError

log = logging.getLogger(__name__)

EVENT_FIELD = b"event"


class _Stamp(msgspec.Struct):
    """Decoding into this checks the event is one JSON object and reads its ``ts``."""

    ts: Any = None


_STAMP = msgspec.json.Decoder(_Stamp)


@dataclass(frozen=True)
class JoinOptions:
    impressions: str
    clicks: str
    group: str
    consumer: str
    #: one dead-letter stream for both ("": ``<stream>:dead`` of each)
    dead_letter: str = ""
    batch_size: int = 1000
    block_ms: int = 1000
    #: stop after reading this many entries (None: run until stopped); entries read that
    #: the merge could not place yet stay pending for the next start
    max_events: int | None = None
    #: stop once nothing is left to read on either stream
    exit_when_idle: bool = False

    def check(self) -> None:
        for flag, value in (("--impressions-stream", self.impressions),
                            ("--clicks-stream", self.clicks), ("--group", self.group),
                            ("--consumer", self.consumer)):
            if not value:
                raise ValueError(f"{flag} must not be empty")
        if self.impressions == self.clicks:
            raise ValueError("--impressions-stream and --clicks-stream must differ")
        if self.dead_letter in (self.impressions, self.clicks):
            raise ValueError(f"--dead-letter {self.dead_letter!r} is a source stream")
        for flag, number in (("--batch-size", self.batch_size), ("--block-ms", self.block_ms),
                             ("--max-events", 1 if self.max_events is None
                              else self.max_events)):
            if number < 1:
                raise ValueError(f"{flag} must be >= 1, got {number}")

    @property
    def stats_key(self) -> str:
        """The group's totals over both streams."""
        return f"{self.impressions}:stats:{self.group}"


@dataclass(slots=True)
class Item:
    """One good entry: its id, fields, event and ``ts`` (None: none)."""

    entry_id: bytes
    fields: dict[bytes, bytes]
    event: bytes
    ts: float | None


class Source:
    """One of the two streams: its cursor (``0``: this consumer's pending entries, read
    first; ``>``: new ones), what was read and not yet applied, and its mark."""

    def __init__(self, name: str, click: bool, dead_letter: str,
                 mark: tuple[int, int]) -> None:
        self.name = name
        self.key = name.encode()
        self.click = click
        self.dead_letter = dead_letter or f"{name}:dead"
        self.tag = tag(name)
        self.mark = mark  # entries at or below it are in the log already
        self.cursor: bytes = b"0"
        self.buffer: deque[Item] = deque()
        self.caught_up = False  # the last read of new entries found none

    @property
    def drained(self) -> bool:
        return self.cursor == b">" and self.caught_up


def tag(stream: str) -> str:
    """A stream's tag in the marks: a crc32 of its name."""
    return f"{zlib.crc32(stream.encode()):08x}"


@dataclass
class JoinCounts:
    read: int = 0
    claimed: int = 0  # taken over from other consumer names at start
    impressions: int = 0  # acknowledged once durable
    clicks: int = 0
    duplicates: int = 0  # pending entries found in the log already
    dead_letters: int = 0
    gone: int = 0  # pending entries whose data was trimmed
    requests: int = 0
    rounds: int = 0


@dataclass
class _Acks:
    """Entries applied (or found applied) since the last acknowledgement, per stream."""

    ids: dict[str, list[bytes]] = field(default_factory=dict)
    impressions: int = 0
    clicks: int = 0
    duplicates: int = 0

    def add(self, src: Source, ids: list[bytes]) -> None:
        self.ids.setdefault(src.name, []).extend(ids)

    def __bool__(self) -> bool:
        return any(self.ids.values())


class JoinConsumer:
    def __init__(self, source: redis.Redis, service: LearnerService,
                 options: JoinOptions) -> None:
        self.source = source
        self.service = service
        self.o = options
        marks = service.keys.marks
        self.imp = Source(options.impressions, False, options.dead_letter,
                          marks.get(tag(options.impressions), (-1, -1)))
        self.clk = Source(options.clicks, True, options.dead_letter,
                          marks.get(tag(options.clicks), (-1, -1)))
        self.sources = (self.imp, self.clk)
        self.counts = JoinCounts()
        self.acks = _Acks()
        #: the previous round's entries and the wait for the log to hold them: its fsync
        #: runs while the next round is read and applied, and they are acknowledged after
        self._syncing: tuple[asyncio.Task[None], _Acks] | None = None
        self.stopping = False
        self.first_entry: float | None = None
        self.last_ack = 0.0

    def stop(self) -> None:
        """Finish the round in hand (applied, durable, acknowledged), then return."""
        self.stopping = True

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> JoinCounts:
        for src in self.sources:
            self._ensure_group(src)
            self._take_over(src)
        try:
            while not self.stopping:
                self._read()
                await self._apply(self._merge())
                await self._acknowledge()
                self.counts.rounds += 1
                if self._enough() or (self.o.exit_when_idle and self._idle()):
                    break
            await self._acknowledge(wait=True)
        finally:
            if self._syncing is not None:  # stopped by an error: left pending
                self._syncing[0].cancel()
        return self.counts

    def _ensure_group(self, src: Source) -> None:
        try:
            self.source.xgroup_create(src.name, self.o.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _take_over(self, src: Source) -> None:
        """Every pending entry of the group becomes this consumer's (read back with ``0``)."""
        cursor: Any = b"0-0"
        while True:
            # (not JUSTID: redis-py drops the cursor of such a reply)
            reply: Any = self.source.xautoclaim(src.name, self.o.group, self.o.consumer, 0,
                                                start_id=cursor, count=1000)
            cursor = reply[0]
            self.counts.claimed += len(reply[1])
            if len(reply) > 2 and reply[2]:  # trimmed: Redis dropped them from the list
                self.counts.gone += len(reply[2])
            if cursor in (b"0-0", "0-0"):
                return

    def _enough(self) -> bool:
        return self.o.max_events is not None and self.counts.read >= self.o.max_events

    def _idle(self) -> bool:
        return all(s.drained and not s.buffer for s in self.sources)

    # -- reading and merging ------------------------------------------------------------------

    def _read(self) -> None:
        """One XREADGROUP for the streams whose buffer is short (BLOCK only when nothing
        is buffered and both read new entries)."""
        if self._enough():  # read no more; what the merge cannot place yet stays pending
            return
        want = [s for s in self.sources if len(s.buffer) < self.o.batch_size]
        if not want:
            return
        count = self.o.batch_size
        if self.o.max_events is not None:
            count = max(min(count, (self.o.max_events - self.counts.read) // len(want)), 1)
        block = self.o.block_ms if all(s.cursor == b">" and not s.buffer
                                       for s in self.sources) else None
        reply: Any = self.source.xreadgroup(self.o.group, self.o.consumer,
                                            {s.key: s.cursor for s in want}, count=count,
                                            block=block)
        got = {bytes(name): list(entries) for name, entries in (reply or [])}
        for src in want:
            entries = got.get(src.key, [])
            pending = src.cursor != b">"
            if not pending:
                src.caught_up = not entries
            elif entries:
                src.cursor = entries[-1][0]
            else:  # the pending list is read: new entries from now on
                src.cursor = b">"
            self._take(src, entries, pending)

    def _take(self, src: Source, entries: list[tuple[bytes, dict[bytes, bytes] | None]],
              pending: bool) -> None:
        """Buffer the good entries; dead-letter the bad ones; acknowledge the pending ones
        the log holds (new entries come after everything applied: only pending ones are
        compared with the mark)."""
        if entries and self.first_entry is None:
            self.first_entry = time.perf_counter()
        dead: list[tuple[bytes, dict[bytes, bytes], str]] = []
        gone: list[bytes] = []
        done: list[bytes] = []
        self.counts.read += len(entries)
        for eid, fields in entries:
            if not fields:  # pending, its data trimmed from the stream
                gone.append(eid)
                continue
            if pending and entry_id(eid.decode()) <= src.mark:
                done.append(eid)  # in the log: applied before a restart, not acknowledged
                continue
            raw = fields.get(EVENT_FIELD)
            if raw is None:
                names = ", ".join(sorted(f.decode("utf-8", "replace") for f in fields))
                dead.append((eid, fields, f"the entry has no 'event' field (its fields: "
                                          f"{names})"))
                continue
            try:
                ts = _STAMP.decode(raw).ts
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                dead.append((eid, fields, f"event: not one JSON object: {exc}"))
                continue
            if isinstance(ts, bool) or not isinstance(ts, (int, float)):
                ts = None  # the join checks it (a bad one is refused there)
            src.buffer.append(Item(eid, fields, raw, None if ts is None else float(ts)))
        if done:
            self.acks.add(src, done)
            self.acks.duplicates += len(done)
        if gone:
            log.warning("%d pending entries were trimmed from %s before being applied",
                        len(gone), src.name)
            self.counts.gone += len(gone)
            self.acks.add(src, gone)
        self._dead(src, dead)

    def _merge(self) -> list[tuple[Source, list[Item]]]:
        """The buffered events in event-time order, as runs of one stream."""
        imp, clk = self.imp.buffer, self.clk.buffer
        runs: list[tuple[Source, list[Item]]] = []
        while True:
            a = imp[0] if imp else None
            b = clk[0] if clk else None
            if a is None and b is None:
                break
            if a is None:
                if not self.imp.drained:
                    break
                src = self.clk
            elif b is None:
                if not self.clk.drained:
                    break
                src = self.imp
            elif b.ts is None or (a.ts is not None and b.ts < a.ts):
                src = self.clk
            else:
                src = self.imp
            item = src.buffer.popleft()
            if runs and runs[-1][0] is src and len(runs[-1][1]) < self.o.batch_size:
                runs[-1][1].append(item)
            else:
                runs.append((src, [item]))
        return runs

    # -- applying ---------------------------------------------------------------------------

    async def _apply(self, runs: list[tuple[Source, list[Item]]]) -> None:
        for src, items in runs:
            await self._request(src, items)

    async def _request(self, src: Source, items: list[Item]) -> None:
        """One join request; a refused one again event by event, the refused events dead
        letters (written before anything after them is applied)."""
        body = b'{"events":[' + b",".join(i.event for i in items) + b"]}"
        key = mark_key(src.tag, items[-1].entry_id.decode())
        try:
            if src.click:
                await self.service.feedback(body, key=key, durable=False)
            else:
                await self.service.impressions(body, key=key, durable=False)
        except StoreUnavailable as exc:
            raise ConsumerError(f"the write-ahead log refused a request: {exc}; entries "
                                "left pending") from None
        except Problem as exc:
            if exc.status >= 500:
                raise ConsumerError(f"the join refused a request: {exc.detail}") from None
            if len(items) > 1:
                for item in items:
                    await self._request(src, [item])
                return
            self._dead(src, [(items[0].entry_id, items[0].fields,
                              f"{'feedback' if src.click else 'impression'}: "
                              f"{exc.detail}")])
            return
        src.mark = entry_id(items[-1].entry_id.decode())
        self.counts.requests += 1
        self.acks.add(src, [i.entry_id for i in items])
        if src.click:
            self.acks.clicks += len(items)
        else:
            self.acks.impressions += len(items)

    def _dead(self, src: Source, dead: list[tuple[bytes, dict[bytes, bytes], str]]) -> None:
        if not dead:
            return
        pipe = self.source.pipeline(transaction=True)
        for eid, fields, why in dead:
            log.info("dead letter %s %s: %s", src.name, eid.decode(), why)
            letter: dict[Any, Any] = {**fields, b"reason": why.encode(), b"source_id": eid,
                                      b"source": src.key}
            pipe.xadd(src.dead_letter, letter)
        pipe.xack(src.name, self.o.group, *(eid for eid, _, _ in dead))
        pipe.hincrby(self.o.stats_key, "dead_letters", len(dead))
        pipe.execute()
        self.counts.dead_letters += len(dead)

    async def _acknowledge(self, wait: bool = False) -> None:
        """Start the wait for the log to hold this round's requests (the sync runs in the
        log's thread); acknowledge the previous round's entries once it held them, or,
        with ``wait``, everything now."""
        previous, self._syncing = self._syncing, None
        if self.acks:
            durable = self.service.store.durable(self.service.join_ticket)
            self._syncing = (asyncio.ensure_future(durable), self.acks)
            self.acks = _Acks()
        if previous is not None:
            await self._ack(*previous)
        if wait and self._syncing is not None:
            current, self._syncing = self._syncing, None
            await self._ack(*current)

    async def _ack(self, durable: asyncio.Task[None], acks: _Acks) -> None:
        """Entries (applied, or found applied) acknowledged once ``durable`` is done, with
        the group's totals."""
        try:
            await durable
        except StoreUnavailable as exc:
            raise ConsumerError(f"the write-ahead log could not be synced: {exc}; entries "
                                "left pending") from None
        pipe = self.source.pipeline(transaction=True)
        for name, ids in acks.ids.items():
            if ids:
                pipe.xack(name, self.o.group, *ids)
        for what in ("impressions", "clicks", "duplicates"):
            n = getattr(acks, what)
            if n:
                pipe.hincrby(self.o.stats_key, what, n)
        pipe.execute()
        self.counts.impressions += acks.impressions
        self.counts.clicks += acks.clicks
        self.counts.duplicates += acks.duplicates
        self.last_ack = time.perf_counter()

    def group_stats(self) -> dict[str, int]:
        raw: dict[bytes, bytes] = self.source.hgetall(self.o.stats_key)  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}

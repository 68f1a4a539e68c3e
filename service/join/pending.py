"""The pending impressions and the clocks that close them.

An impression is kept as its 64-bit id key and its parsed row -- hashed feature keys, field
ids and values, a slot of a ``RowArena`` (20 bytes a feature) -- never as
JSON or strings.
``JoinState`` is deterministic: the same calls in the same order (live, or learning the
write-ahead log again) close the same impressions in the same order and return the same
rows to learn. It never reads a clock itself; times come from the caller (the request's
arrival time, logged with it).

Time is event time. An impression closes when its window has passed: ``ts + window`` is
older than the watermark, the newest ``ts`` seen (impressions and clicks). An event
without ``ts`` takes its arrival time instead and is closed by the arrival clock (the
newest arrival time seen, advanced by the background tick too), so a service fed event
times from the past never closes them by the wall clock. A click without ``ts`` happens
now on its impression's clock (the watermark, or its arrival time). Closing order: by
close time, then arrival.

Shared (Redis) mode (``shared``, ``service.join.marks``): requests never close by event
time; the join tick does (``advance``) with the watermark the workers agree on, after
applying the clicks other workers published (``marks``).

A click joins a pending impression when its time is within the window (a click at exactly
``ts + window`` still counts); after that the impression is closed and the click is
``late``. ``late`` and ``unknown`` are told apart for the last ``CLOSED_KEPT`` closed ids.
"""

from __future__ import annotations

import bisect
import heapq
import math
import sys
from collections import deque
from itertools import repeat
from operator import itemgetter
from typing import Final, cast

import numpy as np

from ftrl_core.spans import FEATURE_BYTES, RowArena, Rows

from .ids import coin
from .policies import Policy, subsampled_weight

#: closed ids remembered to tell a late click from an unknown one
CLOSED_KEPT = 100_000
#: shared mode: seconds before its first impression a worker starts reading the clicks
#: other workers publish (Redis stream ids are the server's clock in ms)
CURSOR_MARGIN = 60.0
#: upper bounds (seconds) of the click-delay histogram's buckets; the last is +inf
DELAY_BUCKETS: tuple[float, ...] = (1, 10, 60, 300, 900, 3600, 4 * 3600, 86400, math.inf)
#: marks an fnw row whose weight comes from the model's prediction when it is learned
FNW_WEIGHT = -1.0

#: the join's counters, in the order checkpoints keep them (new ones go last)
COUNTERS = ("impressions", "duplicates", "joined", "expired", "closed_early",
            "closed_by_label", "late", "unknown", "repeated_clicks", "learned_positives",
            "learned_negatives", "negatives_dropped",
            # shared (Redis) mode only (``service.join.marks``): clicks this worker did not
            # hold, published for the others; published clicks this worker held
            "forwarded", "marks_matched")


#: One impression waiting for its window to close: a plain tuple of atoms (``TS``,
#: ``CLOSE_AT``, ``SEQ``, ``EVENT_TIME``, ``CLICKED``, ``SLOT``), not an object: the garbage
#: collector stops tracking such tuples, so hundreds of thousands pending cost it nothing
#: (instances of a class are tracked and traversed: a fifth of the join's time went to
#: collections). A click replaces the tuple.
Pending = tuple[float, float, int, bool, float, int]
TS: Final = 0
CLOSE_AT: Final = 1
SEQ: Final = 2
EVENT_TIME: Final = 3
CLICKED: Final = 4
SLOT: Final = 5
# SEQ: arrival order (ties in close time close in this order); EVENT_TIME: closed by the
# watermark (else by the arrival clock); CLICKED: the click's delay in seconds once one
# joined, else -1; SLOT: its row's in the ``RowArena``


class CloseQueue:
    """``(close_at, seq, key)`` entries, smallest first: what a heap of them gives, at the
    cost of a list when entries come in order (impressions of one window, their ``ts``
    rising). An entry not below the last in order is appended to the run; others go to a
    heap; the smallest is the smaller of the two heads. Entries are unique (``seq``), so
    the order is exactly a single heap's. The run is a list read from ``head`` (not a
    deque): a sorted list can be cut at a time with one ``bisect`` (``take_below``)."""

    __slots__ = ("head", "heap", "run")

    def __init__(self) -> None:
        self.run: list[tuple[float, int, int]] = []
        self.head = 0
        self.heap: list[tuple[float, int, int]] = []

    def __bool__(self) -> bool:
        return self.head < len(self.run) or bool(self.heap)

    def __len__(self) -> int:
        return len(self.run) - self.head + len(self.heap)

    def ends_run(self, entry: tuple[float, int, int]) -> bool:
        """Whether ``entry`` goes at the end of the run (else into the heap)."""
        return len(self.run) == self.head or self.run[-1] < entry

    def push(self, entry: tuple[float, int, int]) -> None:
        if self.ends_run(entry):
            self.run.append(entry)
        else:
            heapq.heappush(self.heap, entry)

    def top(self) -> tuple[float, int, int] | None:
        """The smallest entry (closed or not), None when empty."""
        run, heap, head = self.run, self.heap, self.head
        if head < len(run):
            if heap and heap[0] < run[head]:
                return heap[0]
            return run[head]
        return heap[0] if heap else None

    def pop(self) -> None:
        """Drop the smallest entry."""
        run, heap, head = self.run, self.heap, self.head
        if head < len(run) and not (heap and heap[0] < run[head]):
            self._drop_run(head + 1)
        else:
            heapq.heappop(heap)

    def take_below(self, bound: float) -> list[tuple[float, int, int]]:
        """Remove and return, in order, the run's entries whose ``close_at`` is below
        ``bound`` (with an empty heap: every such entry)."""
        head = self.head
        end = bisect.bisect_left(self.run, (bound,), head)
        taken = self.run[head:end]
        self._drop_run(end)
        return taken

    def _drop_run(self, head: int) -> None:
        """Entries before ``head`` have left; the list is cut once they are most of it."""
        if head >= 1024 and 2 * head >= len(self.run):
            del self.run[:head]
            head = 0
        self.head = head

    def live(self, pending: dict[int, Pending]) -> tuple[float, int, int] | None:
        """The smallest entry of an impression still pending; closed ones surfacing are
        dropped (an entry is its impression's while the id's pending ``SEQ`` is its own:
        an id closed, forgotten and shown again has a new one)."""
        while True:
            top = self.top()
            if top is None:
                return None
            imp = pending.get(top[2])
            if imp is not None and imp[SEQ] == top[1]:
                return top
            self.pop()


class ToLearn:
    """Rows to learn, in order: their slots in the arena, labels, weights (``FNW_WEIGHT``:
    computed from the prediction when learned). Read (``csr``) before the next
    ``JoinState.impressions``, which may reuse the slots."""

    __slots__ = ("adds", "arena", "labels", "slots", "weights")

    def __init__(self, arena: RowArena) -> None:
        self.arena = arena
        self.adds = arena.adds
        self.slots: list[int] = []
        self.labels: list[float] = []
        self.weights: list[float] = []

    def add(self, slot: int, label: float, weight: float) -> None:
        self.slots.append(slot)
        self.labels.append(label)
        self.weights.append(weight)

    def __len__(self) -> int:
        return len(self.slots)

    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, keys, fields, values) of the rows, as a CSR batch wants them."""
        return self.arena.gather(self.slots, self.adds)


#: one stored feature as checkpoints keep it: hashed key, field id, value (20 bytes)
FEATURE = np.dtype([("key", "<u8"), ("field", "<i4"), ("value", "<f8")])
assert FEATURE.itemsize == FEATURE_BYTES


class JoinState:
    def __init__(self, window: float, policy: Policy, max_pending: int = 0,
                 negative_rate: float = 1.0, shared: bool = False) -> None:
        self.window = float(window)
        #: shared (Redis) mode: requests never close by event time, the join tick does with
        #: the watermark every worker agrees on (``advance``); a click for an id this worker
        #: does not hold is ``forwarded``, not ``unknown`` (``service.join.marks``)
        self.shared = shared
        #: the newest event time this worker has seen (what it adds to the shared watermark)
        self.seen = -math.inf
        #: the position in the shared click stream read up to ("" : none yet)
        self.cursor = ""
        self.policy = policy
        self.max_pending = int(max_pending)  # 0: unbounded
        self.negative_rate = float(negative_rate)
        #: id key -> impression
        self.pending: dict[int, Pending] = {}
        #: the pending impressions' rows
        self.arena = RowArena()
        #: (seq, key) in arrival order, for ``--max-pending``; closed ones are skipped when
        #: they surface (a dict's first item is O(deleted items) to find: not used)
        self._arrivals: deque[tuple[int, int]] = deque()
        #: (close_at, seq, key) of the impressions each clock closes; closed entries are
        #: skipped when they surface
        self._by_event = CloseQueue()
        self._by_arrival = CloseQueue()
        self.watermark = -math.inf
        self.clock = -math.inf
        #: an event-time impression came in past its window: the next event closes it
        self._stale = False
        self.seq = 0
        #: the last ``CLOSED_KEPT`` ids closed, and their order from ``_closed_head`` (a
        #: dict and a list: an OrderedDict cost twice as much a close, and a dict's first
        #: key is slow to find once many were deleted)
        self.closed: dict[int, None] = {}
        self._closed_order: list[int] = []
        self._closed_head = 0
        self.counts = dict.fromkeys(COUNTERS, 0)
        #: requests applied (not kept in checkpoints): a checkpoint is due when it moved
        self.changes = 0
        self.delays = [0] * len(DELAY_BUCKETS)

    # -- requests --------------------------------------------------------------------------

    def impressions(self, keys: list[int], ts: list[float | None], rows: Rows,
                    at: float) -> tuple[ToLearn, list[bool]]:
        """Remember impressions (``ts`` None: arrival time ``at``) and their rows (one
        each); returns the rows to learn now and whether each impression was new (a
        repeated pending id is not)."""
        arena = self.arena
        slots = arena.add(rows)
        out = ToLearn(arena)
        self.changes += 1
        shared = self.shared
        if not shared:
            self._arrive(at, out)
            if not self.max_pending and self._in_order(ts):
                return out, self._in_order_impressions(keys, ts, slots, out)  # type: ignore[arg-type]
        elif not self.cursor and keys:
            # the first impression: read the click stream from a little before it (its
            # clicks come after it; the margin is for clocks of hosts that disagree). From
            # the logged arrival time, so a replay starts at the same place
            self.cursor = f"{max(0, int((at - CURSOR_MARGIN) * 1000))}-0"
        added = []
        # locals: this loop runs once per impression
        pending, closed, counts = self.pending, self.closed, self.counts
        window, fnw, bounded = self.window, self.policy == "fnw", self.max_pending
        counts["impressions"] += len(keys)
        by_event, by_arrival = self._by_event, self._by_arrival
        seq = self.seq
        duplicated: list[int] = []
        learn_slots, learn_labels, learn_weights = out.slots, out.labels, out.weights
        for key, t, slot in zip(keys, ts, slots, strict=True):
            event_time = t is not None
            when = at if t is None else t
            if shared:  # closed by the tick, with the shared watermark
                if event_time and when > self.seen:
                    self.seen = when
            # only a watermark that moves, or an impression that came in already past its
            # window, can close anything (skipping the call is most of an event's cost)
            elif event_time and (when > self.watermark or self._stale):
                top = by_event.top()  # the smallest close time, pending or not
                if self._stale or (top is not None and top[0] < when):
                    self._advance(when, self.clock, out)
                else:  # the watermark moves, and closes nothing
                    self.watermark = when
            if key in pending or key in closed:
                counts["duplicates"] += 1
                added.append(False)
                duplicated.append(slot)
                continue
            if bounded and len(pending) >= bounded:
                self._close(self._oldest(), out, "closed_early")
            close_at = when + window
            pending[key] = (when, close_at, seq, event_time, -1.0, slot)
            entry = (close_at, seq, key)
            if event_time:
                by_event.push(entry)
                if close_at < self.watermark:
                    self._stale = True
            else:
                by_arrival.push(entry)
            if bounded:
                self._arrivals.append((seq, key))
            seq += 1
            added.append(True)
            if fnw:  # learned at once as a (maybe fake) negative
                learn_slots.append(slot)
                learn_labels.append(0.0)
                learn_weights.append(FNW_WEIGHT)
                counts["learned_negatives"] += 1
        self.seq = seq
        arena.release(duplicated)
        return out, added

    def _in_order(self, ts: list[float | None]) -> bool:
        """Whether a request's impressions can be taken in one step: each with a ``ts``, in
        order, within one window of each other, none already past its window. Then the
        closes each one's ``ts`` makes happen all precede every close of one of them (none
        closes another), so moving the watermark once, to the last ``ts``, closes the
        same impressions in the same order as moving it impression by impression."""
        if len(ts) < 2 or None in ts:
            return False
        t = np.array(ts, dtype=np.float64)
        return bool(t[-1] - t[0] <= self.window and t[0] + self.window >= self.watermark
                    and (t[1:] >= t[:-1]).all())

    def _in_order_impressions(self, keys: list[int], ts: list[float], slots: list[int],
                              out: ToLearn) -> list[bool]:
        """``impressions`` of a request ``_in_order`` accepts (memory store, unbounded)."""
        if ts[-1] > self.watermark or self._stale:
            self._advance(ts[-1], self.clock, out)
        pending, closed, by_event = self.pending, self.closed, self._by_event
        n = len(keys)
        if by_event.ends_run((ts[0] + self.window, self.seq, keys[0])) \
                and pending.keys().isdisjoint(keys) and closed.keys().isdisjoint(keys) \
                and len(set(keys)) == n:
            # every one new, and each entry above the last: what the loop below does,
            # each step done for the whole request at once (dict, list and zip in C)
            self._add_run(keys, ts, slots, out)
            return [True] * n
        window, fnw, counts = self.window, self.policy == "fnw", self.counts
        seq = self.seq
        added = []
        duplicated: list[int] = []
        for key, t, slot in zip(keys, ts, slots, strict=True):
            if key in pending or key in closed:
                added.append(False)
                duplicated.append(slot)
                continue
            close_at = t + window
            pending[key] = (t, close_at, seq, True, -1.0, slot)
            by_event.push((close_at, seq, key))
            seq += 1
            added.append(True)
        counts["impressions"] += n
        counts["duplicates"] += len(duplicated)
        if fnw:
            self._learn_shown([s for s, a in zip(slots, added, strict=True) if a], out)
        self.seq = seq
        self.arena.release(duplicated)
        return added

    def _add_run(self, keys: list[int], ts: list[float], slots: list[int], out: ToLearn
                 ) -> None:
        """Add new impressions, in ``ts`` order, whose entries all go at the end of the run."""
        n, seq, window = len(keys), self.seq, self.window
        close = [t + window for t in ts]
        seqs = range(seq, seq + n)
        # (not strict: ``repeat`` never ends; ``ts``, ``close``, ``seqs`` and ``slots`` are
        # the same length, as ``keys``, the outer zip checks)
        self.pending.update(zip(keys, zip(ts, close, seqs, repeat(True), repeat(-1.0),
                                          slots, strict=False), strict=True))
        self._by_event.run.extend(zip(close, seqs, keys, strict=True))
        self.counts["impressions"] += n
        if self.policy == "fnw":
            self._learn_shown(slots, out)
        self.seq = seq + n

    def _learn_shown(self, slots: list[int], out: ToLearn) -> None:
        """fnw: new impressions, learned at once as (maybe fake) negatives."""
        out.slots.extend(slots)
        out.labels.extend([0.0] * len(slots))
        out.weights.extend([FNW_WEIGHT] * len(slots))
        self.counts["learned_negatives"] += len(slots)

    def feedback(self, keys: list[int], ts: list[float | None], labels: list[int],
                 at: float) -> ToLearn:
        """Join clicks (label 1) and explicit negatives (label 0, closing at once)."""
        out = ToLearn(self.arena)
        self.changes += 1
        shared = self.shared
        if not shared:
            self._arrive(at, out)
        for key, t, label in zip(keys, ts, labels, strict=True):
            if shared:
                if t is not None and t > self.seen:
                    self.seen = t
            elif t is not None and (t > self.watermark or self._stale):
                self._advance(t, self.clock, out)
            if shared and not self.owns(key):
                self.counts["forwarded"] += 1  # published for the worker that holds it
                continue
            self._click(key, t, label, at, out)
        return out

    def owns(self, key: int) -> bool:
        """Whether this worker holds the impression ``key`` (pending, or closed recently)."""
        return key in self.pending or key in self.closed

    def marks(self, keys: list[int], ts: list[float | None], labels: list[int],
              ats: list[float]) -> ToLearn:
        """Clicks other workers published (``service.join.marks``), applied before the
        tick closes anything; those for ids this worker does not hold are someone else's.
        A click without ``ts`` happens at the watermark the tick found (the last one
        agreed before it was read) or, for an impression timed by arrival, at its own
        arrival time on the worker that took it."""
        out = ToLearn(self.arena)
        self.changes += 1
        for key, t, label, at in zip(keys, ts, labels, ats, strict=True):
            if not self.owns(key):
                continue
            self.counts["marks_matched"] += 1
            self._click(key, t, label, at, out)
        return out

    def advance(self, watermark: float, now: float) -> ToLearn:
        """The shared mode's tick: close what the agreed watermark and the arrival clock
        have passed."""
        out = ToLearn(self.arena)
        self.changes += 1
        self._advance(watermark, now, out)
        return out

    def _click(self, key: int, t: float | None, label: int, at: float, out: ToLearn
               ) -> None:
        """One click (label 1) or explicit negative (label 0) on ``key``."""
        imp = self.pending.get(key)
        if imp is None:
            self.counts["late" if key in self.closed else "unknown"] += 1
            return
        # a click without ts happens "now" on its impression's clock
        when = t if t is not None else self.watermark if imp[EVENT_TIME] else at
        if when > imp[CLOSE_AT]:  # its clock has not passed the window yet, the click has
            self.counts["late"] += 1
            return
        if label == 0:
            self._close(key, out, "closed_by_label")
            return
        if imp[CLICKED] >= 0:
            self.counts["repeated_clicks"] += 1
            return
        delay = max(0.0, when - imp[TS])
        self.pending[key] = (imp[TS], imp[CLOSE_AT], imp[SEQ], imp[EVENT_TIME], delay,
                             imp[SLOT])
        self.counts["joined"] += 1
        self.delays[_bucket(delay)] += 1
        if self.policy == "fnw":  # the positive copy, now
            out.add(imp[SLOT], 1.0, FNW_WEIGHT)
            self.counts["learned_positives"] += 1

    def due(self, now: float) -> bool:
        """Whether advancing the arrival clock to ``now`` would close an impression."""
        top = self._by_arrival.live(self.pending)
        return top is not None and top[0] < now

    def due_event(self, watermark: float) -> bool:
        """Whether advancing the watermark to ``watermark`` would close an impression."""
        top = self._by_event.live(self.pending)
        return top is not None and (top[0] < max(watermark, self.watermark) or self._stale)

    def tick(self, now: float) -> ToLearn:
        """Advance the arrival clock (the background tick)."""
        out = ToLearn(self.arena)
        self.changes += 1
        self._arrive(now, out)
        return out

    # -- closing ---------------------------------------------------------------------------

    def _arrive(self, at: float, out: ToLearn) -> None:
        self._advance(self.watermark, at, out)

    def _advance(self, watermark: float, clock: float, out: ToLearn) -> None:
        self.watermark = max(self.watermark, watermark)
        self.clock = max(self.clock, clock)
        self._stale = False
        ev, ar, pending = self._by_event, self._by_arrival, self.pending
        watermark, clock = self.watermark, self.clock
        if not ar:  # every impression timed by its ts (the usual case): one queue
            self._expire(watermark, out)
            return
        while True:
            e = ev.live(pending)
            a = ar.live(pending)
            if e is not None and e[0] >= watermark:
                e = None
            if a is not None and a[0] >= clock:
                a = None
            if e is None and a is None:
                return
            if a is None or (e is not None and e[:2] < a[:2]):
                ev.pop()
                self._close(e[2], out, "expired")  # type: ignore[index]
            else:
                ar.pop()
                self._close(a[2], out, "expired")

    def _expire(self, watermark: float, out: ToLearn) -> None:
        """What ``_advance`` does when only the watermark closes impressions: ``_close``
        (``expired``) of each one whose ``close_at`` it passed, in order, all at once."""
        by_event, pending = self._by_event, self.pending
        keys: list[int]
        imps: list[Pending]
        if not by_event.heap:  # in order: one cut of the run
            entries = by_event.take_below(watermark)
            keys = list(map(itemgetter(2), entries))
            found = list(map(pending.get, keys))
            seqs = list(map(itemgetter(1), entries))
            if None in found or list(map(itemgetter(SEQ), cast("list[Pending]", found))) != seqs:
                # some closed already (a label 0, --max-pending; their ids maybe shown
                # again since, under a new SEQ): left out
                live = [(k, imp) for k, seq, imp in zip(keys, seqs, found, strict=True)
                        if imp is not None and imp[SEQ] == seq]
                keys, found = [k for k, _ in live], [imp for _, imp in live]
            imps = cast("list[Pending]", found)  # no None left
            deque(map(pending.__delitem__, keys), maxlen=0)  # in C
        else:
            keys, imps = [], []
            while (top := by_event.live(pending)) is not None and top[0] < watermark:
                by_event.pop()
                keys.append(top[2])
                imps.append(pending.pop(top[2]))
        if keys:
            self._closed(keys, imps, out, "expired")

    def _oldest(self) -> int:
        arrivals = self._arrivals
        while True:
            seq, key = arrivals[0]
            imp = self.pending.get(key)
            if imp is not None and imp[SEQ] == seq:
                return key
            arrivals.popleft()

    def _close(self, key: int, out: ToLearn, why: str) -> None:
        self._closed([key], [self.pending.pop(key)], out, why)

    def _closed(self, keys: list[int], imps: list[Pending], out: ToLearn, why: str) -> None:
        """Impressions just taken out of ``pending``, in closing order: count them as
        ``why``, free their rows (readable until the next add) and, with ``wait``, learn
        them: label 1 if a click joined, else 0 (a negative kept with probability
        ``negative_rate``, weighted 1/rate)."""
        slots = list(map(itemgetter(SLOT), imps))
        self.arena.release(slots)
        self._remember_closed(keys)
        counts = self.counts
        counts[why] += len(keys)
        if self.policy != "wait":
            return  # fnw learned the impression when it came, and its click when it came
        labels = [1.0 if imp[CLICKED] >= 0 else 0.0 for imp in imps]
        positives = int(sum(labels))
        rate = self.negative_rate
        if rate >= 1.0:
            out.slots.extend(slots)
            out.labels.extend(labels)
            out.weights.extend([1.0] * len(slots))
            counts["learned_positives"] += positives
            counts["learned_negatives"] += len(slots) - positives
            return
        weight = subsampled_weight(rate)
        for key, slot, label in zip(keys, slots, labels, strict=True):
            if label:
                out.add(slot, 1.0, 1.0)
                counts["learned_positives"] += 1
            elif coin(key) < rate:
                out.add(slot, 0.0, weight)
                counts["learned_negatives"] += 1
            else:
                counts["negatives_dropped"] += 1

    def _remember_closed(self, keys: list[int]) -> None:
        closed, order = self.closed, self._closed_order
        closed.update(zip(keys, repeat(None)))
        order.extend(keys)
        over = len(closed) - CLOSED_KEPT
        if over > 0:  # forget the oldest
            head = self._closed_head
            deque(map(closed.__delitem__, order[head:head + over]), maxlen=0)  # in C
            head += over
            if head >= CLOSED_KEPT:
                del order[:head]
                head = 0
            self._closed_head = head

    # -- reading and persistence -----------------------------------------------------------

    def bytes_held(self) -> int:
        """Bytes the pending impressions hold: the arena's arrays (all of them, free room
        too), their objects, their dict and heap entries (CPython's sizes; dict slots
        amortised at ~1.5x their 24-byte entries)."""
        n = len(self.pending)
        if n == 0:
            return 0
        some = next(iter(self.pending.values()))
        per = (sys.getsizeof(some) + 3 * sys.getsizeof(1.0) + sys.getsizeof(1 << 63)
               + 2 * sys.getsizeof(1 << 40) + 36 + sys.getsizeof((1.0, 1, 1)) + 8)
        return self.arena.nbytes() + n * per

    def status(self) -> dict[str, object]:
        n = len(self.pending)
        held = self.bytes_held()
        return {"policy": self.policy, "window_seconds": self.window,
                "max_pending": self.max_pending, "negative_rate": self.negative_rate,
                "pending": n, **self.counts,
                "pending_bytes": held,
                "bytes_per_pending": round(held / n, 1) if n else 0.0,
                "watermark": self.watermark if math.isfinite(self.watermark) else None,
                "arrival_clock": self.clock if math.isfinite(self.clock) else None,
                "click_delay_seconds": {
                    "le": [b if math.isfinite(b) else "+Inf" for b in DELAY_BUCKETS],
                    "counts": list(self.delays)}}

    def state(self) -> dict[str, np.ndarray]:
        """Everything as arrays (a checkpoint part)."""
        imps = list(self.pending.items())
        indptr, keys, fields, values = self.arena.gather([p[SLOT] for _, p in imps])
        records = np.empty(len(keys), dtype=FEATURE)
        records["key"], records["field"], records["value"] = keys, fields, values
        return {
            "keys": np.array([k for k, _ in imps], dtype=np.uint64),
            "ts": np.array([p[TS] for _, p in imps], dtype=np.float64),
            "close_at": np.array([p[CLOSE_AT] for _, p in imps], dtype=np.float64),
            "seq": np.array([p[SEQ] for _, p in imps], dtype=np.int64),
            "event_time": np.array([p[EVENT_TIME] for _, p in imps], dtype=np.bool_),
            "clicked": np.array([p[CLICKED] for _, p in imps], dtype=np.float64),
            "row_sizes": FEATURE_BYTES * np.diff(indptr),
            "rows": records.view(np.uint8),
            "closed": np.array(list(self.closed), dtype=np.uint64),
            "clocks": np.array([self.watermark, self.clock, float(self.seq), self.seen]),
            "cursor": np.frombuffer(self.cursor.encode(), dtype=np.uint8),
            "counts": np.array([self.counts[c] for c in COUNTERS], dtype=np.int64),
            "delays": np.array(self.delays, dtype=np.int64),
        }

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        records = np.frombuffer(arrays["rows"].tobytes(), dtype=FEATURE)
        indptr = np.zeros(len(arrays["row_sizes"]) + 1, dtype=np.int64)
        np.cumsum(arrays["row_sizes"] // FEATURE_BYTES, out=indptr[1:])
        n = len(indptr) - 1
        self.arena = RowArena()
        slots = self.arena.add(Rows(
            indptr, np.ascontiguousarray(records["key"]), np.ascontiguousarray(records["field"]),
            np.ascontiguousarray(records["value"]), range(n)))
        by_event: list[tuple[float, int, int]] = []
        by_arrival: list[tuple[float, int, int]] = []
        for i, key in enumerate(arrays["keys"].tolist()):
            imp = (float(arrays["ts"][i]), float(arrays["close_at"][i]),
                   int(arrays["seq"][i]), bool(arrays["event_time"][i]),
                   float(arrays["clicked"][i]), slots[i])
            self.pending[int(key)] = imp
            (by_event if imp[EVENT_TIME] else by_arrival).append(
                (imp[CLOSE_AT], imp[SEQ], int(key)))
        for entries, queue in ((by_event, self._by_event), (by_arrival, self._by_arrival)):
            for entry in sorted(entries):  # in order: a run, no heap
                queue.push(entry)
        kept = [int(k) for k in arrays["closed"].tolist()]
        self.closed = dict.fromkeys(kept)
        self._closed_order = kept
        self._closed_head = 0
        if self.max_pending:
            self._arrivals = deque(sorted((p[SEQ], k) for k, p in self.pending.items()))
        clocks = [float(x) for x in arrays["clocks"]]
        self.watermark, self.clock, self.seq = clocks[0], clocks[1], int(clocks[2])
        if len(clocks) > 3:  # written by a shared (Redis) worker
            self.seen = clocks[3]
        if "cursor" in arrays:
            self.cursor = arrays["cursor"].tobytes().decode()
        for name, value in zip(COUNTERS, arrays["counts"].tolist(), strict=False):
            self.counts[name] = int(value)
        self.delays = [int(x) for x in arrays["delays"].tolist()]


def _bucket(delay: float) -> int:
    for i, bound in enumerate(DELAY_BUCKETS):
        if delay <= bound:
            return i
    return len(DELAY_BUCKETS) - 1

"""The pending impressions and the clocks that close them.

An impression is kept as its 64-bit id key and its parsed row -- hashed feature keys, field
ids and values, a slot of a ``RowArena`` (20 bytes a feature) -- never as
JSON or strings. Its other fields are in arrays by the same slot (``PendingFields``), its
id in a compiled map (``ftrl_core.keymap``), its place in the closing order in arrays
(``close_queue``): no Python object per impression.
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
import math
from collections import deque
from typing import Final

import numpy as np

from ftrl_core.keymap import ABSENT, KeyMap
from ftrl_core.spans import FEATURE_BYTES, RowArena, Rows

from .close_queue import CloseQueue, with_room
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


#: One pending impression as ``JoinState.pending`` shows it (a snapshot for inspection;
#: the state itself is ``PendingFields``' arrays): ``TS``, ``CLOSE_AT``, ``SEQ``,
#: ``EVENT_TIME``, ``CLICKED``, ``SLOT``.
Pending = tuple[float, float, int, bool, float, int]
TS: Final = 0
CLOSE_AT: Final = 1
SEQ: Final = 2
EVENT_TIME: Final = 3
CLICKED: Final = 4
SLOT: Final = 5

#: ``JoinState.ids``' value for an id closed and still remembered (a pending id's is its slot)
CLOSED: Final = -1


class ClosedIds:
    """The ids closed, oldest first, in an array read from ``head``: the last
    ``CLOSED_KEPT`` are remembered (``CLOSED`` in ``JoinState.ids``)."""

    __slots__ = ("forgotten", "head", "keys", "size")

    def __init__(self, keys: np.ndarray | None = None) -> None:
        self.keys = np.zeros(1024, dtype=np.uint64)
        self.head = self.size = 0
        #: ids forgotten so far (only grows: ``head`` moves back when the array is cut)
        self.forgotten = 0
        if keys is not None:
            self.add(keys, len(keys))

    def kept(self) -> np.ndarray:
        return self.keys[self.head:self.size]

    def add(self, keys: np.ndarray, kept: int) -> np.ndarray:
        """Append ``keys``; returns the oldest ones beyond ``kept``, forgotten now."""
        n = len(keys)
        self._room(n)
        self.keys[self.size:self.size + n] = keys
        self.size += n
        over = self.size - self.head - kept
        if over <= 0:
            return self.keys[:0]
        forgotten = self.keys[self.head:self.head + over].copy()
        self.head += over
        self.forgotten += over
        return forgotten

    def add_one(self, key: int, kept: int) -> int | None:
        """``add`` of one key, with scalars: the key forgotten now, if one is."""
        self._room(1)
        self.keys[self.size] = key
        self.size += 1
        if self.size - self.head <= kept:
            return None
        self.head += 1
        self.forgotten += 1
        return int(self.keys[self.head - 1])

    def _room(self, n: int) -> None:
        (self.keys,), self.head, self.size = with_room((self.keys,), self.head, self.size, n)


class PendingFields:
    """The pending impressions' fields, one array each, indexed by the impression's slot in
    the ``RowArena`` (which holds its row): no Python object per impression. Before, each
    was a tuple of six atoms in a dict, and the close queue held a tuple per impression:
    building them, and finding them again an hour of event time later (180,000 impressions
    on, none of it in a cache), was 40% of the join's CPU (3.3 s of 7.7 over syn1m's
    stream in process; 1.3-1.9 s in arrays, README "The pending store in arrays").

    ``seq`` is the impression's arrival number while its slot holds a pending impression,
    -1 once it closed; ``clicked`` the click's delay in seconds once one joined, else -1;
    ``event_time``: closed by the watermark (else by the arrival clock)."""

    __slots__ = ("clicked", "close_at", "event_time", "key", "seq", "ts")

    def __init__(self) -> None:
        self.key = np.zeros(0, dtype=np.uint64)
        self.ts = np.zeros(0, dtype=np.float64)
        self.close_at = np.zeros(0, dtype=np.float64)
        self.seq = np.zeros(0, dtype=np.int64)
        self.event_time = np.zeros(0, dtype=np.bool_)
        self.clicked = np.zeros(0, dtype=np.float64)

    def ensure(self, slots: int) -> None:
        """Room for ``slots`` slots (the arena's, which only grow)."""
        old = len(self.seq)
        if slots <= old:
            return
        for name in self.__slots__:
            array = getattr(self, name)
            grown = np.zeros(slots, dtype=array.dtype)
            grown[:old] = array
            setattr(self, name, grown)
        self.seq[old:] = -1

    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self.__slots__)

    def hold(self, slot: int, key: int, ts: float, close_at: float, seq: int,
             event_time: bool) -> None:
        """One impression, into its slot (``hold_run`` of one, with scalars: impressions
        taken one at a time, where arrays of one cost several times the work)."""
        self.key[slot] = key
        self.ts[slot] = ts
        self.close_at[slot] = close_at
        self.seq[slot] = seq
        self.event_time[slot] = event_time
        self.clicked[slot] = -1.0

    def hold_run(self, slots: np.ndarray, keys: np.ndarray, ts: np.ndarray,
                 close_at: np.ndarray, seqs: np.ndarray) -> None:
        """Impressions timed by their ``ts``, into their slots, at once."""
        self.key[slots] = keys
        self.ts[slots] = ts
        self.close_at[slots] = close_at
        self.seq[slots] = seqs
        self.event_time[slots] = True
        self.clicked[slots] = -1.0

    def snapshot(self, slot: int) -> Pending:
        return (float(self.ts[slot]), float(self.close_at[slot]), int(self.seq[slot]),
                bool(self.event_time[slot]), float(self.clicked[slot]), slot)


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
        #: id key -> its slot while pending, ``CLOSED`` while remembered as closed (one map
        #: for both: closing an impression overwrites its value in place)
        self.ids = KeyMap()
        self.npending = 0
        #: the pending impressions' rows, and their fields by the same slots
        self.arena = RowArena()
        self.fields = PendingFields()
        #: (seq, slot) in arrival order, for ``--max-pending``; closed ones are skipped when
        #: they surface
        self._arrivals: deque[tuple[int, int]] = deque()
        #: the impressions each clock closes; closed entries are skipped when they surface
        self._by_event = CloseQueue()
        self._by_arrival = CloseQueue()
        self.watermark = -math.inf
        self.clock = -math.inf
        #: an event-time impression came in past its window: the next event closes it
        self._stale = False
        self.seq = 0
        #: the ids closed, in closing order (the last ``CLOSED_KEPT`` are kept in ``ids``)
        self._closed_ids = ClosedIds()
        self.counts = dict.fromkeys(COUNTERS, 0)
        #: requests applied (not kept in checkpoints): a checkpoint is due when it moved
        self.changes = 0
        self.delays = [0] * len(DELAY_BUCKETS)

    @property
    def pending(self) -> dict[int, Pending]:
        """The pending impressions by id key, in arrival order (a snapshot, built for each
        call: for tests and inspection, not for the request path)."""
        fields = self.fields
        slots = self._held()
        return {key: fields.snapshot(slot)
                for key, slot in zip(fields.key[slots].tolist(), slots.tolist(), strict=True)}

    def _held(self) -> np.ndarray:
        """The slots holding pending impressions, in arrival order."""
        slots = np.flatnonzero(self.fields.seq >= 0)
        return slots[np.argsort(self.fields.seq[slots], kind="stable")]

    @property
    def closed(self) -> list[int]:
        """The ids remembered as closed, oldest first."""
        return self._closed_ids.kept().tolist()  # type: ignore[no-any-return]

    # -- requests --------------------------------------------------------------------------

    def impressions(self, keys: list[int], ts: list[float | None], rows: Rows,
                    at: float) -> tuple[ToLearn, list[bool]]:
        """Remember impressions (``ts`` None: arrival time ``at``) and their rows (one
        each); returns the rows to learn now and whether each impression was new (a
        repeated pending id is not)."""
        arena = self.arena
        slots = arena.add(rows)
        self.fields.ensure(len(arena.positions))
        out = ToLearn(arena)
        self.changes += 1
        shared = self.shared
        if not shared:
            self._arrive(at, out)
            if not self.max_pending and self._in_order(ts):
                return out, self._in_order_impressions(keys, ts, slots, out)  # type: ignore[arg-type]
        else:
            if not self.cursor and keys:
                # the first impression: read the click stream from a little before it (its
                # clicks come after it; the margin is for clocks of hosts that disagree).
                # From the logged arrival time, so a replay starts at the same place
                self.cursor = f"{max(0, int((at - CURSOR_MARGIN) * 1000))}-0"
            if not self.max_pending and _ascending(ts) \
                    and self._shared_impressions(keys, ts, slots, out):  # type: ignore[arg-type]
                return out, [True] * len(keys)
        added = []
        # locals: this loop runs once per impression
        ids, fields, counts = self.ids, self.fields, self.counts
        window, fnw, bounded = self.window, self.policy == "fnw", self.max_pending
        counts["impressions"] += len(keys)
        by_event, by_arrival = self._by_event, self._by_arrival
        duplicated: list[int] = []
        learn_slots, learn_labels, learn_weights = out.slots, out.labels, out.weights
        # whether each id is held, looked up at once (a call an impression cost more than
        # the rest of its work): one absent then is absent now unless this request added it
        # (``new``); one held then is held now unless a closed id was forgotten since
        # (``forgets`` moved), and then it is looked up again
        found = ids.get_many(np.array(keys, dtype=np.uint64)).tolist()
        forgets = self._closed_ids.forgotten
        new: set[int] = set()
        for key, t, slot, held in zip(keys, ts, slots, found, strict=True):
            event_time = t is not None
            when = at if t is None else t
            if shared:  # closed by the tick, with the shared watermark
                if event_time and when > self.seen:
                    self.seen = when
            # only a watermark that moves, or an impression that came in already past its
            # window, can close anything (skipping the call is most of an event's cost)
            elif event_time and (when > self.watermark or self._stale):
                # the smallest close time, pending or not
                if self._stale or by_event.first_close() < when:
                    self._advance(when, self.clock, out)
                else:  # the watermark moves, and closes nothing
                    self.watermark = when
            if (held != ABSENT or key in new) and (
                    self._closed_ids.forgotten == forgets or ids.get(key) != ABSENT):
                counts["duplicates"] += 1
                added.append(False)
                duplicated.append(slot)
                continue
            if bounded and self.npending >= bounded:
                self._close(self._oldest(), out, "closed_early")
            seq = self.seq
            close_at = when + window
            ids.put(key, slot)
            new.add(key)
            fields.hold(slot, key, when, close_at, seq, event_time)
            self.npending += 1
            entry = (close_at, seq, slot)
            if event_time:
                by_event.push(entry)
                if close_at < self.watermark:
                    self._stale = True
            else:
                by_arrival.push(entry)
            if bounded:
                self._arrivals.append((seq, slot))
            self.seq = seq + 1
            added.append(True)
            if fnw:  # learned at once as a (maybe fake) negative
                learn_slots.append(slot)
                learn_labels.append(0.0)
                learn_weights.append(FNW_WEIGHT)
                counts["learned_negatives"] += 1
        arena.release(duplicated)
        return out, added

    def _in_order(self, ts: list[float | None]) -> bool:
        """Whether a request's impressions can be taken in one step: each with a ``ts``, in
        order, within one window of each other, none already past its window. Then the
        closes each one's ``ts`` makes happen all precede every close of one of them (none
        closes another), so moving the watermark once, to the last ``ts``, closes the
        same impressions in the same order as moving it impression by impression."""
        if len(ts) < 2 or not _ascending(ts):
            return False
        first, last = ts[0], ts[-1]
        assert first is not None and last is not None
        return last - first <= self.window and first + self.window >= self.watermark

    def _in_order_impressions(self, keys: list[int], ts: list[float], slots: list[int],
                              out: ToLearn) -> list[bool]:
        """``impressions`` of a request ``_in_order`` accepts (memory store, unbounded)."""
        if ts[-1] > self.watermark or self._stale:
            self._advance(ts[-1], self.clock, out)
        n = len(keys)
        if self._add_new(keys, ts, slots, out):
            return [True] * n
        ids, by_event, window, fields = self.ids, self._by_event, self.window, self.fields
        added = []
        duplicated: list[int] = []
        for key, t, slot in zip(keys, ts, slots, strict=True):
            if ids.get(key) != ABSENT:
                added.append(False)
                duplicated.append(slot)
                continue
            close_at = t + window
            ids.put(key, slot)
            fields.hold(slot, key, t, close_at, self.seq, True)
            by_event.push((close_at, self.seq, slot))
            self.seq += 1
            added.append(True)
        self.npending += n - len(duplicated)
        self.counts["impressions"] += n
        self.counts["duplicates"] += len(duplicated)
        if self.policy == "fnw":
            self._learn_shown([s for s, a in zip(slots, added, strict=True) if a], out)
        self.arena.release(duplicated)
        return added

    def _shared_impressions(self, keys: list[int], ts: list[float], slots: list[int],
                            out: ToLearn) -> bool:
        """``impressions`` in shared mode (a request closes nothing there) of new ids timed
        by their ``ts``, in order, at once; False, having done nothing, when an id is not
        new (then they are taken one at a time)."""
        if not self._add_new(keys, ts, slots, out):
            return False
        self.seen = max(self.seen, ts[-1])
        if ts[0] + self.window < self.watermark:  # already past the agreed watermark
            self._stale = True
        return True

    def _add_new(self, keys: list[int], ts: list[float], slots: list[int], out: ToLearn
                 ) -> bool:
        """Add impressions timed by their ``ts``, in order, at once, if every id is new (none
        held, none twice); else do nothing and return False."""
        where = np.array(slots, dtype=np.int64)
        key_array = np.array(keys, dtype=np.uint64)
        if not self.ids.add_new(key_array, where):
            return False
        n, seq = len(keys), self.seq
        times = np.array(ts, dtype=np.float64)
        close = times + self.window
        seqs = np.arange(seq, seq + n, dtype=np.int64)
        self.fields.hold_run(where, key_array, times, close, seqs)
        self._by_event.add_sorted(close, seqs, where)
        self.npending += n
        self.counts["impressions"] += n
        if self.policy == "fnw":
            self._learn_shown(slots, out)
        self.seq = seq + n
        return True

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
        # the ids looked up at once (a call a click cost more than the rest of its work);
        # ``_click`` checks what closed since
        found = self.ids.get_many(np.array(keys, dtype=np.uint64)).tolist()
        for key, t, label, value in zip(keys, ts, labels, found, strict=True):
            if shared:
                if t is not None and t > self.seen:
                    self.seen = t
            elif t is not None and (t > self.watermark or self._stale):
                self._advance(t, self.clock, out)
            if shared and value == ABSENT:  # (shared: a request closes nothing)
                self.counts["forwarded"] += 1  # published for the worker that holds it
                continue
            self._click(key, t, label, at, out, value)
        return out

    def owns(self, key: int) -> bool:
        """Whether this worker holds the impression ``key`` (pending, or closed recently)."""
        return self.ids.get(key) != ABSENT

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

    def _click(self, key: int, t: float | None, label: int, at: float, out: ToLearn,
               found: int | None = None) -> None:
        """One click (label 1) or explicit negative (label 0) on ``key``; ``found``: its
        value in ``ids`` earlier in the same feedback request (which adds no ids)."""
        slot = self.ids.get(key) if found is None else found
        if found is not None and found != ABSENT and (found == CLOSED
                                                       or self.fields.seq[found] < 0):
            # closed, and maybe forgotten since, or closed since (its slot is not reused
            # before the next ``impressions``): as it is now
            slot = self.ids.get(key)
        if slot < 0:
            self.counts["unknown" if slot == ABSENT else "late"] += 1
            return
        fields = self.fields
        # a click without ts happens "now" on its impression's clock
        when = t if t is not None else self.watermark if fields.event_time[slot] else at
        if when > fields.close_at[slot]:  # its clock has not passed the window yet, the click has
            self.counts["late"] += 1
            return
        if label == 0:
            self._close(slot, out, "closed_by_label")
            return
        if fields.clicked[slot] >= 0:
            self.counts["repeated_clicks"] += 1
            return
        delay = max(0.0, when - float(fields.ts[slot]))
        fields.clicked[slot] = delay
        self.counts["joined"] += 1
        self.delays[_bucket(delay)] += 1
        if self.policy == "fnw":  # the positive copy, now
            out.add(slot, 1.0, FNW_WEIGHT)
            self.counts["learned_positives"] += 1

    def due(self, now: float) -> bool:
        """Whether advancing the arrival clock to ``now`` would close an impression."""
        top = self._by_arrival.live(self.fields.seq)
        return top is not None and top[0] < now

    def due_event(self, watermark: float) -> bool:
        """Whether advancing the watermark to ``watermark`` would close an impression."""
        top = self._by_event.live(self.fields.seq)
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
        ev, ar, seqs = self._by_event, self._by_arrival, self.fields.seq
        watermark, clock = self.watermark, self.clock
        if not ar:  # every impression timed by its ts (the usual case): one queue
            self._expire(watermark, out)
            return
        while True:
            e = ev.live(seqs)
            a = ar.live(seqs)
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
        (``expired``) of each one whose ``close_at`` it passed, in order."""
        by_event, pending_seq = self._by_event, self.fields.seq
        if by_event.first_close() >= watermark:
            return  # none (most clicks' ts, when they come a request at a time)
        if by_event.heap or by_event.one_due(watermark):
            # one at a time, with scalars (an impression's or a click's ts moving the
            # watermark past one or two)
            while (top := by_event.live(pending_seq)) is not None and top[0] < watermark:
                by_event.pop()
                self._close(top[2], out, "expired")
            return
        seqs, slots = by_event.take_below(watermark)  # in order: one cut of the run
        live = pending_seq[slots] == seqs
        if not live.all():
            # some closed already (a label 0, --max-pending; their slots maybe holding
            # another impression since, under a new seq): left out
            slots = slots[live]
        if slots.size:
            self._closed(slots, out, "expired")

    def _oldest(self) -> int:
        """The slot of the oldest pending impression."""
        arrivals, pending_seq = self._arrivals, self.fields.seq
        while True:
            seq, slot = arrivals[0]
            if pending_seq[slot] == seq:
                return slot
            arrivals.popleft()

    def _close(self, slot: int, out: ToLearn, why: str) -> None:
        """``_closed`` of one impression, with scalars (a close at a time: ``--max-pending``,
        a label 0, the arrival clock; arrays of one cost several times the work)."""
        fields = self.fields
        key = int(fields.key[slot])
        clicked = bool(fields.clicked[slot] >= 0)
        fields.seq[slot] = -1
        self.ids.put(key, CLOSED)
        forgotten = self._closed_ids.add_one(key, CLOSED_KEPT)
        if forgotten is not None:  # ``CLOSED`` (see ``_closed``)
            self.ids.remove(forgotten)
        self.npending -= 1
        self.arena.release([slot])
        self._learn_closed([key], [slot], [clicked], out, why)

    def _closed(self, slots: np.ndarray, out: ToLearn, why: str) -> None:
        """Close the pending impressions of ``slots``, in closing order: count them as
        ``why``, free their rows (readable until the next add) and, with ``wait``, learn
        them: label 1 if a click joined, else 0 (a negative kept with probability
        ``negative_rate``, weighted 1/rate)."""
        fields = self.fields
        keys = fields.key[slots]
        clicked = fields.clicked[slots] >= 0
        fields.seq[slots] = -1
        self.ids.set_present(keys, CLOSED)
        # a remembered id is never pending (shown again, it is a duplicate): those
        # forgotten now are each ``CLOSED``; a click on one is ``unknown`` from now on
        self.ids.delete(self._closed_ids.add(keys, CLOSED_KEPT))
        self.npending -= len(keys)
        slot_list: list[int] = slots.tolist()
        self.arena.release(slot_list)
        self._learn_closed(keys, slot_list, clicked.tolist(), out, why)

    def _learn_closed(self, keys: np.ndarray | list[int], slots: list[int],
                      clicked: list[bool], out: ToLearn, why: str) -> None:
        """The closing of ``_closed`` and ``_close``: the counts and, with ``wait``, the rows
        to learn."""
        counts = self.counts
        counts[why] += len(slots)
        if self.policy != "wait":
            return  # fnw learned the impression when it came, and its click when it came
        positives = sum(clicked)
        rate = self.negative_rate
        if rate >= 1.0:
            out.slots.extend(slots)
            out.labels.extend([1.0 if c else 0.0 for c in clicked])
            out.weights.extend([1.0] * len(slots))
            counts["learned_positives"] += positives
            counts["learned_negatives"] += len(slots) - positives
            return
        weight = subsampled_weight(rate)
        keys = keys.tolist() if isinstance(keys, np.ndarray) else keys
        for key, slot, label in zip(keys, slots, clicked, strict=True):
            if label:
                out.add(slot, 1.0, 1.0)
                counts["learned_positives"] += 1
            elif coin(key) < rate:
                out.add(slot, 0.0, weight)
                counts["learned_negatives"] += 1
            else:
                counts["negatives_dropped"] += 1

    # -- reading and persistence -----------------------------------------------------------

    def bytes_held(self) -> int:
        """Bytes the pending impressions hold, and the closed ids remembered beside them:
        the arena's and the fields' arrays, the ``ids`` map's table and the closed ids'
        array (all of them, free room too), and 24 bytes a live close queue entry (entries,
        not the queues' capacities, which depend on the order impressions came in)."""
        if self.npending == 0:
            return 0
        # each pending impression has one live entry in a close queue (and one in the
        # arrivals when bounded); stale ones wait to surface and are not counted
        queued = self.npending * (2 if self.max_pending else 1)
        return (self.arena.nbytes() + self.fields.nbytes() + 24 * queued
                + self.ids.nbytes() + self._closed_ids.keys.nbytes)

    def status(self) -> dict[str, object]:
        n = self.npending
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
        where = self._held()
        fields = self.fields
        indptr, keys, features, values = self.arena.gather(where)
        records = np.empty(len(keys), dtype=FEATURE)
        records["key"], records["field"], records["value"] = keys, features, values
        return {
            "keys": fields.key[where],
            "ts": fields.ts[where],
            "close_at": fields.close_at[where],
            "seq": fields.seq[where],
            "event_time": fields.event_time[where],
            "clicked": fields.clicked[where],
            "row_sizes": FEATURE_BYTES * np.diff(indptr),
            "rows": records.view(np.uint8),
            "closed": self._closed_ids.kept().copy(),
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
        fields = self.fields = PendingFields()
        fields.ensure(len(self.arena.positions))
        where = np.array(slots, dtype=np.int64)
        fields.key[where] = arrays["keys"]
        fields.ts[where] = arrays["ts"]
        fields.close_at[where] = arrays["close_at"]
        fields.seq[where] = arrays["seq"]
        fields.event_time[where] = arrays["event_time"]
        fields.clicked[where] = arrays["clicked"]
        self.npending = n
        kept = np.ascontiguousarray(arrays["closed"], dtype=np.uint64)
        self.ids = KeyMap()
        if not (self.ids.add_new(kept, np.full(len(kept), CLOSED, dtype=np.int64))
                and self.ids.add_new(np.ascontiguousarray(arrays["keys"], dtype=np.uint64),
                                     where)):
            raise ValueError("a join checkpoint with an id twice (pending or closed)")
        self._closed_ids = ClosedIds(kept)
        self._by_event, self._by_arrival = CloseQueue(), CloseQueue()
        entries = sorted(zip(arrays["close_at"].tolist(), arrays["seq"].tolist(), slots,
                             arrays["event_time"].tolist(), strict=True))
        for close_at, seq, slot, event_time in entries:  # in order: a run, no heap
            (self._by_event if event_time else self._by_arrival).push((close_at, seq, slot))
        if self.max_pending:
            self._arrivals = deque(sorted(zip(arrays["seq"].tolist(), slots, strict=True)))
        clocks = [float(x) for x in arrays["clocks"]]
        self.watermark, self.clock, self.seq = clocks[0], clocks[1], int(clocks[2])
        if len(clocks) > 3:  # written by a shared (Redis) worker
            self.seen = clocks[3]
        if "cursor" in arrays:
            self.cursor = arrays["cursor"].tobytes().decode()
        for name, value in zip(COUNTERS, arrays["counts"].tolist(), strict=False):
            self.counts[name] = int(value)
        self.delays = [int(x) for x in arrays["delays"].tolist()]


def _ascending(ts: list[float | None]) -> bool:
    """Whether every event has a ``ts``, in order."""
    if not ts or None in ts:
        return False
    t = np.array(ts, dtype=np.float64)
    return bool((t[1:] >= t[:-1]).all())


def _bucket(delay: float) -> int:
    """The first bucket whose bound is at least ``delay``."""
    return min(bisect.bisect_left(DELAY_BUCKETS, delay), len(DELAY_BUCKETS) - 1)

"""The join's requests, run by the learner under its learn lock: parse and check, append
to the write-ahead log, then act (score, remember, close, learn) with no ``await`` in
between -- the same code learns the log again at start-up (``record=None``), so pending
impressions, clocks, counters and the model come back exactly as they were.

The log holds the requests, not the rows learned: ``IMPRESSIONS``, ``PREDICT_LOG``
(``/v1/predict`` with ``"log": true``) and ``FEEDBACK`` records (a ``TrainRecord``: body,
Idempotency-Key, arrival time) and ``JOIN_TICK`` (the background tick's time, when it closed
something). Replaying them in order replays every close; rows first learned here carry no
feature names (they are kept packed, as keys).

With a Redis state store (``join.marks``): feedback for ids this worker does not hold is
published in Redis before it is logged, and the shared tick (``marks_tick``) logs what it
read (``JOIN_MARKS``) before applying it. Learning the log again after a restart replays
the records the worker's last flush already carried without learning them (``learn``
False): their rows are in the shared state.

A live request (``record`` given, ``at`` the wall clock on arrival) with a ``ts`` more than
a day ahead of ``at`` is refused (``join.bodies.check_not_ahead``); a replayed one is not
checked again: what was logged was accepted, whichever version logged it.
"""

from __future__ import annotations

import zlib

import numpy as np

from ftrl_core.batch import Batch
from ftrl_core.readers.jsonl import EventError, JsonlFormat, event_ids, parse_event_array
from ftrl_core.spans import Rows

from ..events import body_problem
from ..join.bodies import check_ids, check_not_ahead, feedback_events, impression_times
from ..join.ids import id_key, id_keys, plain_keys
from ..join.marks import ClickMarks, Clicks, Tick, only
from ..join.pending import FNW_WEIGHT, JoinState, ToLearn
from ..join.policies import fnw_weights
from ..stores import StoreUnavailable
from ..stores.wal import Kind
from .training import Training

JOIN_PART = "join"
#: a feedback answer's counts: (its name, the ``JoinState`` counter it is the change of)
FEEDBACK_COUNTS = (("joined", "joined"), ("closed", "closed_by_label"), ("late", "late"),
                   ("unknown", "unknown"), ("repeated", "repeated_clicks"),
                   ("forwarded", "forwarded"))


def fingerprint(kind: Kind, body: bytes | bytearray | memoryview) -> int:
    """An Idempotency-Key's fingerprint of a join request: its body's, salted by the kind,
    so a key used for /v1/train or the other join route is a key reused."""
    return zlib.crc32(body, 0x9E3779B1 + int(kind))


class Joining:
    def __init__(self, training: Training, state: JoinState,
                 marks: ClickMarks | None = None) -> None:
        self.training = training
        self.state = state
        #: the shared side (Redis store); None: one worker, memory store
        self.marks = marks
        #: False while replaying records whose rows the shared state holds already
        self.learn = True
        self._lenient: tuple[JsonlFormat, JsonlFormat] | None = None

    def impressions(self, body: bytes | bytearray | memoryview, record: bytes | None,
                    at: float, *, lenient: bool = False, logged: int = 0,
                    ids_required: bool = True) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Score and remember the impressions of a body: (p, uncertainty, model version,
        log ticket); raises a 422 having done nothing. ``ids_required=False`` (``/v1/predict``
        with ``"log": true``): events without an id are scored, not remembered."""
        t = self.training
        fields = t.fields
        # the learner's own format: the fields are the model's when the rows are learned
        fmt = self._format(lenient)
        result = parse_event_array(body, fmt, require_label=False, ignore_label=True)
        errors: list[EventError] = list(result.errors)
        if not errors and t.store.shared:  # agree on new fields' ids with the other workers
            while t._share(result.batch.rows):  # renumbered: parse again
                result = parse_event_array(body, self._format(lenient), require_label=False,
                                           ignore_label=True)
            errors = list(result.errors)
        batch = result.batch
        ids: list[str | None] = []
        times: list[float | None] = []
        # read as it is (a copy of a 600 KB body costs what scoring 50 of its events does)
        raw = body if isinstance(body, bytes | bytearray) else bytes(body)
        keys: list[int] | None = None
        if not errors:
            keys = plain_keys(batch)
            if keys is None:  # an id missing, escaped, empty or long: checked in full
                ids = event_ids(batch)
                check_ids(ids, errors, ids_required)
            times = impression_times(raw, batch.rows, errors, batch)
            if record is not None:  # a live request (what the log holds is learned again)
                check_not_ahead(times, at, errors)
        if errors:
            if fields.grew:
                fields.rollback()
            raise body_problem(bytes(body), sorted(errors, key=lambda e: e.index),
                               "nothing was recorded")
        ticket = self._append(Kind.IMPRESSIONS if ids_required else Kind.PREDICT_LOG,
                              record, logged)
        p, u = t.model.predict(batch)
        shown: list[int] | range
        if keys is not None:  # every event has its id
            shown = range(batch.rows)
            rows = Rows(batch.indptr, batch.keys, batch.fields, batch.values, shown)
            todo, added = self.state.impressions(keys, times, rows, at)
        else:
            shown = [i for i, value in enumerate(ids) if value is not None]
            rows = Rows(batch.indptr, batch.keys, batch.fields, batch.values, shown)
            keys = [id_key(ids[i]) for i in shown]  # type: ignore[arg-type]
            todo, added = self.state.impressions(keys, [times[i] for i in shown], rows, at)
        scored = None
        if self.state.policy == "fnw" and len(todo):
            # fnw learns exactly the new impressions, now: their p is the one just
            # computed (the model has not moved since), not computed again
            new = [i for i, a in zip(shown, added, strict=True) if a]
            if len(new) == len(todo):
                scored = p[new]
        self._learn(todo, ticket, scored)
        fields.commit()
        return p, u, t.model.rows, ticket

    def _format(self, lenient: bool) -> JsonlFormat:
        """The learner's format, never strict: an impression carries the join's own keys
        (``ts``; ``type`` in ``gen_events.py``'s streams) beside an event's, which
        ``--strict`` would refuse as unknown. Kept while the learner's format is the same
        object (it is replaced when fields are rolled back or renumbered)."""
        fields = self.training.fields
        if not (lenient or fields.strict):
            return fields.format
        if self._lenient is None or self._lenient[0] is not fields.format:
            self._lenient = (fields.format, fields.lenient_format())
        return self._lenient[1]

    def feedback(self, body: bytes | bytearray | memoryview, record: bytes | None, at: float,
                 *, logged: int = 0) -> tuple[np.ndarray, int, int]:
        """Join a feedback body: (its counts, ``FEEDBACK_COUNTS`` in order; model version;
        log ticket); a 422 does nothing."""
        errors: list[EventError] = []
        ids, times, labels = feedback_events(bytes(body), errors)
        if record is not None:
            check_not_ahead(times, at, errors)
        if errors:
            raise body_problem(bytes(body), sorted(errors, key=lambda e: e.index),
                               "nothing was joined")
        keys = id_keys(ids)
        if record is not None and self.marks is not None:
            # published before it is logged and answered; a crash between the two makes the
            # retry publish them again: the owner counts the copy as a repeated click
            owns = self.state.owns
            away = [i for i, k in enumerate(keys) if not owns(k)]
            if away:
                self.marks.publish([keys[i] for i in away], [times[i] for i in away],
                                   [labels[i] for i in away], at)
        ticket = self._append(Kind.FEEDBACK, record, logged)
        counts = self.state.counts
        before = [counts[c] for _, c in FEEDBACK_COUNTS]
        todo = self.state.feedback(keys, times, labels, at)
        self._learn(todo, ticket)
        done = np.array([counts[c] - b for (_, c), b in zip(FEEDBACK_COUNTS, before,
                                                              strict=True)], dtype=np.int64)
        return done, self.training.model.rows, ticket

    def tick(self, now: float, record: bytes | None, *, logged: int = 0) -> int:
        """Advance the arrival clock: close what it passes. Returns the log ticket."""
        ticket = self._append(Kind.JOIN_TICK, record, logged)
        self._learn(self.state.tick(now), ticket)
        return ticket

    def marks_tick(self, now: float, read: tuple[float, str, Clicks] | None = None,
                   read_from: str = "", *, logged: Tick | None = None, seq: int = 0) -> int:
        """The shared tick: apply what ``ClickMarks.read`` found from the cursor
        ``read_from`` (the agreed watermark, the new cursor, the clicks other workers
        published): log the clicks this worker holds, apply them, then close what the
        watermark (and the arrival clock, ``now``) passed. ``logged``: the tick as the log
        holds it (a replay). Returns the log ticket (0: nothing logged)."""
        state = self.state
        if logged is None:
            assert read is not None
            if state.cursor != read_from:
                # the first impression set the cursor meanwhile: read again from it
                return 0
            wm, cursor, every = read
            clicks = only(every, state.owns)
            tick = Tick(wm, now, cursor, clicks)
            # nothing read, no clock moved that closes anything: not logged (the watermark
            # is left where the log has it, so a replay reads the same clicks the same way;
            # an impression that came in already past its window is due too)
            if not len(clicks) and cursor == state.cursor and not state.due(now) \
                    and wm <= state.watermark and not state.due_event(wm):
                return 0
            seq = self._append(Kind.JOIN_MARKS, tick.encode(), 0)
        else:
            tick = logged
        c = tick.clicks
        self._learn(state.marks(c.keys, c.ts, c.labels, c.ats), seq)
        state.cursor = tick.cursor
        self._learn(state.advance(tick.watermark, tick.now), seq)
        return seq

    def _append(self, kind: Kind, record: bytes | None, logged: int) -> int:
        if record is None:
            return logged
        try:
            check = getattr(self.training.store, "check_writable", None)
            if check is not None:  # a degraded shared store: refused before anything is done
                check()
            return self.training.store.append(int(kind), record)
        except StoreUnavailable:
            fields = self.training.fields
            if fields.grew:
                fields.rollback()
            raise

    def _learn(self, todo: ToLearn, seq: int, scored: np.ndarray | None = None) -> None:
        """Learn the rows a request closed or added, in order, as one batch. ``scored``:
        the model's p of each row, when the caller has it (fnw weights need it)."""
        if not len(todo) or not self.learn:
            return
        t = self.training
        indptr, keys, fields, values = todo.csr()
        labels = np.array(todo.labels, dtype=np.float64)
        weights = np.array(todo.weights, dtype=np.float64)
        batch = Batch(indptr, keys, fields, values, labels, weights)
        fnw = weights == FNW_WEIGHT
        if fnw.any():
            # the weights' p: the model's prediction now, a constant (policies)
            p = scored if scored is not None else t.model.predict(batch)[0]
            weights[fnw] = fnw_weights(p[fnw], labels[fnw])
        # through the store's hooks: a shared store tracks the deltas to flush
        # (not refused here: the request is logged already; ``_append`` refused a degraded
        # store before anything was)
        track = getattr(t.store, "track_learn", None)
        if track is not None:
            track(t.model, batch)
        else:
            t.store.before_learn(t.model, batch)
        t.model.learn(batch)
        for v in t.variants:
            v.model.learn(batch)
        t.store.after_learn(t.model, batch, seq)
        t.counters.learned += batch.rows

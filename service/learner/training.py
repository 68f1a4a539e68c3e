"""Learning one request: parse, agree on fields, log, learn — the section run under the
learn lock, with no ``await`` inside, so a batch is learned whole or not at all and batches
are learned in arrival order (which is also the log's order).

The same code learns the write-ahead log again at start-up (``log=False``): a record is
parsed and learned exactly as the request it came from, so the model it rebuilds is the
one that was lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ftrl_core.batch import Batch
from ftrl_core.fields import OVERFLOW_FIELD
from ftrl_core.model import Model
from ftrl_core.readers.jsonl import EventError, parse_event_array, parse_events

from ..events import body_problem
from ..stores import StateStore, StoreUnavailable
from ..stores.wal import Kind
from ..variants import Variant
from .fields import FieldNumbering


@dataclass
class Learned:
    """What one locked section learned."""

    p: np.ndarray  # of the learned events, each predicted before it was learned
    labels: np.ndarray
    version: int  # the model version after it
    ticket: int = 0  # for ``StateStore.durable``
    errors: list[EventError] = field(default_factory=list)  # lines skipped (streams)


@dataclass
class Counters:
    """Events learned and refused, for /metrics."""

    learned: int = 0
    rejected: int = 0
    #: feature occurrences learned in the overflow field (fields past the registry's
    #: capacity), since the process started
    overflow_features: int = 0


class Training:
    def __init__(self, model: Model, fields: FieldNumbering, variants: list[Variant],
                 store: StateStore, counters: Counters) -> None:
        self.model = model
        self.fields = fields
        self.variants = variants
        self.store = store
        self.counters = counters

    def batch(self, body: bytes | bytearray | memoryview, record: bytes | None,
              *, lenient: bool = False, logged: int = 0) -> Learned:
        """Learn a ``{"events": [...]}`` body whole, or raise a problem having learned
        nothing. ``record``: the log record to append first (None: learning the log again,
        ``logged`` being the record's sequence number)."""
        fmt = self.fields.lenient_format() if lenient else self.fields.format
        result = parse_event_array(body, fmt, require_label=True)
        if result.errors:
            if self.fields.grew:
                self.fields.rollback()
            self.counters.rejected += result.batch.rows + len(result.errors)
            raise body_problem(bytes(body), sorted(result.errors, key=_by_index),
                               "nothing was learned")
        while self._share(result.batch.rows):  # renumbered: parse again
            result = parse_event_array(body, self._fmt(lenient), require_label=True)
        return self._learn(result.batch, Kind.BATCH, record, logged)

    def lines(self, piece: bytes | bytearray | memoryview, record: bytes | None,
              *, lenient: bool = False, logged: int = 0) -> Learned:
        """Learn the good NDJSON lines of ``piece`` in order; bad lines are skipped (those
        the scanner refuses register no field) and returned."""
        result = parse_events(piece, self._fmt(lenient), require_label=True)
        while self._share(result.batch.rows):  # renumbered: parse again
            result = parse_events(piece, self._fmt(lenient), require_label=True)
        self.counters.rejected += len(result.errors)
        done = self._learn(result.batch, Kind.LINES, record, logged)
        done.errors = result.errors
        return done

    def _fmt(self, lenient: bool):  # type: ignore[no-untyped-def]
        return self.fields.lenient_format() if lenient else self.fields.format

    def _share(self, rows: int) -> bool:
        try:
            return self.fields.share(self.store)
        except Exception:
            self.counters.rejected += rows
            raise

    def _learn(self, batch: Batch, kind: Kind, record: bytes | None, logged: int) -> Learned:
        model = self.model
        if batch.rows == 0:
            return Learned(np.empty(0), batch.labels, model.rows)
        try:
            self.store.before_learn(model, batch)
            seq = self.store.append(int(kind), record) if record is not None else logged
        except StoreUnavailable:
            if self.fields.grew:
                self.fields.rollback()
            self.counters.rejected += batch.rows
            raise
        p = model.learn(batch)
        for v in self.variants:
            v.model.learn(batch)
        ticket = self.store.after_learn(model, batch, seq)
        self.counters.learned += batch.rows
        if model.registry.has_overflow:
            self.counters.overflow_features += int(
                np.count_nonzero(batch.fields == OVERFLOW_FIELD))
        self.fields.commit()
        return Learned(p, batch.labels, model.rows, ticket)


def _by_index(err: EventError) -> int:
    return err.index

"""What every learner shares: hyperparameters, per-field overrides, the state table, and
the calls into its kernels. A learner is one file that sets the class attributes below and
provides three kernels with the uniform signatures documented on ``Optimizer``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import numpy as np

from ..admission import Admission, AdmitSpec
from ..batch import Batch
from ..bounded import MemoryBounds, make_bounds
from ..eviction import Eviction
from ..hashing import HASHED_FIELD
from ..table import StateTable

#: per-field parameter arrays cover every field id, the hashed-mode tag included
N_FIELD_SLOTS = HASHED_FIELD + 1
BIAS_FIELD = 0


def _base(batch: Batch) -> np.ndarray:
    """Each row's initial margin (VW's "initial prediction"; zeros unless the data has one)."""
    return batch.base if batch.base is not None else np.zeros(batch.rows)


class Optimizer:
    """A per-coordinate sparse online learner over a state table.

    Kernels (module-level, compiled) take plain arrays:

    - ``learn(words, stride, capacity, meta, indptr, keys, fields, values, labels, weights,
      base, hyper, field_l1, field_l2, counters, p_out, new_pos) -> n_new``: for each row,
      predict (``p_out``; the margin starts at ``base[r]``), then learn; coordinates seen
      for the first time are inserted and their feature positions written to ``new_pos``.
      Before a row whose features could take the table past ``meta[1]`` live keys it stops;
      ``meta[2]`` is the number of rows learned.
    - ``predict(words, stride, capacity, indptr, keys, fields, values, base, hyper,
      field_l1, field_l2, counters, p_out, u_out)``: probabilities and McMahan's
      uncertainty score.
    - ``weights(words, stride, capacity, keys, fields, hyper, field_l1, field_l2, counters,
      w_out)``: the weights the dense algorithm would hold now (0 for absent keys).
    """

    name: ClassVar[str]
    #: 64-bit words per record, the key included
    stride: ClassVar[int]
    #: hyperparameters in the order the kernels read them from ``hyper``, with defaults
    defaults: ClassVar[dict[str, float]]
    #: the hyperparameter that ``--field-l1`` overrides per field (and ``--field-l2``)
    l1_param: ClassVar[str]
    l2_param: ClassVar[str | None] = None
    #: names of the state columns, in record order, and their dtype
    state_names: ClassVar[tuple[str, ...]]
    state_dtype: ClassVar[type] = np.float64
    #: global counters kept in ``counters`` (step t first), saved with the model
    counter_names: ClassVar[tuple[str, ...]] = ("t",)
    learn_kernel: ClassVar[Any]
    predict_kernel: ClassVar[Any]
    weights_kernel: ClassVar[Any]

    def __init__(self, field_l1: dict[int, float] | None = None,
                 field_l2: dict[int, float] | None = None, **params: float) -> None:
        unknown = set(params) - set(self.defaults) - set(self.extra_params())
        if unknown:
            raise ValueError(f"{self.name}: unknown parameter(s) {', '.join(sorted(unknown))}"
                             f" (known: {', '.join(self.defaults)})")
        self.params: dict[str, float] = {}
        for key, default in self.defaults.items():
            value = float(params.get(key, default))
            self.params[key] = value
        self.configure(params)
        self.validate()
        self.field_l1_overrides = dict(field_l1 or {})
        self.field_l2_overrides = dict(field_l2 or {})
        if self.field_l2_overrides and self.l2_param is None:
            raise ValueError(f"{self.name} has no l2 parameter to override per field")
        for overrides, what in ((self.field_l1_overrides, "field-l1"),
                                (self.field_l2_overrides, "field-l2")):
            for fid, value in overrides.items():
                if not 0 <= fid < N_FIELD_SLOTS:
                    raise ValueError(f"--{what}: field id {fid} out of range")
                if not (math.isfinite(value) and value >= 0):
                    raise ValueError(f"--{what}: value must be finite and >= 0, got {value}")
        self.table = StateTable(self.stride)
        self.counters = np.zeros(max(4, len(self.counter_names)), dtype=np.float64)
        #: admission and eviction (``--admit``, ``--evict-idle``, ``--max-coordinates``);
        #: None: every feature gets a coordinate at once and keeps it
        self.bounds: MemoryBounds | None = None
        self._rebuild_arrays()

    def set_bounds(self, bounds: MemoryBounds | None) -> None:
        """Bound memory by ``bounds`` from now on (None: no bounds)."""
        self.bounds = bounds
        if bounds is not None:
            bounds.prepare(self.table)
            bounds.cover_table(self.table)

    def set_admission(self, spec: AdmitSpec | str | None) -> None:
        """Admit new features by ``spec`` from now on (None: admit every feature)."""
        self.set_bounds(make_bounds(spec))

    @property
    def admission(self) -> Admission | None:
        return None if self.bounds is None else self.bounds.admission

    @property
    def eviction(self) -> Eviction | None:
        return None if self.bounds is None else self.bounds.eviction

    # -- configuration -------------------------------------------------------------------

    @classmethod
    def extra_params(cls) -> tuple[str, ...]:
        """Non-numeric parameters a learner accepts (e.g. ``rate``)."""
        return ()

    def configure(self, params: dict[str, Any]) -> None:
        """Hook for non-numeric parameters."""

    def validate(self) -> None:
        for key, value in self.params.items():
            if not math.isfinite(value):
                raise ValueError(f"{self.name}: {key} must be finite, got {value}")

    def require(self, key: str, ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"{self.name}: {key} must be {what}, got {self.params[key]}")

    def _rebuild_arrays(self) -> None:
        self.hyper = np.array(self.hyper_values(), dtype=np.float64)
        l1 = self.params[self.l1_param]
        self.field_l1 = np.full(N_FIELD_SLOTS, l1, dtype=np.float64)
        l2 = self.params[self.l2_param] if self.l2_param else 0.0
        self.field_l2 = np.full(N_FIELD_SLOTS, l2, dtype=np.float64)
        # The bias (field 0) is not regularised unless asked: shrinking the intercept pulls
        # every prediction towards 0.5 (measured: 0.0001 logloss on real Criteo rows).
        self.field_l1[BIAS_FIELD] = 0.0
        self.field_l2[BIAS_FIELD] = 0.0
        for fid, v in self.field_l1_overrides.items():
            self.field_l1[fid] = v
        for fid, v in self.field_l2_overrides.items():
            self.field_l2[fid] = v

    def hyper_values(self) -> list[float]:
        return [self.params[k] for k in self.defaults]

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "optimizer": self.name, "params": dict(self.params),
            "field_l1": {str(k): v for k, v in self.field_l1_overrides.items()},
            "field_l2": {str(k): v for k, v in self.field_l2_overrides.items()}}
        if self.bounds is not None:
            out.update(self.bounds.config())
        return out

    @property
    def steps(self) -> int:
        return int(self.counters[0])

    # -- learning and prediction ---------------------------------------------------------

    def learn(self, batch: Batch, new_pos: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """Progressive step over ``batch``: returns (p before learning each row, n_new).

        A row without a label (NaN) is predicted, in its place in the stream, and not
        learned: the step counter does not move (VW does the same with unlabelled examples).
        The positions of features whose key was stored for the first time are written to
        ``new_pos`` (allocated if None and returned through ``self.last_new_pos``).
        """
        p = np.empty(batch.rows, dtype=np.float64)
        if new_pos is None:
            new_pos = np.empty(batch.nnz, dtype=np.int64)
        unlabelled = np.isnan(batch.labels)
        if not unlabelled.any():
            n_new = self._learn_rows(batch, 0, batch.rows, p, new_pos, 0)
        else:
            n_new = 0
            # runs of labelled and unlabelled rows, in order
            edges = np.flatnonzero(np.diff(unlabelled.astype(np.int8))) + 1
            bounds = [0, *edges.tolist(), batch.rows]
            for start, stop in itertools.pairwise(bounds):
                if unlabelled[start]:
                    p[start:stop], _ = self.predict(batch.slice(start, stop))
                else:
                    n_new = self._learn_rows(batch, start, stop, p, new_pos, n_new)
        self.last_new_pos = new_pos[:n_new]
        return p, n_new

    def _learn_rows(self, batch: Batch, start: int, stop: int, p: np.ndarray,
                    new_pos: np.ndarray, n_new: int) -> int:
        """Learn rows ``start:stop`` (all labelled), through the admission gate if any:
        the features not admitted yet are dropped from their rows before the kernel sees
        them, so they neither predict nor learn (and never reach the table); idle records
        the rows meet are deleted first; eviction runs after (``bounded.py``)."""
        if self.bounds is None:
            return self._learn_range(batch, start, stop, p, new_pos, n_new)
        part = batch.slice(start, stop)
        done = 0
        while done < part.rows:
            # up to the next eviction check point (a fixed stream position)
            end = min(part.rows, done + self.bounds.rows_until_check(self.steps))
            sub = part.slice(done, end) if done or end < part.rows else part
            gated, kept, now0 = self.bounds.gate(self.table, sub, self.steps)
            first = start + done
            n_got = self._learn_range(gated, 0, gated.rows, p[first:first + gated.rows],
                                      new_pos, n_new)
            # the kernel reported positions in the gated rows: back to positions in batch
            new_pos[n_new:n_got] = kept[new_pos[n_new:n_got]] + int(batch.indptr[first])
            n_new = n_got
            now = self.bounds.touch(self.table, gated, now0)
            done += gated.rows
            self.bounds.at_row(self.table, now, self.steps)
        return n_new

    def _learn_range(self, batch: Batch, start: int, stop: int, p: np.ndarray,
                     new_pos: np.ndarray, n_new: int) -> int:
        """Learn rows ``start:stop`` (all labelled). The kernel stops before a row whose
        features might not fit under the table's maximum load; the table grows and the
        kernel resumes at that row, so growth follows the keys really inserted (never the
        batch's feature occurrences) and costs the hot path one compare per row."""
        t = self.table
        while start < stop:
            part = batch if start == 0 and stop == batch.rows else batch.slice(start, stop)
            offset = int(batch.indptr[start])
            t.meta[1] = t.room_limit()
            t.meta[2] = 0
            got = int(self.learn_kernel(
                t.words, t.stride, t.capacity, t.meta, part.indptr, part.keys, part.fields,
                part.values, part.labels, part.weights, _base(part), self.hyper,
                self.field_l1, self.field_l2, self.counters, p[start:stop], new_pos[n_new:]))
            if offset:
                new_pos[n_new:n_new + got] += offset
            n_new += got
            start += int(t.meta[2])
            if start < stop:
                t.ensure_room(int(batch.indptr[start + 1] - batch.indptr[start]))
        return n_new

    def predict(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, uncertainty scores) for ``batch``, without learning."""
        return self.predict_csr(batch.indptr, batch.keys, batch.fields, batch.values,
                                _base(batch))

    def predict_csr(self, indptr: np.ndarray, keys: np.ndarray, fields: np.ndarray,
                    values: np.ndarray, base: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """``predict`` on the CSR arrays of a batch, without the ``Batch`` (``base``: each
        row's initial margin, zeros when None)."""
        rows = indptr.size - 1
        p = np.empty(rows, dtype=np.float64)
        u = np.empty(rows, dtype=np.float64)
        t = self.table
        if base is None:
            base = np.zeros(rows)
        if self.bounds is not None:
            keys = self.bounds.visible_keys(t, keys, self.steps)
        self.predict_kernel(t.words, t.stride, t.capacity, indptr, keys, fields, values,
                            base, self.hyper, self.field_l1, self.field_l2, self.counters,
                            p, u)
        return p, u

    def weights(self, keys: np.ndarray, fields: np.ndarray | None = None) -> np.ndarray:
        """The weights of ``keys`` as the dense algorithm would hold them now."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        if fields is None:
            from ..hashing import field_of_keys

            fields = field_of_keys(keys)
        fields = np.ascontiguousarray(fields, dtype=np.int32)
        out = np.empty(keys.size, dtype=np.float64)
        t = self.table
        if self.bounds is not None:
            keys = self.bounds.visible_keys(t, keys, self.steps)
        self.weights_kernel(t.words, t.stride, t.capacity, keys, fields, self.hyper,
                            self.field_l1, self.field_l2, self.counters, out)
        return out

    def state_of(self, keys: np.ndarray) -> dict[str, np.ndarray]:
        """The raw state columns of ``keys`` (0 for absent keys), for tests and tools."""
        slots = self.table.lookup(np.asarray(keys, dtype=np.uint64))
        view = self.table.words.reshape(self.table.capacity, self.stride)[:, 1:]
        cols: np.ndarray = np.ascontiguousarray(view[np.maximum(slots, 0)]).view(
            self.state_dtype)
        out = {}
        for j, name in enumerate(self.state_names):
            col = cols[:, j].astype(np.float64)
            col[slots < 0] = 0.0
            out[name] = col
        return out

    def live_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, weights) of every stored coordinate."""
        keys = self.table.keys()
        return keys, self.weights(keys)

    # -- persistence -----------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        out = {"records": self.table.records(), "counters": self.counters.copy()}
        if self.bounds is not None:
            out.update(self.bounds.state())
            if self.bounds.evicts:  # where each record sits: the LRU sample picks slots
                out["ages"] = self.table.live_ages()
                out["slots"] = self.table.live_slots()
                out["capacity"] = np.array([self.table.capacity], dtype=np.int64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        records = np.asarray(state["records"], dtype=np.uint64)
        if records.ndim != 2 or records.shape[1] != self.stride:
            raise ValueError(f"{self.name}: state records have shape {records.shape}, "
                             f"expected (n, {self.stride})")
        evicts = self.bounds is not None and self.bounds.evicts
        if evicts and "slots" in state:
            self.table = StateTable.from_layout(
                records, np.asarray(state["slots"], dtype=np.int64),
                int(np.asarray(state["capacity"]).reshape(-1)[0]),
                np.asarray(state["ages"], dtype=np.int64))
        elif evicts and "ages" in state:  # ages without a layout (a Redis snapshot's)
            self.table = StateTable.from_records(records,
                                                 np.asarray(state["ages"], dtype=np.int64))
        else:
            self.table = StateTable.from_records(records)
        counters = np.asarray(state["counters"], dtype=np.float64)
        self.counters = np.zeros(max(counters.size, self.counters.size))
        self.counters[: counters.size] = counters
        if self.bounds is not None:
            self.bounds.load_state(state)
            self.bounds.prepare(self.table)
            self.bounds.cover_table(self.table)


"""Feature admission (McMahan et al. 2013, section 4.1): a new feature gets a coordinate only
once it has earned one, so the long tail of keys seen once or twice costs no table memory.

Two policies, both decided per occurrence in stream order, before the row is learned:

- ``bloom:N``: a feature is admitted at its N-th occurrence, counted in a counting Bloom
  filter of two generations (8-bit saturating counters, ``K`` probes). A key's count is the
  minimum over its probes of (current + older) counters; the older generation is dropped
  (and the current one becomes it) once the current has taken ``inserts`` insertions, so the
  filter's memory is fixed and an occurrence is remembered for between one and two
  generations. Bloom collisions only ever over-count, so a feature is never admitted later
  than its N-th occurrence inside that window.
- ``poisson:P``: each occurrence of an unadmitted feature admits it with probability P. The
  trial is a hash of the key and the occurrence's stream position (the learner's step), so a
  run is deterministic and replays identically; no per-key memory is kept (the point of
  Poisson inclusion: the filter's bytes are saved too).

Until admitted a feature is dropped from its row: it adds nothing to the prediction and
learns nothing. An admitted feature is one with a record in the state table (or one admitted
earlier in the same batch). The bias (field 0) is always admitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._jit import inline_kernel, kernel
from .fieldcounts import ADMITTED, EVICTED, REFUSED
from .hashing import key_field, mix64
from .table import delete_slot, find_slot, prefetch_next_row

BIAS_FIELD = 0
#: probes per key in the counting filter
K = 3
#: default insertions per generation, and counters per expected insertion
DEFAULT_INSERTS = 1 << 20
COUNTERS_PER_INSERT = 4
#: salts that separate the filter's probes and the Poisson trials from the table's hash
FILTER_SALT = np.uint64(0x5BD1E9955BD1E995)
TRIAL_SALT = np.uint64(0x27BB2EE687B0B0FD)
#: modes, as the kernel reads them
NONE, BLOOM, POISSON = 0, 1, 2


@inline_kernel
def probe(key: np.uint64, i: int, mask: np.uint64) -> int:
    """The i-th counter of ``key`` (double hashing: h1 + i h2, h2 odd)."""
    h = mix64(key ^ FILTER_SALT)
    h1 = h & np.uint64(0xFFFFFFFF)
    h2 = (h >> np.uint64(32)) | np.uint64(1)
    return np.int64((h1 + np.uint64(i) * h2) & mask)  # type: ignore[return-value]


@inline_kernel
def trial(key: np.uint64, step: np.uint64) -> np.uint64:
    """The Poisson trial's uniform 64-bit draw for ``key`` at stream position ``step``."""
    return mix64(key ^ mix64(step ^ TRIAL_SALT))


@inline_kernel
def _map_slot(admitted: np.ndarray, mask: int, gen: np.uint64, key: np.uint64) -> int:
    """The slot of ``key`` among the keys admitted in this call (pairs of words: key, the
    call's stamp; a pair is in use only if its stamp is this call's ``gen``, so the map is
    never cleared), or of the free slot where it would go."""
    s = np.int64(mix64(key) & np.uint64(mask))
    while admitted[2 * s + 1] == gen and admitted[2 * s] != key:
        s = (s + 1) & mask
    return s  # type: ignore[return-value]


@kernel
def gate(words: np.ndarray, stride: int, capacity: int, meta: np.ndarray, indptr: np.ndarray,
         keys: np.ndarray, fields: np.ndarray, step0: int, mode: int, needed: int,
         threshold: np.uint64, counts: np.ndarray, state: np.ndarray, ages: np.ndarray,
         now0: int, per_row: int, idle: int, evicted: np.ndarray, admitted: np.ndarray,
         map_size: int, gen: np.uint64, keep: np.ndarray, late: np.ndarray,
         late_row: np.ndarray, per_field: np.ndarray) -> int:
    """Mark in ``keep`` the occurrences whose feature is admitted at that point; returns how
    many of them ``late`` holds (below).

    ``state``: [current generation, insertions into it, insertions per generation,
    admitted, refused] (the last two are running totals); ``per_field`` (``fieldcounts``)
    splits admitted and refused by the occurrence's field, evicted by the key's. Row r is at
    stream position ``step0 + r``. ``admitted`` (2 ``map_size`` words, ``map_size`` a power
    of 2 at least twice the occurrences) remembers the keys admitted in this call: they are
    not in the table until the rows are learned.

    With ``ages`` (a table that evicts), the kept occurrences of stored keys stamp their
    record's age with their row's time (``now0 + per_row * r``) at once; those of keys not
    stored yet go to ``late``/``late_row``, to be stamped once learning has inserted them.
    With ``idle`` > 0, a stored record idle for more than ``idle`` when a row meets it is
    deleted first (``evicted[0]`` counts it), so that row meets a key never seen and
    admission decides again. The caller gives at most ``idle`` rows a call, so only records
    last touched before the call can be idle: none is deleted between two of its rows.
    """
    stamping = ages.size > 0
    mask = np.uint64(counts.shape[1] - 1)
    map_mask = map_size - 1
    nl = 0
    for r in range(indptr.size - 1):
        now = now0 + per_row * r
        prefetch_next_row(words, stride, capacity, indptr, keys, r)
        for j in range(indptr[r], indptr[r + 1]):
            key = keys[j]
            s = find_slot(words, stride, capacity, key)
            if idle > 0 and s >= 0 and now - ages[s] > idle:  # idle: deleted first
                delete_slot(words, stride, capacity, s, ages, meta)
                evicted[0] += 1
                per_field[EVICTED, key_field(key)] += 1
                s = -1
            ok = s >= 0 or fields[j] == BIAS_FIELD or mode == NONE
            if not ok:
                q = _map_slot(admitted, map_mask, gen, key)
                ok = admitted[2 * q + 1] == gen  # admitted earlier in this call
                if not ok:
                    if mode == BLOOM:
                        cur = state[0]
                        old = 1 - cur
                        c = np.int64(255)
                        for i in range(K):
                            p = probe(key, i, mask)
                            if counts[cur, p] < 255:
                                counts[cur, p] += 1
                            both = np.int64(counts[cur, p]) + np.int64(counts[old, p])
                            if both < c:  # the fewest a probe saw: collisions only add
                                c = both
                        state[1] += 1
                        if state[1] >= state[2]:  # roll over: the older generation goes
                            counts[old, :] = 0
                            state[0] = old
                            state[1] = 0
                        ok = c >= needed
                    else:
                        ok = trial(key, np.uint64(step0 + r)) < threshold
                    if ok:
                        admitted[2 * q] = key
                        admitted[2 * q + 1] = gen
                        state[3] += 1
                        per_field[ADMITTED, fields[j]] += 1
                    else:
                        state[4] += 1
                        per_field[REFUSED, fields[j]] += 1
            keep[j] = ok
            if ok and stamping:
                if s >= 0:
                    ages[s] = now
                else:
                    late[nl] = j
                    late_row[nl] = r
                    nl += 1
    return nl


@dataclass(frozen=True)
class AdmitSpec:
    """A parsed ``--admit`` value: ``bloom:N[:INSERTS]`` or ``poisson:P``."""

    mode: str
    count: int = 1
    probability: float = 1.0
    inserts: int = DEFAULT_INSERTS

    @classmethod
    def parse(cls, text: str) -> AdmitSpec:
        mode, _, rest = text.strip().partition(":")
        parts = rest.split(":") if rest else []
        try:
            if mode == "bloom" and len(parts) in (1, 2):
                count = int(parts[0])
                inserts = int(parts[1]) if len(parts) == 2 else DEFAULT_INSERTS
                if not 1 <= count <= 255:
                    raise ValueError("N must be 1..255 (8-bit counters)")
                if inserts < 1:
                    raise ValueError("INSERTS must be >= 1")
                return cls("bloom", count=count, inserts=inserts)
            if mode == "poisson" and len(parts) == 1:
                p = float(parts[0])
                if not 0.0 < p <= 1.0:
                    raise ValueError("P must be in (0, 1]")
                return cls("poisson", probability=p)
        except ValueError as exc:
            raise ValueError(f"--admit {text!r}: {exc}") from None
        raise ValueError(f"--admit {text!r}: expected bloom:N[:INSERTS] or poisson:P")

    def __str__(self) -> str:
        if self.mode == "bloom":
            extra = "" if self.inserts == DEFAULT_INSERTS else f":{self.inserts}"
            return f"bloom:{self.count}{extra}"
        return f"poisson:{self.probability!r}"


class Admission:
    """The admission policy of a learner and the filter it keeps."""

    def __init__(self, spec: AdmitSpec) -> None:
        self.spec = spec
        if spec.mode == "bloom":
            width = 1 << max(4, int(np.ceil(np.log2(spec.inserts * COUNTERS_PER_INSERT))))
            self.counts = np.zeros((2, width), dtype=np.uint8)
        else:
            self.counts = np.zeros((2, 1), dtype=np.uint8)
        self.state = np.array([0, 0, spec.inserts, 0, 0], dtype=np.int64)
        self.threshold = np.uint64(min(int(spec.probability * 2.0**64), 2**64 - 1))

    @property
    def nbytes(self) -> int:
        return int(self.counts.nbytes)

    @property
    def admitted(self) -> int:
        return int(self.state[3])

    @property
    def refused(self) -> int:
        return int(self.state[4])

    @property
    def mode(self) -> int:
        return BLOOM if self.spec.mode == "bloom" else POISSON

    def to_state(self) -> dict[str, np.ndarray]:
        return {"admission_counts": self.counts.copy(), "admission_state": self.state.copy()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        counts = np.asarray(arrays["admission_counts"], dtype=np.uint8)
        state = np.asarray(arrays["admission_state"], dtype=np.int64)
        if counts.shape != self.counts.shape or state.shape != self.state.shape:
            raise ValueError(f"admission filter of shape {counts.shape}, expected "
                             f"{self.counts.shape} for --admit {self.spec}")
        self.counts = counts.copy()
        self.state = state.copy()

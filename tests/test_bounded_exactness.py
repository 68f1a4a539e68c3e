"""Bounded memory: every learner's sparse path with admission against the dense references
of test_exactness, fed through a plain reference of the admission rules (written from the
rules in ftrl_core/admission.py, not from its code: a dict of admitted keys, two lists of
counters, the hash in Python integers).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from test_exactness import (
    CUTS,
    FIELDS,
    IDS,
    KEYS,
    LEARNERS,
    STEPS,
    TOL,
    D,
    batch_of,
    merged,
    setup,
    sigmoid,
)

from ftrl_core.admission import AdmitSpec

M64 = (1 << 64) - 1
FILTER_SALT = 0x5BD1E9955BD1E995
TRIAL_SALT = 0x27BB2EE687B0B0FD


def mix64(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & M64
    x ^= x >> 33
    return x


class RefAdmission:
    """The admission rules, one occurrence at a time."""

    def __init__(self, mode: str, count: int = 1, p: float = 1.0, inserts: int = 1) -> None:
        self.mode, self.count, self.inserts = mode, count, inserts
        self.threshold = min(int(p * 2.0**64), M64)
        width = 1 << max(4, math.ceil(math.log2(inserts * 4)))
        self.gens = [[0] * width, [0] * width]
        self.cur = 0
        self.inserted = 0
        self.admitted: set[int] = set()
        self.refused = 0

    def probes(self, key: int) -> list[int]:
        h = mix64(key ^ FILTER_SALT)
        h1, h2 = h & 0xFFFFFFFF, (h >> 32) | 1
        width = len(self.gens[0])
        return [((h1 + i * h2) & M64) % width for i in range(3)]

    def admit(self, i: int, step: int) -> bool:
        key = int(KEYS[i])
        if FIELDS[i] == 0 or key in self.admitted:
            return True
        if self.mode == "bloom":
            cur, old = self.gens[self.cur], self.gens[1 - self.cur]
            seen = 255
            for q in self.probes(key):
                cur[q] = min(cur[q] + 1, 255)
                seen = min(seen, cur[q] + old[q])
            self.inserted += 1
            if self.inserted == self.inserts:  # the older generation is dropped
                self.gens[1 - self.cur] = [0] * len(cur)
                self.cur = 1 - self.cur
                self.inserted = 0
            ok = seen >= self.count
        else:
            ok = mix64(key ^ mix64(step ^ TRIAL_SALT)) < self.threshold
        if ok:
            self.admitted.add(key)
        else:
            self.refused += 1
        return ok


def dense_gated_step(ref: Any, gate: RefAdmission, step: int,
                     row: tuple[list[int], list[float], float, float]) -> float:
    """test_exactness.dense_step over the row's admitted features only."""
    idx, vals, y, imp = row
    x = {i: v for i, v in merged(idx, vals).items() if gate.admit(i, step)}
    w = ref.weights()
    margin = 0.0
    for i, v in x.items():
        margin += w[i] * v
    p = sigmoid(margin)
    g = np.zeros(D)
    for i, v in x.items():
        g[i] = (p - y) * imp * v
    ref.update(g)
    return p


#: bloom with a small filter so that it rolls over many times in 600 rows; poisson
ADMITS = ("bloom:3:25", "bloom:2:1000", "poisson:0.08")


def reference_gate(text: str) -> RefAdmission:
    spec = AdmitSpec.parse(text)
    return RefAdmission(spec.mode, spec.count, spec.probability, spec.inserts)


@pytest.mark.parametrize("admit", ADMITS)
@pytest.mark.parametrize(("name", "extra"), LEARNERS, ids=IDS)
def test_admission_equals_dense_reference(name: str, extra: dict[str, Any], admit: str
                                          ) -> None:
    opt, ref, rows = setup(name, extra, "plain")
    opt.set_admission(admit)
    gate = reference_gate(admit)
    start = 0
    for size in (*CUTS[:2], 0, *CUTS[2:]):
        chunk = rows[start:start + size]
        p, _ = opt.learn(batch_of(chunk))
        p_ref = [dense_gated_step(ref, gate, start + k, row) for k, row in enumerate(chunk)]
        start += size
        np.testing.assert_allclose(p, p_ref, **TOL)
        np.testing.assert_allclose(opt.weights(KEYS), ref.weights(), **TOL)
    assert start == STEPS
    # the table holds exactly the admitted features (and the bias): the rest never got in
    stored = set(opt.table.keys().tolist())
    assert stored == gate.admitted | {int(KEYS[0])}
    assert opt.admission is not None and opt.admission.refused == gate.refused
    assert opt.admission.admitted == len(gate.admitted)
    # the stream exercises both outcomes: some features admitted, some refused for good
    assert 0 < len(gate.admitted) < D - 1 or gate.refused > 0
    assert gate.refused > 0
    state = opt.state_of(KEYS)
    for column, expected in ref.state().items():
        np.testing.assert_allclose(state[column], expected, **TOL, err_msg=column)


@pytest.mark.parametrize(("name", "extra"), LEARNERS, ids=IDS)
def test_bloom_1_admits_everything_at_once(name: str, extra: dict[str, Any]) -> None:
    opt, _, rows = setup(name, extra, "plain")
    plain, _, _ = setup(name, extra, "plain")
    opt.set_admission("bloom:1")
    batch = batch_of(rows)
    np.testing.assert_array_equal(opt.learn(batch)[0], plain.learn(batch)[0])
    assert opt.admission is not None and opt.admission.refused == 0


@pytest.mark.parametrize("admit", ["bloom:4:25", "poisson:0.05"])
def test_admission_state_round_trip_continues_identically(admit: str) -> None:
    from ftrl_core.model import Model

    opt, _, rows = setup("ftrl", {}, "plain")
    opt.set_admission(admit)
    model = Model(opt, keep_names=False)
    model.learn(batch_of(rows[:300]))
    clone = Model.from_config(model.config(), {**opt.state(), **model.metrics.state()})
    assert clone.optimizer.admission is not None
    assert str(clone.optimizer.admission.spec) == admit
    rest = batch_of(rows[300:])
    np.testing.assert_array_equal(clone.learn(rest), model.learn(rest))
    np.testing.assert_array_equal(clone.optimizer.table.keys(), opt.table.keys())


@pytest.mark.parametrize("bad", ["bloom", "bloom:0", "bloom:256", "bloom:2:0", "poisson:0",
                                 "poisson:1.5", "poisson:x", "lru:3", "bloom:2:3:4"])
def test_bad_admit_specs_are_refused_naming_the_flag(bad: str) -> None:
    with pytest.raises(ValueError, match="--admit"):
        AdmitSpec.parse(bad)

"""Every learner's sparse (lazy) path against a dense reference written from the formulas.

The references update every coordinate on every step (an idle coordinate gets g = 0, so it
still receives the step's regularisation), merge repeated features of a row themselves, and
keep state as the papers do: FTRL rounds z and n to float32 where the kernel stores them,
the others keep float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from ftrl_core.batch import Batch
from ftrl_core.hashing import make_key
from ftrl_core.optimizers import OPTIMIZERS, Optimizer

D = 31  # coordinates; 0 is the bias (field 0), j is in field j % 5 + 1
STEPS = 600
CUTS = (1, 1, 58, 140, 140, 260)  # batch sizes (0 = an empty batch); they sum to STEPS
TOL = {"rtol": 1e-9, "atol": 1e-12}

FIELDS = np.array([0] + [j % 5 + 1 for j in range(1, D)])
KEYS = np.array(
    [make_key(int(f), np.uint64(j + 1), np.uint64(0)) for j, f in enumerate(FIELDS)],
    dtype=np.uint64,
)

#: every learner and rate schedule in the registry: a new one gets the whole suite
LEARNERS = [
    (name, {"rate": rate}) if rate else (name, {})
    for name, cls in OPTIMIZERS.items()
    for rate in getattr(cls, "rates", (None,))
]
IDS = [name + ("-" + extra["rate"] if extra else "") for name, extra in LEARNERS]

#: hyperparameters of the exactness runs: large rates and l1 so that weights cross zero often
PARAMS: dict[str, dict[str, float]] = {
    "ftrl": {"alpha": 0.5, "beta": 1.0, "l1": 3.0, "l2": 0.1},
    "rda": {"lambda": 0.01, "gamma": 0.5, "rho": 0.02},
    "fobos": {"eta": 0.5, "lambda": 0.02, "alpha": 0.5, "beta": 1.0},
    "tg": {"eta": 0.5, "gravity": 0.02, "theta": 0.4, "k": 3, "alpha": 0.5, "beta": 1.0},
}
SCENARIOS = ("plain", "huge", "zero_all", "overrides")
#: variants run in one scenario: plain L1-RDA (rho = 0), truncation with no theta, k = 4
VARIANTS: dict[tuple[str, str], dict[str, float]] = {
    ("rda", "overrides"): {"rho": 0.0},
    ("tg", "overrides"): {"theta": math.inf, "k": 4},
}


def sigmoid(m: float) -> float:
    m = min(max(m, -35.0), 35.0)
    return 1.0 / (1.0 + math.exp(-m))


def t1(v: float, a: float, theta: float) -> float:
    if 0.0 <= v <= theta:
        return max(0.0, v - a)
    if -theta <= v <= 0.0:
        return min(0.0, v + a)
    return v


# -- dense references: weights() are the weights held now, update(g) is one step ---------------


class DenseFTRL:
    def __init__(self, p: dict[str, float], l1: np.ndarray, l2: np.ndarray) -> None:
        self.p, self.l1, self.l2 = p, l1, l2
        self.z = np.zeros(D, np.float32)
        self.n = np.zeros(D, np.float32)

    def weights(self) -> np.ndarray:
        out = np.zeros(D)
        for i in range(D):
            z, n = float(self.z[i]), float(self.n[i])
            if abs(z) > self.l1[i]:
                sign = 1.0 if z > 0 else -1.0
                out[i] = -(z - sign * self.l1[i]) / (
                    (self.p["beta"] + math.sqrt(n)) / self.p["alpha"] + self.l2[i]
                )
        return out

    def update(self, g: np.ndarray) -> None:
        w = self.weights()
        for i in range(D):
            z, n = float(self.z[i]), float(self.n[i])
            sigma = (math.sqrt(n + g[i] * g[i]) - math.sqrt(n)) / self.p["alpha"]
            self.z[i] = np.float32(z + g[i] - sigma * w[i])
            self.n[i] = np.float32(n + g[i] * g[i])

    def state(self) -> dict[str, np.ndarray]:
        return {"z": self.z.astype(np.float64), "n": self.n.astype(np.float64)}


class DenseRDA:
    def __init__(self, p: dict[str, float], l1: np.ndarray, l2: np.ndarray,
                 bias_regularised: bool = False) -> None:
        self.p, self.l1 = p, l1
        # enhanced RDA's gamma rho / sqrt(s) is part of the L1 threshold: the bias, not
        # regularised unless --field-l1 names it, gets neither
        self.rho = np.where((FIELDS == 0) & (not bias_regularised), 0.0, p["rho"])
        self.G = np.zeros(D)
        self.s = 0  # steps done

    def weights(self) -> np.ndarray:
        out = np.zeros(D)
        if self.s == 0:
            return out
        gamma, s = self.p["gamma"], self.s
        for i in range(D):
            lam = self.l1[i] + gamma * self.rho[i] / math.sqrt(s)
            if abs(self.G[i]) / s > lam:
                out[i] = -(math.sqrt(s) / gamma) * (self.G[i] / s - lam * np.sign(self.G[i]))
        return out

    def update(self, g: np.ndarray) -> None:
        self.G += g
        self.s += 1

    def state(self) -> dict[str, np.ndarray]:
        return {"G": self.G.copy()}


class DenseFOBOS:
    """FOBOS and truncated gradient (FOBOS is k = 1, theta = inf)."""

    def __init__(
        self, p: dict[str, float], l1: np.ndarray, l2: np.ndarray, rate: str = "global"
    ) -> None:
        self.p, self.l1, self.adaptive = p, l1, rate == "adaptive"
        self.k = int(p.get("k", 1))
        self.theta = p.get("theta", math.inf)
        self.w = np.zeros(D)
        self.n = np.zeros(D)
        self.t = 0

    def weights(self) -> np.ndarray:
        return self.w.copy()

    def update(self, g: np.ndarray) -> None:
        self.t += 1
        eta_t = self.p["eta"] / math.sqrt(self.t)
        for i in range(D):
            rate = eta_t
            if self.adaptive:
                self.n[i] += g[i] * g[i]
                rate = self.p["alpha"] / (self.p["beta"] + math.sqrt(self.n[i]))
            self.w[i] -= rate * g[i]
            if self.t % self.k == 0:
                self.w[i] = t1(self.w[i], self.k * rate * self.l1[i], self.theta)

    def state(self) -> dict[str, np.ndarray]:
        return {"n": self.n.copy()}


DENSE = {"ftrl": DenseFTRL, "rda": DenseRDA, "fobos": DenseFOBOS, "tg": DenseFOBOS}


# -- streams ---------------------------------------------------------------------------------


def make_stream(seed: int, huge: bool = False) -> list[tuple[list[int], list[float], float, float]]:
    """Rows (indices with repeats, values, label, importance) of a sparse stream in which
    the frequency of coordinate j falls like 1/j, so many stay idle for long stretches."""
    rng = np.random.default_rng(seed)
    freq = 1.0 / np.arange(1, D) ** 1.2
    freq /= freq.sum()
    truth = rng.normal(0, 1.5, D)
    rows = []
    for t in range(STEPS):
        m = 0 if t % 97 == 5 else int(rng.integers(0, 9))
        idx = [int(i) for i in 1 + rng.choice(D - 1, size=m, p=freq)]
        if idx and rng.random() < 0.3:
            idx.insert(int(rng.integers(0, len(idx) + 1)), idx[0])  # a repeated feature
        if t % 97 != 5 and rng.random() < 0.8:
            idx.insert(int(rng.integers(0, len(idx) + 1)), 0)
        vals = [float(v) for v in rng.choice([1.0, 1.0, 1.0, 0.5, -2.0], size=len(idx))]
        imp = float(rng.uniform(0.5, 2.0))
        if huge:
            vals = [v * 1e3 if rng.random() < 0.1 else v for v in vals]
            imp = float(rng.choice([0.0, 1.0, 50.0 * rng.random()]))
        y = float(
            rng.random() < sigmoid(sum(truth[i] * v for i, v in zip(idx, vals, strict=True)) - 1)
        )
        rows.append((idx, vals, y, imp))
    return rows


def batch_of(rows: list[Any]) -> Batch:
    indptr = np.cumsum([0] + [len(r[0]) for r in rows])
    keys = np.array([KEYS[i] for r in rows for i in r[0]], dtype=np.uint64)
    values = np.array([v for r in rows for v in r[1]], dtype=np.float64)
    return Batch.from_arrays(
        indptr, keys, values, labels=[r[2] for r in rows], weights=[r[3] for r in rows]
    )


def merged(idx: list[int], vals: list[float]) -> dict[int, float]:
    """Repeated features summed left to right, in order of first appearance."""
    out: dict[int, float] = {}
    for i, v in zip(idx, vals, strict=True):
        out[i] = out[i] + v if i in out else v
    return out


def dense_step(ref: Any, row: tuple[list[int], list[float], float, float]) -> float:
    idx, vals, y, imp = row
    x = merged(idx, vals)
    w = ref.weights()
    margin = 0.0
    for i, v in x.items():
        margin += w[i] * v
    p = sigmoid(margin)
    gscale = (p - y) * imp
    g = np.zeros(D)
    for i, v in x.items():
        g[i] = gscale * v
    ref.update(g)
    return p


def per_coordinate(
    cls: type[Optimizer], params: dict[str, float], which: str | None, overrides: dict[int, float]
) -> np.ndarray:
    """The value of the l1 (or l2) parameter for each coordinate, as base.py assigns it."""
    if which is None:
        return np.zeros(D)
    by_field = {f: params.get(which, cls.defaults[which]) for f in range(1, 6)}
    by_field[0] = 0.0
    by_field.update(overrides)
    return np.array([by_field[int(f)] for f in FIELDS])


def setup(name: str, extra: dict[str, Any], scenario: str,
          variant: dict[str, float] | None = None) -> tuple[Optimizer, Any, list[Any]]:
    cls = OPTIMIZERS[name]
    params = {**PARAMS[name], **VARIANTS.get((name, scenario), {}), **(variant or {})}
    field_l1: dict[int, float] = {}
    field_l2: dict[int, float] = {}
    if scenario == "zero_all":
        params[cls.l1_param] = 1e4
        if name == "tg":
            params["theta"] = math.inf
    if scenario == "overrides":
        field_l1 = {0: 0.05, 2: 0.0, 3: 10 * params[cls.l1_param]}
        if cls.l2_param:
            field_l2 = {1: 3.0}
    opt = cls(field_l1=field_l1, field_l2=field_l2, **params, **extra)
    l1 = per_coordinate(cls, params, cls.l1_param, field_l1)
    l2 = per_coordinate(cls, params, cls.l2_param, field_l2)
    ref_extra = {"bias_regularised": 0 in field_l1} if name == "rda" else {}
    ref = DENSE[name](params, l1, l2, **extra, **ref_extra)
    return opt, ref, make_stream(seed=SCENARIOS.index(scenario), huge=scenario == "huge")


# -- the tests ---------------------------------------------------------------------------------


def run_against_reference(opt: Optimizer, ref: Any, rows: list[Any]) -> None:
    start = 0
    for size in (*CUTS[:2], 0, *CUTS[2:]):
        chunk = rows[start : start + size]
        start += size
        p, _ = opt.learn(batch_of(chunk))
        p_ref = [dense_step(ref, row) for row in chunk]
        np.testing.assert_allclose(p, p_ref, **TOL)
        np.testing.assert_allclose(opt.weights(KEYS), ref.weights(), **TOL)
    assert start == STEPS and opt.steps == STEPS
    state = opt.state_of(KEYS)
    for column, expected in ref.state().items():
        np.testing.assert_allclose(state[column], expected, **TOL, err_msg=column)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize(("name", "extra"), LEARNERS, ids=IDS)
def test_sparse_path_equals_dense_reference(
    name: str, extra: dict[str, Any], scenario: str
) -> None:
    opt, ref, rows = setup(name, extra, scenario)
    run_against_reference(opt, ref, rows)
    w = opt.weights(KEYS)
    if scenario == "zero_all":
        assert not w[1:].any()
    elif scenario == "plain":  # the stream exercises both sides of the threshold
        assert 0 < np.count_nonzero(w[1:]) < D - 1


@pytest.mark.parametrize("bias_override", [False, True])
def test_rda_bias_is_exempt_from_the_rho_threshold_unless_named(bias_override: bool) -> None:
    """Enhanced RDA (rho > 0) thresholds every coordinate at lambda + gamma rho / sqrt(s);
    the bias is exempt, as it is from lambda, unless --field-l1 names it (here with 0: the
    threshold is then gamma rho / sqrt(s) alone)."""
    params = {**PARAMS["rda"], "rho": 3.0}
    field_l1 = {0: 0.0} if bias_override else {}
    opt = OPTIMIZERS["rda"](field_l1=field_l1, **params)
    l1 = per_coordinate(OPTIMIZERS["rda"], params, "lambda", field_l1)
    ref = DenseRDA(params, l1, np.zeros(D), bias_regularised=bias_override)
    run_against_reference(opt, ref, make_stream(seed=0))
    g_bias = float(opt.state_of(KEYS[:1])["G"][0])
    w_bias = float(opt.weights(KEYS[:1])[0])
    threshold = params["gamma"] * params["rho"] / math.sqrt(STEPS)
    assert abs(g_bias) / STEPS <= threshold  # (the stream makes it so)
    if bias_override:
        assert w_bias == 0.0
    else:  # the same gradient sum, no threshold: the bias keeps a weight
        assert w_bias == pytest.approx(-g_bias / (math.sqrt(STEPS) * params["gamma"]),
                                       rel=1e-12)
        assert w_bias != 0.0


@pytest.mark.parametrize(("name", "extra"), LEARNERS, ids=IDS)
def test_unlabelled_rows_are_predicted_in_place_and_not_learned(
    name: str, extra: dict[str, Any]
) -> None:
    """A row without a label (NaN) gets the prediction the model makes at its place in the
    stream, and changes nothing: learning the rest equals learning the labelled rows alone."""
    opt, _, rows = setup(name, extra, "plain")
    alone, _, _ = setup(name, extra, "plain")
    rng = np.random.default_rng(5)
    holes = set(rng.choice(len(rows), size=80, replace=False).tolist()) | {0, 1, 599}
    mixed = [(r[0], r[1], math.nan, r[3]) if i in holes else r for i, r in enumerate(rows)]
    p_mixed, _ = opt.learn(batch_of(mixed))
    for i, row in enumerate(mixed):
        if i in holes:
            p_alone, _ = alone.predict(batch_of([row]))
            assert p_mixed[i] == p_alone[0]
        else:
            assert alone.learn(batch_of([row]))[0][0] == p_mixed[i]
    assert opt.steps == alone.steps == len(rows) - len(holes)
    np.testing.assert_array_equal(opt.weights(KEYS), alone.weights(KEYS))


@pytest.mark.parametrize(("name", "extra"), LEARNERS, ids=IDS)
def test_base_margin_shifts_the_prediction(name: str, extra: dict[str, Any]) -> None:
    """VW's initial prediction: the row's margin starts at its base; a base of 0 changes
    nothing, and learning with a base equals the dense step whose margin starts there."""
    opt, ref, rows = setup(name, extra, "plain")
    rows = rows[:200]
    base = np.random.default_rng(3).normal(0.0, 1.0, len(rows))
    batch = batch_of(rows)
    batch.base = base
    p, _ = opt.learn(batch)
    for i, row in enumerate(rows):
        idx, vals, y, imp = row
        x = merged(idx, vals)
        w = ref.weights()
        expected = sigmoid(base[i] + sum(w[k] * v for k, v in x.items()))
        np.testing.assert_allclose(p[i], expected, **TOL)
        g = np.zeros(D)
        for k, v in x.items():
            g[k] = (expected - y) * imp * v
        ref.update(g)
    zero = batch_of(rows[:5])
    zero.base = np.zeros(5)
    np.testing.assert_array_equal(opt.predict(zero)[0], opt.predict(batch_of(rows[:5]))[0])


@pytest.mark.parametrize(("name", "extra"), LEARNERS, ids=IDS)
def test_table_grows_from_new_keys_not_feature_occurrences(
    name: str, extra: dict[str, Any]
) -> None:
    """A huge batch over few distinct keys leaves a table sized to those keys; one whose
    keys are all new grows the table mid-batch, and learns what a table big enough from the
    start learns."""
    opt, _, rows = setup(name, extra, "plain")
    many = rows * 200  # 120,000 rows over 31 coordinates
    opt.learn(batch_of(many))
    assert opt.table.capacity == 1024 and opt.table.size == D
    # 5,000 new keys in one batch: the table grows while learning it
    rng = np.random.default_rng(9)
    keys = np.array([make_key(j % 5 + 1, np.uint64(10**6 + j), np.uint64(0))
                     for j in range(5000)], dtype=np.uint64)
    indptr = np.arange(0, 5001, 5)
    labels = rng.integers(0, 2, 1000).astype(np.float64)
    small, _, _ = setup(name, extra, "plain")
    small.learn(batch_of(many))
    big, _, _ = setup(name, extra, "plain")
    big.learn(batch_of(many))
    big.table.ensure_room(6000)
    b = Batch.from_arrays(indptr, keys, np.ones(5000), labels=labels)
    p_small, n_small = small.learn(b)
    p_big, n_big = big.learn(b)
    # grown while learning, just enough: the capacity before the last growth was too small
    assert small.table.size == D + 5000 <= 0.8 * small.table.capacity
    assert 0.8 * (small.table.capacity - 1) / 1.5 < small.table.size + 6
    np.testing.assert_array_equal(p_small, p_big)
    assert n_small == n_big == 5000
    assert sorted(b.keys[small.last_new_pos].tolist()) == sorted(keys.tolist())
    np.testing.assert_array_equal(small.weights(keys), big.weights(keys))


@pytest.mark.parametrize("rate", ["global", "adaptive"])
def test_truncated_gradient_with_k1_and_no_theta_is_fobos(rate: str) -> None:
    p = {"eta": 0.5, "alpha": 0.5, "beta": 1.0}
    fobos = OPTIMIZERS["fobos"](**p, **{"lambda": 0.02}, rate=rate, field_l1={3: 0.1})
    tg = OPTIMIZERS["tg"](**p, gravity=0.02, k=1, theta=math.inf, rate=rate, field_l1={3: 0.1})
    for huge in (False, True):
        batch = batch_of(make_stream(seed=7, huge=huge))
        np.testing.assert_array_equal(fobos.learn(batch)[0], tg.learn(batch)[0])
        np.testing.assert_array_equal(fobos.predict(batch), tg.predict(batch))
        np.testing.assert_array_equal(fobos.weights(KEYS), tg.weights(KEYS))
        np.testing.assert_array_equal(fobos.table.records(), tg.table.records())
        np.testing.assert_array_equal(fobos.counters, tg.counters)


@pytest.mark.parametrize(("name", "extra"), LEARNERS, ids=IDS)
def test_uncertainty_follows_the_formula(name: str, extra: dict[str, Any]) -> None:
    opt, _, rows = setup(name, extra, "plain")
    opt.learn(batch_of(rows[:300]))
    unseen = make_key(4, np.uint64(10**6), np.uint64(0))
    keys = np.array([KEYS[0], KEYS[1], KEYS[7], unseen, KEYS[30]], dtype=np.uint64)
    values = np.array([1.0, -2.0, 0.5, 3.0, 1.5])
    batch = Batch.from_arrays(np.array([0, 3, 3, 5]), keys, values)
    _, u = opt.predict(batch)
    n = opt.state_of(keys).get("n", np.zeros(keys.size))
    p, t = opt.params, opt.steps
    if name == "rda":
        per = 1.0 / (p["gamma"] * np.sqrt(t + 1.0)) * np.ones(keys.size)
    elif extra.get("rate") == "global":
        per = p["eta"] / np.sqrt(t + 1.0) * np.ones(keys.size)
    else:
        per = p["alpha"] / (p["beta"] + np.sqrt(n))
    expected = [np.sum(np.abs(values[a:b]) * per[a:b]) for a, b in ((0, 3), (3, 3), (3, 5))]
    np.testing.assert_allclose(u, expected, rtol=1e-12)
    assert u[1] == 0.0


@pytest.mark.parametrize(("name", "extra"), LEARNERS, ids=IDS)
def test_state_round_trip_continues_identically(name: str, extra: dict[str, Any]) -> None:
    opt, _, rows = setup(name, extra, "overrides")
    opt.learn(batch_of(rows[:250]))
    config = opt.config()
    clone = OPTIMIZERS[config["optimizer"]](
        field_l1={int(k): v for k, v in config["field_l1"].items()},
        field_l2={int(k): v for k, v in config["field_l2"].items()},
        **config["params"],
        **config.get("extra", {}),
    )
    clone.load_state(opt.state())
    rest = batch_of(rows[250:])
    np.testing.assert_array_equal(clone.learn(rest)[0], opt.learn(rest)[0])
    np.testing.assert_array_equal(clone.weights(KEYS), opt.weights(KEYS))


@pytest.mark.parametrize(("name", "extra"), LEARNERS, ids=IDS)
def test_contract(name: str, extra: dict[str, Any]) -> None:
    cls = OPTIMIZERS[name]
    opt = cls(**extra)
    rows = make_stream(seed=11)
    batch = batch_of(rows[:400])
    p, n_new = opt.learn(batch)
    assert p.shape == (batch.rows,) and np.all((p >= 0) & (p <= 1))
    assert n_new == opt.table.size == len(set(batch.keys.tolist()))
    # predicting changes nothing, and gives what learning the same row would see
    words, counters = opt.table.words.copy(), opt.counters.copy()
    one = batch_of(rows[400:401])
    p_pred, u = opt.predict(one)
    np.testing.assert_array_equal(opt.table.words, words)
    np.testing.assert_array_equal(opt.counters, counters)
    assert np.all(u >= 0)
    np.testing.assert_array_equal(opt.learn(one)[0], p_pred)
    # unseen keys weigh nothing
    unseen = np.array(
        [make_key(2, np.uint64(10**9 + j), np.uint64(0)) for j in range(5)], dtype=np.uint64
    )
    assert not opt.weights(unseen).any()
    # bad hyperparameters are refused at the boundary
    with pytest.raises(ValueError, match=cls.l1_param):
        cls(**{cls.l1_param: -1.0}, **extra)
    with pytest.raises(ValueError, match="unknown"):
        cls(no_such_parameter=1.0)
    if "rate" in cls.extra_params():
        with pytest.raises(ValueError, match="rate"):
            cls(rate="constant")

"""L1-FOBOS (Duchi & Singer, "Efficient Online and Batch Learning Using Forward Backward
Splitting", JMLR 2009), per coordinate i, at step t (1-based):

    p   = sigmoid(w . x)            (the weights brought current, before this update)
    g_i = (p - y) x_i * importance
    w_i <- w_i - eta_t g_i                                  (forward: gradient step)
    w_i <- sgn(w_i) max(0, |w_i| - eta_t lambda_i)          (backward: soft threshold)

Two rate schedules (``rate``):

- ``global`` (the paper): eta_t = eta / sqrt(t).
- ``adaptive`` (the default; AdaGrad-style, what makes FTRL good on CTR data): n_i += g_i^2
  first, then eta_{t,i} = alpha / (beta + sqrt(n_i)). An idle coordinate keeps its rate.

Exact lazy regularisation: every coordinate is shrunk on every step, touched or not. A record
holds (w, n, c), c being the value of a regularisation clock C when the coordinate was last
brought current: C_t = sum_{s<=t} eta_s (global) or C_t = t (adaptive, multiplied by the
coordinate's own rate when applied). Soft thresholds compose, S(S(v, a), b) = S(v, a + b), so
when row t touches i its idle steps are caught up by one threshold of lambda_i (C_{t-1} - c_i)
(times eta_i), before the prediction. ``predict`` and ``weights`` compute that on read.
State is float64: the dense algorithm applies many small shrinks, the lazy path one big one.

Uncertainty: adaptive, u(x) = sum_i alpha |x_i| / (beta + sqrt(n_i)) as for FTRL; global,
u(x) = sum_i |x_i| eta / sqrt(t + 1), the rate the next step would apply.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from .._jit import inline_kernel, kernel
from ..table import find_or_insert, find_slot, prefetch_next_row
from .base import Optimizer
from .ftrl import sigmoid

#: rate schedules, in the order of their code in ``hyper`` (0.0 global, 1.0 adaptive)
RATES = ("global", "adaptive")
ADAPTIVE = 1.0


@inline_kernel
def soft_threshold(w: float, a: float) -> float:
    if w > a:
        return w - a
    if w < -a:
        return w + a
    return 0.0


@inline_kernel
def coordinate_rate(n: float, alpha: float, beta: float) -> float:
    return alpha / (beta + math.sqrt(n))


@inline_kernel
def pending_shrink(
    l1: float, n: float, c: float, clock: float, alpha: float, beta: float, adaptive: bool
) -> float:
    """The shrinkage a coordinate last brought current at clock ``c`` still owes."""
    if adaptive:
        return coordinate_rate(n, alpha, beta) * l1 * (clock - c)
    return l1 * (clock - c)


@kernel
def fobos_learn(
    words,
    stride,
    capacity,
    meta,
    indptr,
    keys,
    fields,
    values,
    labels,
    weights,
    base,
    hyper,
    field_l1,
    field_l2,
    counters,
    p_out,
    new_pos,
):  # type: ignore[no-untyped-def]
    eta = hyper[0]
    alpha = hyper[2]
    beta = hyper[3]
    adaptive = hyper[4] == ADAPTIVE
    state = words.view(np.float64)
    n_new = 0
    longest = 0
    for r in range(indptr.size - 1):
        longest = max(longest, indptr[r + 1] - indptr[r])
    slots = np.empty(longest, dtype=np.int64)
    w = np.empty(longest, dtype=np.float64)
    for r in range(indptr.size - 1):
        a = indptr[r]
        b = indptr[r + 1]
        if meta[0] + (b - a) > meta[1]:  # the table is full: grow, then resume here
            meta[2] = r
            return n_new
        prefetch_next_row(words, stride, capacity, indptr, keys, r)
        t = counters[0] + 1.0
        clock = counters[1]
        margin = base[r]
        for j in range(a, b):
            s = find_or_insert(words, stride, capacity, keys[j], meta)
            if s < 0:
                s = -1 - s
                new_pos[n_new] = j
                n_new += 1
            slots[j - a] = s
            q = s * stride
            wj = soft_threshold(
                state[q + 1],
                pending_shrink(
                    field_l1[fields[j]], state[q + 2], state[q + 3], clock, alpha, beta, adaptive
                ),
            )
            w[j - a] = wj
            margin += wj * values[j]
        p = sigmoid(margin)
        p_out[r] = p
        gscale = (p - labels[r]) * weights[r]
        eta_t = eta / math.sqrt(t)
        clock_t = clock + 1.0 if adaptive else clock + eta_t
        for j in range(a, b):
            q = slots[j - a] * stride
            g = gscale * values[j]
            rate = eta_t
            if adaptive:
                n = state[q + 2] + g * g
                state[q + 2] = n
                rate = coordinate_rate(n, alpha, beta)
            state[q + 1] = soft_threshold(w[j - a] - rate * g, rate * field_l1[fields[j]])
            state[q + 3] = clock_t
        counters[0] = t
        counters[1] = clock_t
    meta[2] = indptr.size - 1
    return n_new


@kernel
def fobos_predict(
    words,
    stride,
    capacity,
    indptr,
    keys,
    fields,
    values,
    base,
    hyper,
    field_l1,
    field_l2,
    counters,
    p_out,
    u_out,
):  # type: ignore[no-untyped-def]
    alpha = hyper[2]
    beta = hyper[3]
    adaptive = hyper[4] == ADAPTIVE
    next_rate = hyper[0] / math.sqrt(counters[0] + 1.0)
    clock = counters[1]
    state = words.view(np.float64)
    for r in range(indptr.size - 1):
        prefetch_next_row(words, stride, capacity, indptr, keys, r)
        margin = base[r]
        u = 0.0
        for j in range(indptr[r], indptr[r + 1]):
            s = find_slot(words, stride, capacity, keys[j])
            n = 0.0
            if s >= 0:
                q = s * stride
                n = state[q + 2]
                margin += values[j] * soft_threshold(
                    state[q + 1],
                    pending_shrink(
                        field_l1[fields[j]], n, state[q + 3], clock, alpha, beta, adaptive
                    ),
                )
            if adaptive:
                u += alpha * abs(values[j]) / (beta + math.sqrt(n))
            else:
                u += abs(values[j]) * next_rate
        p_out[r] = sigmoid(margin)
        u_out[r] = u


@kernel
def fobos_weights(
    words, stride, capacity, keys, fields, hyper, field_l1, field_l2, counters, w_out
):  # type: ignore[no-untyped-def]
    adaptive = hyper[4] == ADAPTIVE
    state = words.view(np.float64)
    for j in range(keys.size):
        s = find_slot(words, stride, capacity, keys[j])
        if s < 0:
            w_out[j] = 0.0
        else:
            q = s * stride
            w_out[j] = soft_threshold(
                state[q + 1],
                pending_shrink(
                    field_l1[fields[j]],
                    state[q + 2],
                    state[q + 3],
                    counters[1],
                    hyper[2],
                    hyper[3],
                    adaptive,
                ),
            )


class ScheduledRate(Optimizer):
    """A learner with the two rate schedules, chosen by the non-numeric ``rate`` parameter
    and passed to its kernels as the last ``hyper`` entry."""

    rates: ClassVar[tuple[str, ...]] = RATES
    default_rate: ClassVar[str] = "adaptive"
    counter_names = ("t", "clock")
    #: parameters that may be +inf (every other one must be finite)
    unbounded: ClassVar[tuple[str, ...]] = ()
    rate: str

    @classmethod
    def extra_params(cls) -> tuple[str, ...]:
        return ("rate",)

    def configure(self, params: dict[str, Any]) -> None:
        rate = params.get("rate", self.default_rate)
        if rate not in RATES:
            raise ValueError(f"{self.name}: rate must be one of {', '.join(RATES)}, got {rate!r}")
        self.rate = str(rate)

    def hyper_values(self) -> list[float]:
        return [*super().hyper_values(), float(RATES.index(self.rate))]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "extra": {"rate": self.rate}}

    def validate(self) -> None:
        for key, value in self.params.items():
            if not (math.isfinite(value) or (key in self.unbounded and value == math.inf)):
                raise ValueError(f"{self.name}: {key} must be finite, got {value}")
        self.require("eta", self.params["eta"] > 0, "> 0")
        self.require("alpha", self.params["alpha"] > 0, "> 0")
        # beta > 0: a coordinate whose gradients are all 0 keeps n = 0 and the rate finite
        self.require("beta", self.params["beta"] > 0, "> 0")


class L1FOBOS(ScheduledRate):
    """FOBOS with L1 (soft-threshold) regularisation, regularised lazily and exactly."""

    name = "fobos"
    stride = 4
    # tuned on 200k synthetic Criteo rows (bench/tune_learners.py): eta for the global rate,
    # alpha and beta for the adaptive one; lambda = 1e-5 suits both
    defaults: ClassVar[dict[str, float]] = {"eta": 2.0, "lambda": 1e-5, "alpha": 0.15, "beta": 1.0}
    l1_param = "lambda"
    state_names = ("w", "n", "c")
    learn_kernel = staticmethod(fobos_learn)
    predict_kernel = staticmethod(fobos_predict)
    weights_kernel = staticmethod(fobos_weights)

    def validate(self) -> None:
        super().validate()
        self.require("lambda", self.params["lambda"] >= 0, ">= 0")

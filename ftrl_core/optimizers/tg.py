"""Truncated gradient (Langford, Li & Zhang, "Sparse Online Learning via Truncated
Gradient", JMLR 2009), per coordinate i, at step t (1-based):

    p   = sigmoid(w . x)            (the weights brought current, before this update)
    g_i = (p - y) x_i * importance
    w_i <- w_i - eta_t g_i
    if t % k == 0:  w_i <- T1(w_i, k eta_t gravity_i, theta)

    T1(v, a, theta) = max(0, v - a)   if 0 <= v <= theta
                      min(0, v + a)   if -theta <= v <= 0
                      v               otherwise

With k = 1 and theta = inf it is L1-FOBOS, bit for bit. The rate schedules are FOBOS's
(``rate``): ``global``, eta_t = eta / sqrt(t); ``adaptive``, n_i += g_i^2 first, then
eta_{t,i} = alpha / (beta + sqrt(n_i)).

Exact lazy regularisation: a record holds (w, n, c), c being the regularisation clock when
the coordinate was last brought current. The clock advances only on steps t with t % k == 0,
by k eta_t (global) or by k (adaptive, multiplied by the coordinate's own rate when applied).
While a coordinate is idle its w does not move, so: if |w_i| > theta no truncation happens at
all; if |w_i| <= theta every truncation is a soft threshold that keeps it under theta, and
these compose. When row t touches i the idle windows are caught up by one T1 of
gravity_i (C_{t-1} - c_i) (times eta_i) before the prediction; ``predict`` and ``weights``
compute that on read. State is float64, as for FOBOS.

Uncertainty: adaptive, u(x) = sum_i alpha |x_i| / (beta + sqrt(n_i)); global,
u(x) = sum_i |x_i| eta / sqrt(t + 1), the rate the next step would apply.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from .._jit import inline_kernel, kernel
from ..table import find_or_insert, find_slot, prefetch_next_row
from .fobos import ADAPTIVE, ScheduledRate, coordinate_rate, pending_shrink, soft_threshold
from .ftrl import sigmoid


@inline_kernel
def truncate(v: float, a: float, theta: float) -> float:
    """T1(v, a, theta): shrink towards 0 by ``a`` only while |v| <= theta."""
    if abs(v) <= theta:
        return soft_threshold(v, a)
    return v


@kernel
def tg_learn(
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
    theta = hyper[2]
    k = hyper[3]
    alpha = hyper[4]
    beta = hyper[5]
    adaptive = hyper[6] == ADAPTIVE
    period = np.int64(k)
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
            wj = truncate(
                state[q + 1],
                pending_shrink(
                    field_l1[fields[j]], state[q + 2], state[q + 3], clock, alpha, beta, adaptive
                ),
                theta,
            )
            w[j - a] = wj
            margin += wj * values[j]
        p = sigmoid(margin)
        p_out[r] = p
        gscale = (p - labels[r]) * weights[r]
        eta_t = eta / math.sqrt(t)
        regularise = np.int64(t) % period == 0
        clock_t = clock
        if regularise:
            clock_t = clock + k if adaptive else clock + k * eta_t
        for j in range(a, b):
            q = slots[j - a] * stride
            g = gscale * values[j]
            rate = eta_t
            if adaptive:
                n = state[q + 2] + g * g
                state[q + 2] = n
                rate = coordinate_rate(n, alpha, beta)
            wj = w[j - a] - rate * g
            if regularise:
                wj = truncate(wj, k * rate * field_l1[fields[j]], theta)
            state[q + 1] = wj
            state[q + 3] = clock_t
        counters[0] = t
        counters[1] = clock_t
    meta[2] = indptr.size - 1
    return n_new


@kernel
def tg_predict(
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
    theta = hyper[2]
    alpha = hyper[4]
    beta = hyper[5]
    adaptive = hyper[6] == ADAPTIVE
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
                margin += values[j] * truncate(
                    state[q + 1],
                    pending_shrink(
                        field_l1[fields[j]], n, state[q + 3], clock, alpha, beta, adaptive
                    ),
                    theta,
                )
            if adaptive:
                u += alpha * abs(values[j]) / (beta + math.sqrt(n))
            else:
                u += abs(values[j]) * next_rate
        p_out[r] = sigmoid(margin)
        u_out[r] = u


@kernel
def tg_weights(words, stride, capacity, keys, fields, hyper, field_l1, field_l2, counters, w_out):  # type: ignore[no-untyped-def]
    adaptive = hyper[6] == ADAPTIVE
    state = words.view(np.float64)
    for j in range(keys.size):
        s = find_slot(words, stride, capacity, keys[j])
        if s < 0:
            w_out[j] = 0.0
        else:
            q = s * stride
            w_out[j] = truncate(
                state[q + 1],
                pending_shrink(
                    field_l1[fields[j]],
                    state[q + 2],
                    state[q + 3],
                    counters[1],
                    hyper[4],
                    hyper[5],
                    adaptive,
                ),
                hyper[2],
            )


class TruncatedGradient(ScheduledRate):
    """Truncated gradient: L1 gravity every k steps, only on weights with |w| <= theta."""

    name = "tg"
    stride = 4
    # tuned on 200k synthetic Criteo rows (bench/tune_learners.py); k and theta move the
    # logloss by 1e-4 at most there, so the defaults keep the paper's FOBOS special case
    defaults: ClassVar[dict[str, float]] = {
        "eta": 2.0,
        "gravity": 1e-5,
        "theta": math.inf,
        "k": 1.0,
        "alpha": 0.15,
        "beta": 1.0,
    }
    l1_param = "gravity"
    #: theta = inf (truncate every weight, as FOBOS does) is the usual choice
    unbounded = ("theta",)
    state_names = ("w", "n", "c")
    learn_kernel = staticmethod(tg_learn)
    predict_kernel = staticmethod(tg_predict)
    weights_kernel = staticmethod(tg_weights)

    def validate(self) -> None:
        super().validate()
        self.require("theta", self.params["theta"] >= 0, ">= 0 (inf allowed)")
        k = self.params["k"]
        # the kernels take t % k in int64: keep k an integer well inside that range
        self.require("k", 1 <= k <= 1e9 and k == int(k), "an integer in [1, 1e9]")
        self.require("gravity", self.params["gravity"] >= 0, ">= 0")

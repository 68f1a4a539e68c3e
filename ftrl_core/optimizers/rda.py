"""L1-RDA, regularised dual averaging (Xiao, "Dual Averaging Methods for Regularized
Stochastic Learning and Online Optimization", JMLR 2010, section 3.1), with the auxiliary
function beta_t = gamma sqrt(t). Per coordinate i, with G_i the sum of its gradients over
the s steps done so far:

    lambda_s = lambda_i + gamma rho_i / sqrt(s)          (rho = 0: plain L1-RDA)
    w_i = 0                                              if s = 0 or |G_i| / s <= lambda_s
    w_i = -(sqrt(s) / gamma) (G_i / s - lambda_s sgn(G_i))   otherwise
    p   = sigmoid(w . x)            (the weights of the s steps done, before this example)
    g_i = (p - y) x_i * importance ;  G_i += g_i ;  s += 1

The bias is not regularised unless ``--field-l1`` names it (as with every learner): its
lambda is 0 and so is its rho_i, so no threshold applies to it; with an override, it gets
the override and rho. Every other coordinate has rho_i = rho.

The weight is a closed form of (G_i, s): an idle coordinate's weight changes as s grows
(its average gradient G_i / s decays towards the threshold) with no write at all, so the
weights are computed on read and no lazy bookkeeping is needed. A record is the key plus
G_i in float64 (16 bytes); s is counters[0].

Uncertainty: u(x) = sum_i |x_i| / (gamma sqrt(s + 1)), the effective step size of the closed
form at the next step (the same for every coordinate: RDA's rate is global).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from .._jit import inline_kernel, kernel
from ..table import find_or_insert, find_slot, prefetch_next_row
from .base import BIAS_FIELD, Optimizer
from .ftrl import sigmoid


@inline_kernel
def rda_weight(G: float, s: float, l1: float, gamma: float, rho: float) -> float:
    if s == 0.0:
        return 0.0
    root = math.sqrt(s)
    threshold = l1 + gamma * rho / root
    mean = G / s
    if abs(mean) <= threshold:
        return 0.0
    sign = 1.0 if mean > 0.0 else -1.0
    return -(root / gamma) * (mean - threshold * sign)


@kernel
def rda_learn(
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
    gamma = hyper[1]
    rho = hyper[2]
    bias_rho = hyper[3]
    state = words.view(np.float64)
    n_new = 0
    longest = 0
    for r in range(indptr.size - 1):
        longest = max(longest, indptr[r + 1] - indptr[r])
    slots = np.empty(longest, dtype=np.int64)
    for r in range(indptr.size - 1):
        a = indptr[r]
        b = indptr[r + 1]
        if meta[0] + (b - a) > meta[1]:  # the table is full: grow, then resume here
            meta[2] = r
            return n_new
        prefetch_next_row(words, stride, capacity, indptr, keys, r)
        steps = counters[0]
        margin = base[r]
        for j in range(a, b):
            s = find_or_insert(words, stride, capacity, keys[j], meta)
            if s < 0:
                s = -1 - s
                new_pos[n_new] = j
                n_new += 1
            slots[j - a] = s
            margin += values[j] * rda_weight(
                state[s * stride + 1], steps, field_l1[fields[j]], gamma,
                bias_rho if fields[j] == BIAS_FIELD else rho,
            )
        p = sigmoid(margin)
        p_out[r] = p
        gscale = (p - labels[r]) * weights[r]
        for j in range(a, b):
            q = slots[j - a] * stride + 1
            state[q] = state[q] + gscale * values[j]
        counters[0] = steps + 1.0
    meta[2] = indptr.size - 1
    return n_new


@kernel
def rda_predict(
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
    gamma = hyper[1]
    rho = hyper[2]
    bias_rho = hyper[3]
    steps = counters[0]
    next_rate = 1.0 / (gamma * math.sqrt(steps + 1.0))
    state = words.view(np.float64)
    for r in range(indptr.size - 1):
        prefetch_next_row(words, stride, capacity, indptr, keys, r)
        margin = base[r]
        u = 0.0
        for j in range(indptr[r], indptr[r + 1]):
            s = find_slot(words, stride, capacity, keys[j])
            if s >= 0:
                margin += values[j] * rda_weight(
                    state[s * stride + 1], steps, field_l1[fields[j]], gamma,
                    bias_rho if fields[j] == BIAS_FIELD else rho,
                )
            u += abs(values[j]) * next_rate
        p_out[r] = sigmoid(margin)
        u_out[r] = u


@kernel
def rda_weights(words, stride, capacity, keys, fields, hyper, field_l1, field_l2, counters, w_out):  # type: ignore[no-untyped-def]
    state = words.view(np.float64)
    for j in range(keys.size):
        s = find_slot(words, stride, capacity, keys[j])
        if s < 0:
            w_out[j] = 0.0
        else:
            w_out[j] = rda_weight(
                state[s * stride + 1], counters[0], field_l1[fields[j]], hyper[1],
                hyper[3] if fields[j] == BIAS_FIELD else hyper[2],
            )


class L1RDA(Optimizer):
    """L1-regularised dual averaging: weights in closed form from the gradient sums."""

    name = "rda"
    stride = 2
    # tuned on 200k synthetic Criteo rows (bench/tune_learners.py); lambda is small because
    # it bounds the *average* gradient G_i / t, tiny for any feature seen in few rows
    defaults: ClassVar[dict[str, float]] = {"lambda": 1e-5, "gamma": 0.25, "rho": 0.0}
    l1_param = "lambda"
    state_names = ("G",)
    learn_kernel = staticmethod(rda_learn)
    predict_kernel = staticmethod(rda_predict)
    weights_kernel = staticmethod(rda_weights)

    def hyper_values(self) -> list[float]:
        """lambda, gamma, rho, then the bias's rho: 0 unless --field-l1 regularises it."""
        bias_rho = self.params["rho"] if BIAS_FIELD in self.field_l1_overrides else 0.0
        return [*super().hyper_values(), bias_rho]

    def validate(self) -> None:
        super().validate()
        self.require("lambda", self.params["lambda"] >= 0, ">= 0")
        self.require("gamma", self.params["gamma"] > 0, "> 0")
        self.require("rho", self.params["rho"] >= 0, ">= 0")

"""FTRL-Proximal (McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013,
Algorithm 1), per coordinate i with state z_i, n_i:

    w_i = 0                                                  if |z_i| <= l1
    w_i = -(z_i - sgn(z_i) l1) / ((beta + sqrt(n_i)) / alpha + l2)   otherwise
    p   = sigmoid(w . x)            (the weights *before* this example's update)
    g_i = (p - y) x_i * importance
    sigma_i = (sqrt(n_i + g_i^2) - sqrt(n_i)) / alpha
    z_i += g_i - sigma_i w_i ;  n_i += g_i^2

Idle coordinates do not change, so no lazy bookkeeping is needed. State is float32 (as VW
keeps it): a record is the key plus (z, n) in one word, 16 bytes. Arithmetic is float64; the
values are rounded to float32 only when stored.

Uncertainty (McMahan 2013, section 4.4): u(x) = sum_i alpha |x_i| / (beta + sqrt(n_i)).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from .._jit import inline_kernel, kernel
from ..table import find_or_insert, find_slot, prefetch_next_row
from .base import Optimizer

MARGIN_CLIP = 35.0


@inline_kernel
def sigmoid(m: float) -> float:
    if m > MARGIN_CLIP:
        m = MARGIN_CLIP
    elif m < -MARGIN_CLIP:
        m = -MARGIN_CLIP
    return 1.0 / (1.0 + math.exp(-m))


@inline_kernel
def ftrl_weight(z: float, n: float, alpha: float, beta: float, l1: float, l2: float) -> float:
    return ftrl_weight_root(z, math.sqrt(n), alpha, beta, l1, l2)


@inline_kernel
def ftrl_weight_root(z: float, root: float, alpha: float, beta: float, l1: float, l2: float
                     ) -> float:
    """``ftrl_weight`` given ``sqrt(n)``, for a caller that needs the root too (a
    prediction's uncertainty, an update's sigma): one square root per feature, not two."""
    if abs(z) <= l1:
        return 0.0
    sign = 1.0 if z > 0.0 else -1.0
    return -(z - sign * l1) / ((beta + root) / alpha + l2)


@kernel
def ftrl_learn(words, stride, capacity, meta, indptr, keys, fields, values, labels, weights,
               base, hyper, field_l1, field_l2, counters, p_out, new_pos):  # type: ignore[no-untyped-def]
    alpha = hyper[0]
    beta = hyper[1]
    state = words.view(np.float32)
    n_new = 0
    longest = 0
    for r in range(indptr.size - 1):
        longest = max(longest, indptr[r + 1] - indptr[r])
    slots = np.empty(longest, dtype=np.int64)
    w = np.empty(longest, dtype=np.float64)
    # sqrt(n) of the row's coordinates as the weights read them, for the update's sigma: a
    # row's keys are distinct (the readers merge repeats, interactions included), so each
    # n is still the one read when its update comes
    roots = np.empty(longest, dtype=np.float64)
    for r in range(indptr.size - 1):
        a = indptr[r]
        b = indptr[r + 1]
        if meta[0] + (b - a) > meta[1]:  # the table is full: grow, then resume here
            meta[2] = r
            return n_new
        prefetch_next_row(words, stride, capacity, indptr, keys, r)
        margin = base[r]
        for j in range(a, b):
            s = find_or_insert(words, stride, capacity, keys[j], meta)
            if s < 0:
                s = -1 - s
                new_pos[n_new] = j
                n_new += 1
            slots[j - a] = s
            f = fields[j]
            root = math.sqrt(np.float64(state[4 * s + 3]))
            wj = ftrl_weight_root(np.float64(state[4 * s + 2]), root, alpha, beta,
                                  field_l1[f], field_l2[f])
            w[j - a] = wj
            roots[j - a] = root
            margin += wj * values[j]
        p = sigmoid(margin)
        p_out[r] = p
        gscale = (p - labels[r]) * weights[r]
        for j in range(a, b):
            s = slots[j - a]
            z = np.float64(state[4 * s + 2])
            n = np.float64(state[4 * s + 3])
            g = gscale * values[j]
            sigma = (math.sqrt(n + g * g) - roots[j - a]) / alpha
            state[4 * s + 2] = np.float32(z + g - sigma * w[j - a])
            state[4 * s + 3] = np.float32(n + g * g)
        counters[0] += 1.0
    meta[2] = indptr.size - 1
    return n_new


@kernel
def ftrl_predict(words, stride, capacity, indptr, keys, fields, values, base, hyper,
                 field_l1, field_l2, counters, p_out, u_out):  # type: ignore[no-untyped-def]
    alpha = hyper[0]
    beta = hyper[1]
    state = words.view(np.float32)
    for r in range(indptr.size - 1):
        prefetch_next_row(words, stride, capacity, indptr, keys, r)
        margin = base[r]
        u = 0.0
        for j in range(indptr[r], indptr[r + 1]):
            s = find_slot(words, stride, capacity, keys[j])
            root = 0.0  # sqrt(n) of an absent key (n = 0)
            if s >= 0:
                f = fields[j]
                root = math.sqrt(np.float64(state[4 * s + 3]))
                margin += values[j] * ftrl_weight_root(np.float64(state[4 * s + 2]), root,
                                                       alpha, beta, field_l1[f], field_l2[f])
            u += alpha * abs(values[j]) / (beta + root)
        p_out[r] = sigmoid(margin)
        u_out[r] = u


@kernel
def ftrl_weights(words, stride, capacity, keys, fields, hyper, field_l1, field_l2, counters,
                 w_out):  # type: ignore[no-untyped-def]
    state = words.view(np.float32)
    for j in range(keys.size):
        s = find_slot(words, stride, capacity, keys[j])
        if s < 0:
            w_out[j] = 0.0
        else:
            f = fields[j]
            w_out[j] = ftrl_weight(np.float64(state[4 * s + 2]), np.float64(state[4 * s + 3]),
                                   hyper[0], hyper[1], field_l1[f], field_l2[f])


class FTRLProximal(Optimizer):
    """FTRL-Proximal with per-coordinate learning rates and L1/L2 regularisation."""

    name = "ftrl"
    stride = 2
    defaults: ClassVar[dict[str, float]] = {"alpha": 0.1, "beta": 1.0, "l1": 1.0, "l2": 1.0}
    l1_param = "l1"
    l2_param = "l2"
    state_names = ("z", "n")
    state_dtype = np.float32
    learn_kernel = staticmethod(ftrl_learn)
    predict_kernel = staticmethod(ftrl_predict)
    weights_kernel = staticmethod(ftrl_weights)

    def validate(self) -> None:
        super().validate()
        self.require("alpha", self.params["alpha"] > 0, "> 0")
        self.require("beta", self.params["beta"] >= 0, ">= 0")
        self.require("l1", self.params["l1"] >= 0, ">= 0")
        self.require("l2", self.params["l2"] >= 0, ">= 0")

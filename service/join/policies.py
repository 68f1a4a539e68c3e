"""What the join learns, and when.

``wait``
    Every impression is learned exactly once, when its attribution window closes: label 1
    if a click joined it, else 0. The model sees true labels only, late by the window.

``fnw`` -- fake negative weighted (Ktena et al., "Addressing delayed feedback for
continuous training with neural networks in CTR prediction", RecSys 2019, section 4.3)
    Every impression is learned at once as a negative (a "fake negative" when a click
    follows); a click adds a positive copy of the impression. Without a correction the data
    the model learns from follow a biased distribution ``b``: with ``p = p(y=1|x)`` the
    true probability, each impression gives one negative and each click one more positive,
    so per impression there are ``p`` positives out of ``1 + p`` rows::

        b(y=1|x) = p / (1 + p),        b(y=0|x) = 1 / (1 + p).

    Importance sampling makes the loss under ``b`` an unbiased estimate of the loss under
    ``p``: ``E_p[l(y, f)] = E_b[(p(y|x) / b(y|x)) l(y, f)]``. The weights are::

        positives: p(y=1|x) / b(y=1|x) = p / (p / (1+p))              = 1 + p
        negatives: p(y=0|x) / b(y=0|x) = (1 - p) / (1 / (1+p))        = (1 - p)(1 + p)

    The true ``p`` is unknown; as in the paper, the model's own current prediction ``f(x)``
    stands in for it and is treated as a constant (no gradient flows through the weight).
    For the logistic loss the weighted gradient in the margin is then
    ``(1+p) (f - 1)`` for a positive and ``(1-p)(1+p) f`` for a negative; its expectation
    under ``b`` is ``p (f - 1) + (1 - p) f = f - p``, the gradient under ``p``
    (tests/test_join.py checks this against a plain reference). Here ``p`` is the prediction
    for the row when its batch is learned: the score returned by ``/v1/impressions`` for the
    negative, the model's prediction when the click arrives for the positive.

Not offered: learning positives at click time and negatives when the window closes. A
positive would be learned before its negative counterparts can be, so the model would
overestimate during every window and the bias never averages out.

Negative subsampling (``--negative-rate r``, ``wait`` only): a negative is kept when the
coin of its id (``ids.coin``) is below ``r`` and learned with weight ``1/r``, which keeps
the expected gradient unchanged. ``fnw``'s negatives are not subsampled: its weights assume
one negative per impression.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Policy = Literal["wait", "fnw"]
POLICIES: tuple[Policy, ...] = ("wait", "fnw")


def fnw_weights(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The fake-negative weights of rows with predictions ``p`` (constants) and labels:
    ``1 + p`` for a positive, ``(1 - p)(1 + p)`` for a negative."""
    p = np.asarray(p, dtype=np.float64)
    return np.where(np.asarray(labels) > 0.5, 1.0 + p, (1.0 - p) * (1.0 + p))


def subsampled_weight(rate: float) -> float:
    """The weight of a kept negative when negatives are kept with probability ``rate``."""
    return 1.0 / rate

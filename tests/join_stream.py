"""A synthetic stream of impressions and clicks with known click probabilities, driven
through the join's code in process (the learner's ``Joining``, as ``/v1/impressions`` and
``/v1/feedback`` run it, without HTTP): for checks that need 100k+ rows.

Each impression has three categorical fields; its true click probability is the logistic
of a bias plus one effect per field value. Impressions come ``RATE`` a second of event time;
a click follows after a delay drawn uniformly in ``[0, MAX_DELAY]``, well inside the
``WINDOW``, so every click joins (the join's lateness is tested elsewhere, not here). The
stream is sent in slices of ``SLICE`` seconds of event time, impressions then clicks, as a
producer would batch it; ``SLICE + MAX_DELAY <= WINDOW`` keeps every click on time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ftrl_core.metrics import logloss
from service.join import JoinState
from service.learner.fields import FieldNumbering
from service.learner.joining import Joining
from service.learner.training import Counters, Training
from service.learner_options import LearnerOptions
from service.stores.memory import MemoryStore

RATE = 20.0  # impressions per second of event time
WINDOW = 100.0
MAX_DELAY = 50.0
SLICE = 50.0
#: values per field; the effects are N(0, EFFECT_SD) per value
VOCAB = (40, 15, 200)
EFFECT_SD = 0.6
BIAS = -2.0  # a mean click rate near 0.16


@dataclass
class Stream:
    ids: list[str]
    values: np.ndarray  # (n, fields) value index of each field
    p: np.ndarray  # the true click probability
    clicked: np.ndarray  # bool
    ts: np.ndarray
    click_ts: np.ndarray  # nan where no click


def make_stream(n: int, seed: int) -> Stream:
    rng = np.random.default_rng(seed)
    effects = [rng.normal(0.0, EFFECT_SD, size=v) for v in VOCAB]
    values = np.stack([rng.integers(0, v, size=n) for v in VOCAB], axis=1)
    logit = BIAS + sum(e[values[:, j]] for j, e in enumerate(effects))
    p = 1.0 / (1.0 + np.exp(-logit))
    clicked = rng.random(n) < p
    ts = 1_000_000.0 + np.arange(n) / RATE
    click_ts = np.where(clicked, ts + rng.uniform(0.0, MAX_DELAY, size=n), np.nan)
    return Stream([f"s{seed}-{i}" for i in range(n)], values, p, clicked, ts, click_ts)


def requests(s: Stream) -> list[tuple[bool, bytes]]:
    """(is impressions, body) per slice: its impressions, then its clicks in time order."""
    out: list[tuple[bool, bytes]] = []
    slice_of = (s.ts - s.ts[0]) // SLICE
    click_slice = (s.click_ts - s.ts[0]) // SLICE
    clicks = np.flatnonzero(s.clicked)
    clicks = clicks[np.argsort(s.click_ts[clicks], kind="stable")]
    # up to the slice of the last click, which may come after the last impression
    last = int(max(slice_of[-1], click_slice[clicks].max() if len(clicks) else 0))
    bounds = np.searchsorted(slice_of, np.arange(last + 2))
    cbounds = np.searchsorted(click_slice[clicks], np.arange(last + 2))
    for k in range(len(bounds) - 1):
        imps = [{"id": s.ids[i], "ts": float(s.ts[i]),
                 "features": {f"f{j}": f"v{int(s.values[i, j])}" for j in range(len(VOCAB))}}
                for i in range(bounds[k], bounds[k + 1])]
        if imps:
            out.append((True, json.dumps({"events": imps}).encode()))
        these = clicks[cbounds[k]:cbounds[k + 1]]
        if len(these):
            fb = [{"id": s.ids[i], "ts": float(s.click_ts[i])} for i in these]
            out.append((False, json.dumps({"events": fb}).encode()))
    return out


def joining(options: LearnerOptions, negative_rate: float) -> Joining:
    model = options.build_model("jsonl")
    fields = FieldNumbering(model, [], strict=False)
    training = Training(model, fields, [], MemoryStore(), Counters())
    return Joining(training, JoinState(WINDOW, "wait", negative_rate=negative_rate))


@dataclass
class Run:
    p: np.ndarray  # each impression's prediction when it arrived
    learned: int  # rows learned
    status: dict[str, object]


def run(reqs: list[tuple[bool, bytes]], options: LearnerOptions, negative_rate: float) -> Run:
    j = joining(options, negative_rate)
    ps = []
    for imp, body in reqs:
        if imp:
            ps.append(j.impressions(body, None, 0.0)[0])
        else:
            j.feedback(body, None, 0.0)
    return Run(np.concatenate(ps), j.training.counters.learned, j.state.status())


def calibration(p: np.ndarray, y: np.ndarray) -> float:
    return float(p.mean() / y.mean())


def score(p: np.ndarray, y: np.ndarray) -> float:
    return float(logloss(y.astype(np.float64), p))

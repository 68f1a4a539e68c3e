"""Predictions: scored from the model as it is, without the learn lock, never changing it.

Unknown fields in a prediction must not be registered in the model (they would take ids
that training then gives to other fields): a prediction is parsed with a private copy of the
registry, whose extra fields get ids above every trained field's, so their keys are absent
and weigh 0. The copy is refreshed when training adds or renumbers fields, and when
predictions have added ``SPARE_FIELDS`` of their own.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np

from ftrl_core.model import Model
from ftrl_core.readers.jsonl import JsonlFormat

from ..events import body_problem
from .fields import FieldNumbering

#: unknown fields predictions may register in their copy of the registry before a re-copy
SPARE_FIELDS = 256


class Predictor:
    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self._fmt: JsonlFormat | None = None
        self._synced: tuple[int, int] = (-1, -1)  # (generation, fields) the copy has
        self.served = 0

    def predict(self, model: Model, fields: FieldNumbering, body: bytes | bytearray,
                events_only: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        """(p, uncertainty) of a ``{"events": [...]}`` body (labels are ignored);
        ``events_only``: as ``Model.predict_json``'s."""
        # the scan's arrays go to the kernel without a Batch (most of a one-event
        # prediction's Python was building it)
        scored = model.predict_json(body, self._format(model, fields), events_only)
        if scored is None:
            return None
        p, u, errors = scored
        if errors:
            raise body_problem(body, sorted(errors, key=lambda e: e.index),
                               "nothing was predicted")
        self.served += p.size
        return p, u

    def _format(self, model: Model, fields: FieldNumbering) -> JsonlFormat:
        now = (fields.generation, len(model.registry))
        fmt = self._fmt
        if fmt is None or self._synced != now \
                or len(fmt.registry) > now[1] + SPARE_FIELDS:
            # recycled outputs: a prediction is done with its batch before the next parse
            # (allocating them anew each body took most of a one-event prediction's parse)
            fmt = JsonlFormat(copy.deepcopy(model.registry),
                              replace(model.options, strict=self.strict), recycle=True)
            self._fmt = fmt
            self._synced = now
        return fmt

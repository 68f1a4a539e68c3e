"""A prediction worker's side: the learner's model, mapped.

``SharedModel`` builds a model from the published configuration whose state table is the
learner's table file, and follows the learner: ``refresh`` (a few word reads, before every
prediction) remaps the table when the learner published a grown one and reloads the field
registry when it grew. Readers never write to the model.

What a prediction sees: the model as the learner is writing it. A prediction made while a
batch is being learned may use some of that batch's updates and not others (the learner's
own answers, as in a one-process service, see whole batches only); an FTRL coordinate's z
and n are two 32-bit halves of one word, written one after the other. A table that has just
grown is seen one request late. This is why prediction workers serve FTRL only: the lazy
learners (rda, fobos, tg) read global clocks beside per-coordinate ones, and a clock read
ahead of a coordinate's would apply a negative pending shrinkage.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np

from ftrl_core.fields import FieldRegistry
from ftrl_core.model import Model
from ftrl_core.readers.jsonl import EventError, JsonlFormat

from . import shm

#: unknown fields predictions register in their private copy of the registry before a
#: re-copy (as ``learner.PREDICT_SPARE_FIELDS``)
SPARE_FIELDS = 256


class SharedModel:
    """The learner's model in ``directory``, once it is published (``ready``)."""

    def __init__(self, directory: Path, strict: bool) -> None:
        self.directory = directory
        self.strict = strict
        self._control = shm.map_words(directory / "control")
        self._table_no = 0
        self._fields = 0
        self.model: Model | None = None
        self._fmt: JsonlFormat | None = None

    @property
    def version(self) -> int:
        return int(self._control[shm.VERSION])

    def refresh(self) -> bool:
        """Follow the learner's latest publication; False while there is none yet."""
        for _ in range(100):  # a file unlinked between reading its number and opening it
            try:
                return self._refresh()
            except FileNotFoundError:
                continue
        raise RuntimeError(f"the learner's model in {self.directory} keeps moving")

    def _refresh(self) -> bool:
        table_no = int(self._control[shm.TABLE])
        if table_no == 0:
            return False
        if self.model is None:
            config = shm.read_json(self.directory / "config.json")
            config["fields"] = {"names": ["bias"], "pairs": []}
            self.model = Model.from_config(config)
        fields = int(self._control[shm.FIELDS])
        if fields != self._fields:
            registry = FieldRegistry.from_dict(
                shm.read_json(self.directory / f"fields-{fields}.json"))
            self.model.registry = registry
            self._fields = fields
            self._fmt = None
        if table_no != self._table_no:
            words = shm.map_words(self.directory / f"table-{table_no}")
            table = self.model.optimizer.table
            table.words, table.capacity = words, words.size // table.stride
            self._table_no = table_no
        return True

    def predict(self, body: bytes | bytearray, events_only: bool = False
                ) -> tuple[np.ndarray, np.ndarray, list[EventError]] | None:
        """(p, uncertainty, bad events) of a ``{"events": [...]}`` body (``refresh``
        first). Unknown fields are registered in a private copy of the registry only.
        ``events_only``: as ``Model.predict_json``'s."""
        assert self.model is not None
        fmt = self._fmt
        if fmt is None or len(fmt.registry) > self._fields + SPARE_FIELDS:
            options = replace(self.model.options, strict=self.strict)
            fmt = self._fmt = JsonlFormat(copy.deepcopy(self.model.registry), options,
                                          recycle=True)
        return self.model.predict_json(body, fmt, events_only)

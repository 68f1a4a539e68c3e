"""The learner process's side: the embedded store, publishing the model for readers.

``SharedMemoryStore`` is the ``memory://`` store (the model lives in this process; its data
directory, if any, makes it durable) that also keeps the model's state table in a file of
the shared
directory (``shm``) and tells readers, after each learned batch, what changed: a new table
file when the table grew, a new fields file when the registry did, and the model version.
Everything here runs under the learner's learn lock, between batches.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ftrl_core.batch import Batch
from ftrl_core.model import Model
from ftrl_core.table import GROWTH, MAX_LOAD

from ..stores import MemoryStore, Opened, StoreConfigError, StoreUnavailable
from ..stores.wal import FsyncPolicy
from . import shm


class SharedMemoryStore(MemoryStore):
    """``memory://``, with the model published in ``directory`` for prediction workers."""

    def __init__(self, directory: Path, url: str = "memory://", data_dir: Path | None = None,
                 fsync: FsyncPolicy = "always") -> None:
        super().__init__(url, data_dir, fsync)
        self.directory = directory
        self._control = shm.map_words(directory / "control", shm.CONTROL_WORDS)
        self._words: np.ndarray | None = None  # the published table's words
        self._table_no = 0
        self._fields = 0

    def open(self, build: Callable[[], Model], model_in: Path | None) -> Opened:
        opened = super().open(build, model_in)
        model = opened.model
        if model.optimizer.name != "ftrl":  # see view.py: what a worker's prediction reads
            raise StoreConfigError(
                f"prediction workers (--workers above 1 with --state memory://) serve FTRL "
                f"models only; {model_in or 'the model'} is {model.optimizer.name}: use one "
                "worker, or a Redis state store")
        config = model.config()
        config.pop("fields")  # published apart: they grow
        shm.write_json(self.directory / "config.json", config)
        self._control[shm.PID] = os.getpid()
        self.publish(model)
        return opened

    def before_learn(self, model: Model, batch: Batch) -> None:
        """Refuse (503, nothing learned) a batch that would grow the table beyond the room
        left in the shared directory: a shared file written past the room of its tmpfs
        kills the process (SIGBUS). Docker's /dev/shm is 64 MB unless ``--shm-size``."""
        table = model.optimizer.table
        needed = table.size + batch.nnz
        if needed <= MAX_LOAD * table.capacity:
            return
        capacity = table.capacity
        while needed > MAX_LOAD * capacity:
            capacity = int(capacity * GROWTH) + 1
        grown = capacity * table.stride * 8
        free = self.free_bytes()
        if grown > free:
            raise StoreUnavailable(
                f"the grown state table needs {grown >> 20} MiB in {self.directory}, which "
                f"has {free >> 20} MiB free (in a container, give it a larger /dev/shm)")

    def free_bytes(self) -> int:
        """Bytes the shared directory's file system has free."""
        st = os.statvfs(self.directory)
        return st.f_bavail * st.f_frsize

    def after_learn(self, model: Model, batch: Batch, seq: int) -> int:
        self.publish(model)
        return super().after_learn(model, batch, seq)

    def publish(self, model: Model) -> None:
        """Make what readers map the model as it is now (between two batches)."""
        fields = len(model.registry)
        if fields != self._fields:
            path = self.directory / f"fields-{fields}.json"
            shm.write_json(path, model.registry.to_dict())
            self._control[shm.FIELDS] = fields
            old = self.directory / f"fields-{self._fields}.json"
            self._fields = fields
            old.unlink(missing_ok=True)
        # fields first: a reader that sees a new field's keys knows the field
        if model.optimizer.table.words is not self._words:  # grown (rehashed), or new
            self._publish_table(model)
        self._control[shm.VERSION] = model.rows

    def _publish_table(self, model: Model) -> None:
        table = model.optimizer.table
        number = self._table_no + 1
        words = shm.map_words(self.directory / f"table-{number}", table.words.size)
        words[:] = table.words
        table.words = words  # the learner goes on learning in the shared file
        self._control[shm.TABLE] = number
        old = self.directory / f"table-{self._table_no}"
        self._words, self._table_no = words, number
        old.unlink(missing_ok=True)  # readers mapping it keep it until they remap

    def status(self) -> dict[str, object]:
        return {**super().status(), "shared_with_prediction_workers": True}

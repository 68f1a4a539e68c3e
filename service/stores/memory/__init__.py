"""``memory://``: the model lives in this process; a data directory makes it durable.

Without ``--data-dir`` nothing survives the process. With one (``DIR``):

- every accepted request is appended to the write-ahead log (``DIR/wal/``) before it is
  learned, and answered once the log is synced as ``--fsync`` says (``wal.log``);
- a checkpoint (``DIR/snap-<seq>/``, ``checkpoints``) is written every
  ``--snapshot-every`` seconds, on ``POST /v1/model/snapshot`` and at shutdown; it holds the
  model, the shadow variants and the learner's other state, and the log segments it covers
  are deleted;
- start-up loads the current checkpoint and learns the log records after it again: learning
  is deterministic in arrival order, so the model after a SIGKILL equals the model before
  it, bit for bit. A new directory gets a checkpoint of the fresh (or ``--model-in``) model
  at once, so the learner and its features are fixed from the first start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ftrl_core.batch import Batch
from ftrl_core.fields import FieldRegistry
from ftrl_core.model import Model

from .. import checkpoints
from ..base import Claim, Opened, load_model_in
from ..checkpoints import Checkpoint
from ..datadir import DirLock
from ..errors import StoreConfigError
from ..wal import FsyncPolicy, WriteAheadLog

log = logging.getLogger(__name__)


class MemoryStore:
    """The embedded store: nothing to share; a data directory's log and checkpoints."""

    shared = False

    def __init__(self, url: str = "memory://", data_dir: Path | None = None,
                 fsync: FsyncPolicy = "always") -> None:
        self.url = url
        self.data_dir = data_dir
        self.log: WriteAheadLog | None = None
        self._lock: DirLock | None = None
        if data_dir is not None:
            self.log = WriteAheadLog(data_dir / "wal", fsync)

    def open(self, build: Callable[[], Model], model_in: Path | None) -> Opened:
        if self.data_dir is None or self.log is None:
            return Opened(load_model_in(model_in) if model_in is not None else build())
        self._lock = DirLock(self.data_dir)
        self._lock.acquire()
        try:
            return self._open_dir(build, model_in)
        except BaseException:
            self._lock.release()
            raise

    def _open_dir(self, build: Callable[[], Model], model_in: Path | None) -> Opened:
        assert self.data_dir is not None and self.log is not None
        cp = checkpoints.load(self.data_dir)
        if cp is None:
            if (self.data_dir / "wal").exists() and any((self.data_dir / "wal").iterdir()):
                raise StoreConfigError(f"--data-dir {self.data_dir}: a write-ahead log without "
                                       "a checkpoint (CURRENT): not a data directory this "
                                       "program wrote, or damaged")
            model = load_model_in(model_in) if model_in is not None else build()
            checkpoints.write(self.data_dir, Checkpoint(model, 0, meta={"origin": str(
                model_in) if model_in is not None else "fresh"}))
            log.info("data directory %s created (%s model)", self.data_dir,
                     "the --model-in" if model_in is not None else "a fresh")
            cp = Checkpoint(model, 0)
        elif model_in is not None:
            raise StoreConfigError(f"--data-dir {self.data_dir} already holds a model "
                                   f"({cp.model.rows} rows): drop --model-in to resume it, or "
                                   "use an empty directory to start from the file")
        found = self.log.open(after=cp.log_seq)
        return Opened(cp.model, cp, found.records)

    def start(self, lock: asyncio.Lock, model: Model) -> list[asyncio.Task[None]]:
        return []  # the log's sync thread is its own

    def share_fields(self, registry: FieldRegistry, known: int) -> list[str] | None:
        return None

    def claim(self, key: str, fingerprint: int, ahead: int = 0) -> None:
        return None  # one process: the learner's own table decides

    async def claim_ahead(self, key: str, fingerprint: int) -> int:
        return 0

    def record_answer(self, key: str, fingerprint: int, accepted: int, version: int,
                      p: np.ndarray) -> None:
        pass

    def release(self, key: str, fingerprint: int, claim: Claim) -> None:
        pass

    def before_learn(self, model: Model, batch: Batch) -> None:
        pass

    def append(self, kind: int, payload: bytes) -> int:
        return 0 if self.log is None else self.log.append(kind, payload)

    def after_learn(self, model: Model, batch: Batch, seq: int) -> int:
        return seq

    def is_durable(self, ticket: int) -> bool:
        log = self.log
        return log is None or log.fsync != "always" or ticket <= log.synced_seq

    async def durable(self, ticket: int) -> None:
        if self.log is not None and ticket:
            await self.log.durable(ticket)

    async def sync(self) -> None:
        pass  # nothing shared; the log syncs on its own policy

    def checkpoint_position(self) -> int:
        if self.log is None:
            return 0
        self.log.roll()
        return self.log.last_seq

    def write_checkpoint(self, checkpoint: Checkpoint) -> Path | None:
        if self.data_dir is None or self.log is None:
            return None
        path = checkpoints.write(self.data_dir, checkpoint)
        self.log.drop_through(checkpoint.log_seq)
        return path

    def shared_copy(self, model: Model) -> Model | None:
        return None

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {"url": self.url, "healthy": True}
        if self.log is not None:
            out.update(healthy=self.log.broken is None, error=self.log.broken,
                       data_dir=str(self.data_dir), fsync=self.log.fsync,
                       log_seq=self.log.last_seq, synced_seq=self.log.synced_seq,
                       log_bytes=self.log.bytes_written, log_syncs=self.log.syncs)
        return out

    async def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self._lock is not None:
            self._lock.release()

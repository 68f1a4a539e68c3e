"""A Redis worker's place in the data directory: ``DIR/workers/<n>/``, one per worker
process, held with a lock for the process's life.

A slot keeps the worker's id (the ``<worker>`` of its flush ids, so a flush its log holds
is recognised by the shards when resent after a restart) and its write-ahead log. A
worker takes the lowest free slot, creating one when all are taken, so ``ctr serve
--workers N`` restarted with the same N finds every slot again, whichever process takes
which. A slot left with records no flush confirmed and no worker to take it (the service
restarted with fewer workers) is reported at start: it is learned when a worker takes it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..datadir import DirLock
from ..errors import StoreConfigError

log = logging.getLogger(__name__)

MAX_SLOTS = 1024


class WorkerSlot:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "workers"
        self.path: Path | None = None
        self.worker = ""
        self._lock: DirLock | None = None

    def acquire(self) -> None:
        for i in range(MAX_SLOTS):
            path = self.root / str(i)
            lock = DirLock(path)
            if lock.try_acquire():
                self.path, self._lock = path, lock
                self.worker = self._worker_id(path)
                log.info("worker slot %s (worker id %s)", path, self.worker)
                return
        raise StoreConfigError(f"{self.root}: all {MAX_SLOTS} worker slots are taken")

    @staticmethod
    def _worker_id(path: Path) -> str:
        file = path / "id"
        try:
            return file.read_text().strip()
        except FileNotFoundError:
            worker = os.urandom(6).hex()
            tmp = path / "id.tmp"
            tmp.write_text(worker + "\n")
            os.replace(tmp, file)
            return worker

    @property
    def wal(self) -> Path:
        assert self.path is not None
        return self.path / "wal"

    def orphans(self) -> list[Path]:
        """Other slots whose log holds records and whose lock is free right now."""
        out = []
        for path in sorted(self.root.glob("*")):
            if path == self.path or not (path / "wal").is_dir():
                continue
            if not any((path / "wal").glob("*.log")):
                continue
            lock = DirLock(path)
            if lock.try_acquire():
                lock.release()
                out.append(path)
        return out

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

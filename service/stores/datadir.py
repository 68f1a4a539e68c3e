"""A data directory held by one process at a time (an ``flock`` on ``DIR/LOCK``, released
by the kernel when the process dies, however it dies)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import StoreConfigError

LOCK_NAME = "LOCK"


class DirLock:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd = -1

    def try_acquire(self) -> bool:
        """Take the lock if it is free (False: another process holds it)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreConfigError(f"--data-dir {self.directory}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def acquire(self) -> None:
        if not self.try_acquire():
            holder = (self.directory / LOCK_NAME).read_text().strip() or "?"
            raise StoreConfigError(f"--data-dir {self.directory} is in use by another process "
                                   f"(pid {holder}); one server per data directory")

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

"""The directory a learner process publishes its model in, for prediction workers to map.

The supervisor makes it (under /dev/shm where there is one: memory, not disk) and removes
it when the service stops. Files:

- ``config.json``: the model's configuration (learner, hyperparameters, features);
- ``control``: four 64-bit words, each written whole, so a reader never sees half of one:
  ``[TABLE]`` the number K of the current ``table-K`` file, ``[VERSION]`` the model
  version (events learned), ``[FIELDS]`` the number N of the current ``fields-N.json``
  (its field count), ``[PID]`` the learner's process id;
- ``table-K``: the state table's words (exact 64-bit keys, open addressing; ``ftrl_core.
  table``). It is the learner's own table: the learner learns in it, readers map it. A
  table that grows is rehashed by the learner into private memory, then copied into
  ``table-K+1``, which ``control`` then names; the old file is unlinked, and a reader still
  mapping it keeps a valid (stale) mapping until its next request remaps;
- ``fields-N.json``: the field registry with N fields (names and interaction pairs),
  written to a temporary name then renamed;
- ``readers``: one row of counters per prediction worker (``stats``);
- ``learner.sock``: the learner's HTTP socket, for every request a reader does not answer.
"""

from __future__ import annotations

import json
import mmap
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

TABLE, VERSION, FIELDS, PID = range(4)
CONTROL_WORDS = 4


def make_dir() -> Path:
    """A new private directory, in shared memory when the system has it."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="ctr-model-", dir=base))


def learner_socket(directory: Path) -> Path:
    return directory / "learner.sock"


def map_words(path: Path, words: int | None = None, dtype: Any = np.uint64) -> np.ndarray:
    """The file as a writable array (made, zeroed, with ``words`` elements if given). The
    mapping lives as long as the array does, also after the file is unlinked. Writable for
    readers too: the kernels are compiled for writable arrays (readers never write)."""
    itemsize = np.dtype(dtype).itemsize
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if words is not None else 0)
    fd = os.open(path, flags, 0o600)
    try:
        if words is not None:
            os.ftruncate(fd, max(words, 1) * itemsize)
        size = os.fstat(fd).st_size
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    return np.frombuffer(mm, dtype=dtype)


def write_json(path: Path, value: object) -> None:
    """``value`` as JSON at ``path``, atomically (a reader sees the old file or the new)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())

"""State stores, one package per backend, picked by the scheme of the ``--state`` URL
(``urls``): ``memory`` (the embedded default) and ``redis`` (shards or a cluster). Their
one exception hierarchy is ``errors``; the write-ahead log and checkpoints of a data
directory are ``wal`` and ``checkpoints``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import (
    DurabilityError,
    IdentityError,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
)
from .urls import parse_state_url

if TYPE_CHECKING:
    from .base import Claim, Opened, StateStore
    from .memory import MemoryStore
    from .wal import FsyncPolicy

#: names imported on first use: `ctr train` asks only for ``parse_state_url`` and would pay
#: for the store classes, the write-ahead log and asyncio (a twentieth of its start-up)
_LAZY = {"Claim": ".base", "Opened": ".base", "StateStore": ".base",
         "MemoryStore": ".memory", "FsyncPolicy": ".wal"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value

__all__ = ["Claim", "DurabilityError", "IdentityError", "MemoryStore", "Opened", "StateStore",
           "StoreConfigError", "StoreError", "StoreUnavailable", "open_store",
           "parse_state_url"]


def open_store(url: str, model_name: str = "default", *, data_dir: Path | None = None,
               fsync: FsyncPolicy = "always", sync_every_events: int = 0,
               sync_every_ms: float = 0.0, buckets: int | None = None,
               dedupe_window: float = 600.0, auto_flush: bool = True,
               shared_dir: Path | None = None) -> StateStore:
    """The store for ``url``: ``memory://``, ``redis://host:port[,redis://...]`` (also
    ``rediss://``) or ``redis+cluster://host:port[,host:port...]``. ``shared_dir``: the
    memory store of the learner process of prediction workers, publishing the model
    there (``service.workers``)."""
    parsed = parse_state_url(url)
    if parsed.scheme == "memory":
        if shared_dir is not None:
            from ..workers.publisher import SharedMemoryStore

            return SharedMemoryStore(shared_dir, url, data_dir, fsync)
        from .memory import MemoryStore

        return MemoryStore(url, data_dir, fsync)
    from .redis import FlushPolicy, RedisStore  # redis-py is imported only by its users

    policy = FlushPolicy(sync_every_events, sync_every_ms, durable_locally=data_dir is not None)
    return RedisStore(url, model_name, policy=policy, data_dir=data_dir, fsync=fsync,
                      buckets=buckets, dedupe_window=dedupe_window, auto_flush=auto_flush)

"""State stores, one per file, picked by the scheme of the ``--state`` URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import StateStore, StateStoreError, StoreUnavailable
from .memory import MemoryStore

#: schemes the next steps bring
PLANNED = ("rediss",)

__all__ = ["MemoryStore", "StateStore", "StateStoreError", "StoreUnavailable", "open_store"]


def open_store(url: str, model_name: str = "default", *, sync_every_events: int = 0,
               sync_every_ms: float = 0.0, buckets: int | None = None) -> StateStore:
    """The store for ``url``: ``memory://``, ``redis://host:port[,redis://...]`` or
    ``redis+cluster://host:port[,host:port...]``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore(url)
    if scheme in ("redis", "redis+cluster"):
        from .redis import RedisStore  # redis-py is imported only by those who use it

        return RedisStore(url, model_name, sync_every_events=sync_every_events,
                          sync_every_ms=sync_every_ms, buckets=buckets)
    if scheme in PLANNED:
        raise StateStoreError(f"--state {url}: the {scheme}:// state store is not supported "
                              "yet; use --state redis://HOST:PORT or memory://")
    raise StateStoreError(f"--state {url}: unknown state store scheme {scheme!r} "
                          "(supported: memory://, redis://, redis+cluster://)")

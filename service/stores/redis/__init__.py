"""The Redis store: shards or a cluster's slot groups holding the model's state, a
worker-local cache, additive deltas (``store`` is the class workers use; ``state`` the
shared-state mechanics; ``transport``, ``shard`` and ``cluster`` the wire; ``buckets`` and
``chunks`` the layouts with their Lua scripts in ``lua/``; ``fieldsync`` the shared field
numbering; ``bulk`` whole-model transfers; ``policy`` when to flush; ``idempotency`` the
shared keys; ``health`` the PING probes; ``slots`` a worker's place in the data
directory)."""

from __future__ import annotations

from .bulk import clear, seed, snapshot
from .policy import FlushPolicy
from .state import DEFAULT_BUCKETS, RedisState
from .store import RedisStore

__all__ = ["DEFAULT_BUCKETS", "FlushPolicy", "RedisState", "RedisStore", "clear", "seed",
           "snapshot"]

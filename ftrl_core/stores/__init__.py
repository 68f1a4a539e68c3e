"""State stores under the learner: where a model's per-coordinate state lives.

``memory://`` keeps it in the process (the optimizer's table, snapshots to files).
``redis://host:port[/db][,redis://...]`` shares it between processes through Redis shards,
with the worker's table as a cache and additive deltas flushed in one script call per shard
(see ``redis_state``); ``redis+cluster://host:port[,host:port...]`` does so through a Redis
Cluster, the model split into hash-tagged slot groups (see ``cluster``). Layouts: exact keys
in bucketed small hashes (``buckets``) and, in hashed mode, fixed-point chunk strings
updated with BITFIELD (``chunks``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .bulk import clear, seed, snapshot
from .errors import FlushError, IdentityError, StateStoreError
from .urls import StateURL, parse_state_url

if TYPE_CHECKING:
    from .redis_state import DEFAULT_BUCKETS, RedisState


def open_state(url: str, model_name: str = "default", **options: object) -> RedisState | None:
    """The shared store for ``url``, or None for ``memory://`` (nothing to share)."""
    parsed = parse_state_url(url)
    if parsed.scheme == "memory":
        return None
    from .redis_state import RedisState

    return RedisState(url, model_name, **options)  # type: ignore[arg-type]


def __getattr__(name: str) -> Any:
    # redis-py costs a tenth of a second to import: only processes that use Redis pay it
    if name in ("DEFAULT_BUCKETS", "RedisState"):
        from . import redis_state

        return getattr(redis_state, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_BUCKETS",
    "FlushError",
    "IdentityError",
    "RedisState",
    "StateStoreError",
    "StateURL",
    "clear",
    "open_state",
    "parse_state_url",
    "seed",
    "snapshot",
]

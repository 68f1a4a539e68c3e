"""Staged flushes: how a stream consumer's flush survives the consumer's death mid-flight.

A process that dies in the middle of a flush may have reached some shards and not others. A
worker with a data directory resends it from its log when it restarts; a stream consumer's
entries are claimed by *another* consumer instead, which must know whether their events are
in the state. So the consumer first stages a copy of every shard's call on shard 0
(``pf:<flush id>``), then sends them, then drops the copy: a staged copy means "maybe partly
applied": whoever finds it resends it (each shard applies a worker's flush at most once,
``common.lua``) and it is then applied; no copy means applied everywhere if shard 0 has it,
and sent nowhere if not.
"""

from __future__ import annotations

import logging

from . import transport
from .state import Flush, RedisState

log = logging.getLogger(__name__)


def stage(state: RedisState, flush: Flush) -> None:
    key = f"{state.prefix}pf:{flush.flush_id}"
    state.call(0, "hset", key, mapping={str(i): c[0] for i, c in flush.calls.items()})
    state.call(0, "expire", key, state.flush_ttl)


def unstage(state: RedisState, flush_id: str) -> None:
    state.call(0, "delete", f"{state.prefix}pf:{flush_id}")


def settled(state: RedisState, flush_id: str) -> bool:
    """Whether the flush ``flush_id`` is in the state on every shard, completing it first
    if it was staged and maybe partly applied (a consumer that died in it)."""
    staged = state.call(0, "hgetall", f"{state.prefix}pf:{flush_id}")
    if staged:
        log.info("completing flush %s, staged by a consumer that stopped in it", flush_id)
        transport.roundtrip(state, {int(k): bytes(v) for k, v in staged.items()})
        unstage(state, flush_id)
        return True
    return state.flush_applied(flush_id)

"""One field registry for every process that shares a model through Redis.

Keys carry their field's id in their top bits (``hashing``). Fixed-schema formats number
their columns the same way everywhere, but JSON lines and VW namespaces register fields in
order of first appearance: two workers that meet ``site`` and ``app`` in opposite orders
would give one feature two keys, and two features' updates would land on ids that mean
different fields to different workers. So the numbering is claimed in Redis, atomically:
``<prefix>fields`` is the list of names in id order, ``<prefix>field-ids`` maps a name to
its id; ``CLAIM`` appends the names it does not know and answers the list from a position
on, in one script call.

A worker's registry is always a prefix of the shared list (it claims every field before it
learns a key of it), so only new fields cost a round trip: nothing on the hot path. When a
worker's new fields were numbered differently by the shared list (another worker claimed
other fields first), the worker's caller rolls its registry back to the agreed prefix,
adds the shared names in their order and parses the batch again (the service does; see
``LearnerService``); the batch was not learned yet, so no key with a wrong id is stored.
"""

from __future__ import annotations

from typing import Any, Protocol

from ftrl_core.fields import OVERFLOW_NAME, FieldRegistry
from ftrl_core.hashing import MAX_FIELDS

from ..errors import IdentityError


class Claimer(Protocol):
    """Where the shared list lives: shard (or slot group) 0 under ``prefix``."""

    @property
    def prefix(self) -> str: ...

    def call(self, i: int, method: str, *args: Any, **kw: Any) -> Any:
        ...


#: KEYS: the list, the name -> id hash. ARGV: the position to answer from, the most fields
#: a registry holds, the overflow field's name, then the names to claim in the claimer's id
#: order. The last id is the overflow field's (``fields.OVERFLOW_FIELD``): when the other ids
#: are used up, the first name that finds them so opens it, and the names after it are not
#: numbered (they share it, as in every registry). It has no entry in the hash (it is never
#: found by name), and the claimer's own overflow name counts only at that last id.
CLAIM = """
local known, most, overflow = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for i = 4, #ARGV do
  local name, n = ARGV[i], redis.call('LLEN', KEYS[1])
  if name == overflow then
    if n == most - 1 then redis.call('RPUSH', KEYS[1], overflow) end
  elseif redis.call('HEXISTS', KEYS[2], name) == 0 then
    if n < most - 1 then
      redis.call('RPUSH', KEYS[1], name)
      redis.call('HSET', KEYS[2], name, n)
    elseif n == most - 1 then
      redis.call('RPUSH', KEYS[1], overflow)
    end
  end
end
return redis.call('LRANGE', KEYS[1], known, -1)
"""


def claim(state: Claimer, names: list[str], known: int) -> list[str]:
    """Claim ``names`` (ids ``known``, ``known + 1``, ... in the caller's registry) and
    return the shared names from position ``known`` on."""
    prefix = state.prefix
    reply = state.call(0, "eval", CLAIM, 2, prefix + "fields", prefix + "field-ids", known,
                       MAX_FIELDS, OVERFLOW_NAME, *names)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in reply]


def share(state: Claimer, registry: FieldRegistry, known: int,
          adopt: bool) -> list[str] | None:
    """Claim the fields ``registry`` holds beyond its first ``known`` (which agree with the
    shared list). None when the ids agree; with ``adopt``, the fields other processes
    claimed since are then added to ``registry`` too. Otherwise the shared names from
    ``known`` on, for the caller to renumber by."""
    mine = registry.names[known:]
    shared = claim(state, mine, known)
    if shared[:len(mine)] != mine:
        return shared
    if adopt:
        for name in shared[len(mine):]:
            registry.add(name)
    return None


def renumbered(registry: FieldRegistry, shared: list[str]) -> FieldRegistry:
    """A registry whose ids are the shared list's (``shared`` from id 0 on), with the same
    interaction pairs; for a model that has learned nothing yet."""
    if not shared or shared[0] != registry.names[0]:
        raise IdentityError(f"the shared field list starts with {shared[:1]}, not the bias")
    out = FieldRegistry(shared[1:])
    for a, b, pair in registry.pairs:
        out.pairs.append((out.id(registry.names[a]), out.id(registry.names[b]),
                          out.id(registry.names[pair])))
    return out

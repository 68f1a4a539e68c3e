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

from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from ..fields import FieldRegistry, TooManyFieldsError
from ..hashing import MAX_FIELDS
from .errors import IdentityError

if TYPE_CHECKING:
    from .redis_state import RedisState

#: KEYS: the list, the name -> id hash. ARGV: the position to answer from, the most fields
#: a registry holds, then the names to claim in the claimer's id order.
CLAIM = """
local known, most = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    local n = redis.call('LLEN', KEYS[1])
    if n >= most then
      return redis.error_reply('TOOMANY more than ' .. most .. ' distinct fields (at '
        .. ARGV[i] .. ')')
    end
    redis.call('RPUSH', KEYS[1], ARGV[i])
    redis.call('HSET', KEYS[2], ARGV[i], n)
  end
end
return redis.call('LRANGE', KEYS[1], known, -1)
"""


def claim(state: RedisState, names: list[str], known: int) -> list[str]:
    """Claim ``names`` (ids ``known``, ``known + 1``, ... in the caller's registry) and
    return the shared names from position ``known`` on."""
    prefix = state.prefix
    try:
        reply = state.call(0, "eval", CLAIM, 2, prefix + "fields", prefix + "field-ids",
                            known, MAX_FIELDS, *names)
    except ResponseError as exc:
        if str(exc).startswith("TOOMANY"):
            raise TooManyFieldsError(str(exc)[len("TOOMANY "):]) from None
        raise
    return [n.decode() if isinstance(n, bytes) else str(n) for n in reply]


def share(state: RedisState, registry: FieldRegistry, known: int,
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

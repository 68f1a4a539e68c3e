"""Idempotency keys shared by the workers of a Redis store (the rules are the learner's,
``service.learner.idempotency``; this is how they hold across workers).

A request with a key first *claims* it on shard 0, under the learn lock, before anything
of it is learned: ``i:<key>`` becomes ``pending`` with the id of the flush that will carry
the request's deltas (this worker's next). That flush, applied on shard 0, replaces the
claim with the request's answer (``common.lua``), atomically with the deltas. Another
worker that meets the key then finds:

- the answer: it answers with it and learns nothing;
- a pending claim of another worker whose flush is not applied yet: 409, retry later (the
  owner is alive and will flush it, or died and its data directory's log will learn it
  again when it restarts);
- a pending claim whose flush *was* applied without it: its claimer died between the claim
  and logging the request (the request was never acknowledged): the key is free again.

A request refused after its claim (a 4xx: nothing of it learned) deletes the claim if it is
still its own (``release``): otherwise another worker would answer the key's retry 409, or
a corrected body's 422 "reused for another body", until the claimer's next flushes.

A claim names a flush its worker has not sent yet, so a worker that dies leaves claims
naming flushes its next run would only reach after some writing flushes of its own. If
no request comes to it, they never come, and another worker would answer 409 to the
key's retries until the record expires. A restarted worker therefore skips those flush
numbers first (``release_claims``): its claims whose requests its log holds are claimed
again when the log is learned again; the others are free at once.

Records live ``--dedupe-window`` seconds. An answer is 17 bytes plus 4 per event.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ..base import Claim

if TYPE_CHECKING:
    from .state import RedisState

#: a claim made before the learn lock names the flush this many after the last prepared:
#: valid if at most one more flush is prepared before the request is learned
CLAIM_AHEAD = 2
#: the flush numbers a restarted worker skips: its last run's claims name at most the
#: flush ``CLAIM_AHEAD`` after the last prepared, and that one may not have been logged
CLAIM_HORIZON = CLAIM_AHEAD + 1

#: KEYS[1] i:<key>. ARGV: prefix, worker, the flush seq that will carry the request,
#: fingerprint, TTL (s). Reply: {status[, the answer record]}.
CLAIM = """
local rec = redis.call('GET', KEYS[1])
local fp = tonumber(ARGV[4])
if rec then
  local rfp = struct.unpack('<I4', rec, 2)
  if string.sub(rec, 1, 1) == 'd' then
    if rfp ~= fp then return {'mismatch'} end
    return {'done', rec}
  end
  local _, rseq = struct.unpack('<I4I4', rec, 2)
  local rworker = string.sub(rec, 10)
  if rworker ~= ARGV[2] then
    local applied = tonumber(redis.call('GET', ARGV[1] .. 'w:' .. rworker) or '0')
    if applied < rseq then
      if rfp ~= fp then return {'mismatch'} end
      return {'pending'}
    end
  end
end
redis.call('SET', KEYS[1], 'p' .. struct.pack('<I4I4', fp, tonumber(ARGV[3])) .. ARGV[2],
           'EX', ARGV[5])
return {'claimed'}
"""

_DONE = struct.Struct("<cIIQ")


def claim(state: RedisState, key: str, fingerprint: int, ttl: int) -> Claim:
    """Claim ``key`` for the request about to be learned (its deltas go in the next
    writing flush, ``state.seq + 1``)."""
    seq = state.seq + 1
    reply = state.call(0, "eval", CLAIM, 1, f"{state.prefix}i:{key}", state.prefix,
                       state.worker, seq, fingerprint, max(int(ttl), 1))
    found = _claim_reply(reply)
    return replace(found, seq=seq) if found.status == "claimed" else found


def claim_ahead(state: RedisState, key: str, fingerprint: int, ttl: int, seq: int) -> bool:
    """Claim ``key`` for a request not yet under the learn lock, naming flush ``seq`` as
    the one that will carry it (from a worker thread: one attempt on shard 0's redis-py
    client, no retry, no reset of the shard's flush connection). A claim naming a later
    flush than the one that does carry the request is safe: its answer replaces the claim
    when that flush is applied, and a claimer that died is only recognised one flush
    later. True: claimed; False: anything else (the caller claims again under the lock)."""
    shard = state.shards[0]
    reply = shard.client.eval(CLAIM, 1, f"{shard.prefix}i:{key}", shard.prefix,
                              state.worker, seq, fingerprint, max(int(ttl), 1))
    return _claim_reply(reply).status == "claimed"


#: KEYS[1] i:<key>. ARGV[1]: the pending record a claim wrote. Deleted if it is still that
#: one (another worker's later claim, or an answer, stays).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"""


def release(state: RedisState, key: str, fingerprint: int, seq: int) -> None:
    """Delete this worker's claim of ``key`` for flush ``seq`` (its request was refused).
    One attempt on shard 0's redis-py client: the caller holds the learn lock, and a claim
    left behind only waits for its flush, as before."""
    shard = state.shards[0]
    record = b"p" + struct.pack("<II", fingerprint, seq) + state.worker.encode()
    shard.client.eval(RELEASE, 1, f"{shard.prefix}i:{key}", record)


#: KEYS[1] w:<worker>. ARGV: the sequence, TTL (s). Raises the worker's applied sequence
#: (never lowers it: a flush of a higher one was applied).
ADVANCE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 1
"""


def release_claims(state: RedisState) -> None:
    """At a restart, once the last run's unconfirmed flush is resent and ``state.seq`` is
    its last flush: skip the flush numbers its claims may name, on shard 0 too (where
    ``CLAIM`` reads them), so no claim of the last run stays pending."""
    state.seq += CLAIM_HORIZON
    state.call(0, "eval", ADVANCE, 1, f"{state.prefix}w:{state.worker}", state.seq,
               state.flush_ttl)


def _claim_reply(reply: list[bytes]) -> Claim:
    status = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    if status == "done":
        _, _, accepted, version = _DONE.unpack_from(reply[1], 0)
        p = np.frombuffer(reply[1], dtype="<f4", offset=_DONE.size).copy()
        return Claim("done", accepted, version, p)
    return Claim(status)  # type: ignore[arg-type]


def pack_answer(key: str, fingerprint: int, accepted: int, version: int,
                p: np.ndarray) -> bytes:
    """One entry of a flush's answers blob (``common.lua`` stores it as ``i:<key>``)."""
    k = key.encode()
    record = _DONE.pack(b"d", fingerprint, accepted, version) + \
        np.asarray(p, dtype="<f4").tobytes()
    return struct.pack("<H", len(k)) + k + struct.pack("<I", len(record)) + record

"""A Redis worker's write-ahead log (in its data-directory slot, ``slots``): the requests
it accepted, and the flushes that carry their deltas to the shards.

Records, in order: ``BATCH``/``LINES`` (a request, logged and synced before it is learned
and answered), ``FLUSH`` (a flush about to be sent: its id, the ticket of the last request
it carries, every shard's call as sent) and ``FLUSH_DONE`` (every shard confirmed it). After
a restart (``recover``): the last ``FLUSH`` without its ``FLUSH_DONE`` is resent as it was
(a shard that applied it answers "repeat": ``common.lua``), and the requests logged after
the last flush's ticket are learned again against the shared state. Segments whose records
all precede a confirmed flush's ticket are dropped as flushes complete.
"""

from __future__ import annotations

import logging
import struct

from ..wal import Kind, Record, WriteAheadLog
from . import idempotency
from .state import Flush, RedisState

log = logging.getLogger(__name__)


#: the attribution join's records (``learner.joining``)
JOIN_KINDS = (Kind.IMPRESSIONS, Kind.PREDICT_LOG, Kind.FEEDBACK, Kind.JOIN_TICK,
              Kind.JOIN_MARKS)


def recover(wal: WriteAheadLog, state: RedisState, join_from: int = 0
            ) -> tuple[list[Record], int]:
    """Open the worker's log: resend its unconfirmed flush; (the tail to learn again, the
    position the last flush covers). The tail also holds the join's records after
    ``join_from`` (the join snapshot's position, ``join_log``), even those the last flush
    covers: they rebuild the pending impressions."""
    found = wal.open(after=None)
    last: tuple[str, int, dict[int, bytes]] | None = None
    done: set[str] = set()
    for r in found.records:
        if r.kind == Kind.FLUSH:
            last = decode_flush(r.payload)
        elif r.kind == Kind.FLUSH_DONE:
            done.add(bytes(r.payload).decode())
    upto = 0
    if last is not None:
        flush_id, upto, payloads = last
        state.seq = max(state.seq, int(flush_id.rpartition(":")[2]))
        if flush_id not in done:
            log.info("resending flush %s, which the last run logged but did not see "
                     "confirmed", flush_id)
            state.resend(payloads)
            wal.append(Kind.FLUSH_DONE, flush_id.encode())
    state.seq = max(state.seq, state.applied_seq(state.worker))
    idempotency.release_claims(state)
    state.refresh_counters()
    tail = [r for r in found.records
            if (r.kind in (Kind.BATCH, Kind.LINES) and r.seq > upto)
            or (r.kind in JOIN_KINDS and r.seq > join_from)]
    if tail:
        log.info("learning again %d request(s) the last run logged after its last flush",
                 len(tail))
    return tail, upto


def encode_flush(flush: Flush) -> bytes:
    fid = flush.flush_id.encode()
    parts = [struct.pack("<H", len(fid)), fid, struct.pack("<QH", flush.upto, len(flush.calls))]
    for shard, (payload, _, _) in flush.calls.items():
        parts.append(struct.pack("<HI", shard, len(payload)))
        parts.append(payload)
    return b"".join(parts)


def decode_flush(payload: memoryview) -> tuple[str, int, dict[int, bytes]]:
    data = bytes(payload)
    (n,) = struct.unpack_from("<H", data, 0)
    flush_id = data[2:2 + n].decode()
    upto, calls = struct.unpack_from("<QH", data, 2 + n)
    pos = 2 + n + 10
    out = {}
    for _ in range(calls):
        shard, size = struct.unpack_from("<HI", data, pos)
        pos += 6
        out[shard] = data[pos:pos + size]
        pos += size
    return flush_id, upto, out

"""The delta log: exact 64-bit keys whose shards keep the workers' deltas, which the
workers merge.

With the bucketed layout alone (``buckets``) every flush has Redis merge each coordinate it
carries in Lua: 4-6 us of server time per coordinate, four to five coordinates per event at
the default window, which is what two cores could not carry. Here a flush costs Redis one
append, whatever it holds:

- **a flush** appends its rows ([key][base record][current record], as the bucketed flush
  sends them) to the shard's log, a stream, as one entry (fields ``f``: the flush id, ``d``:
  the rows), under the same flush id rule (a resent flush is not appended twice). Its reply
  brings the entries other workers appended since this worker's cursor, which the worker
  merges into its cache itself (``ftrl_core.deltas.fold_rows``: the merge rule of the
  bucketed script, in compiled code), the keys it learned on meanwhile keeping their own
  learning on top. A worker thus gets every other worker's update at its next flush, not
  only those of the keys it wrote;
- **the bucketed hashes** (the same ``b:<bucket>`` hashes, the same records) hold the state
  as of one entry, ``pos``. Every ``COMPACT_EVERY`` seconds one worker folds the entries
  after ``pos`` into them (``compact``): it reads the buckets' values of the keys those
  entries touch (HMGET, one per bucket), applies the entries in log order by the same rule,
  and writes the results (HSET, one per bucket) and the new ``pos`` in one MULTI/EXEC
  transaction under WATCH, which applies only if ``pos`` did not move, the worker still
  holds the compaction lock and no snapshot paused the shard. A coordinate touched by many
  flushes in that time is written once. Plain commands, not a script: in Lua, slicing the
  fields out of one argument and passing them on cost the shard 4-5 times what the HSETs
  and HMGETs themselves did (``INFO commandstats`` over a syn1m run);
- **readers** (a worker starting, a snapshot, ``ctr load-state``) read the buckets and fold
  the entries after ``pos`` (``read_folded``), with the lock held (or flushes paused) so
  that no compaction moves ``pos`` meanwhile;
- **the trim**: a compaction drops the entries that every live worker has read (each call
  notes the worker's cursor and the time in the hash ``cur``; a cursor not renewed for
  ``CURSOR_KEEP_MS`` is a worker gone). A worker whose cursor fell below the trim (it was
  gone that long) is told so and reads its shard's state again (``RedisState``).

One worker reproduces the memory store exactly, as before: its rows' base records equal the
stored ones, so each becomes its current record. Several workers' caches may differ from
the stored state by the rounding of the order they merged in (float32 records), as they do
with the bucketed layout. Models that admit or evict keep the bucketed layout (the sweep
works on stored coordinates and their ages), and a model keeps the layout it was created
with.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ftrl_core.deltas import fold_rows, store_records
from ftrl_core.table import StateTable

from ..errors import StoreUnavailable
from . import replies, transport
from .buckets import KEY_BYTES, BucketLayout
from .resp import command, keyed_commands

if TYPE_CHECKING:
    from .state import RedisState

#: seconds between two compactions of a worker's shards: a longer time folds more repeats of
#: a coordinate into one write (syn1m: 4.7 distinct coordinates per event in 10,000 events,
#: 2.2 in 100,000) but lets the log grow longer (about 24 B per row at 2 float32 columns)
COMPACT_EVERY = 2.0
#: entries folded by one compaction at most (its transaction holds the shard meanwhile)
COMPACT_ENTRIES = 64
#: compactions a worker runs on a shard per turn while each finds a full COMPACT_ENTRIES
#: (a log that grew faster than one a turn folds: every flush of every worker appends an
#: entry to each shard, so 2 workers flushing every 2,000 rows at 75k events/s each, say,
#: bring 75 entries a second where one compaction a turn by each folds 64 in all)
COMPACT_ROUNDS = 4
#: fields one HMGET or HSET of a compaction carries at most (a bucket holds about 100)
FIELDS_PER_COMMAND = 500
#: how long (ms) a worker's cursor keeps the entries it has not read from the trim
CURSOR_KEEP_MS = 60_000
#: the compaction lock's lifetime (ms): short, so that a holder killed mid-way (or a shard
#: restarted from its AOF with the lock in it) holds up the others for seconds only; a
#: reader renews it as it goes (``read_folded``)
LOCK_MS = 10_000
#: the read exchange of an idle worker (s): keeps its cursor live and its cache current
CATCH_UP_EVERY = 5.0
START = b"0-0"


class DeltaLogLayout(BucketLayout):
    """Encode the delta log's calls (``log.lua``); the buckets as ``BucketLayout``."""

    script = "log.lua"
    kind = "log"

    def encode_flush(self, sha: str, declared: list[bytes], head: list[bytes], worker: bytes,
                     cursor: bytes, keys: np.ndarray, base: np.ndarray, cur: np.ndarray
                     ) -> bytes:
        return command(b"EVALSHA", sha, len(declared), *declared, *head, b"f", worker, cursor,
                       self.rows(keys, base, cur).tobytes())

    def bucket_order(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The order that sorts ``keys`` by bucket, and their buckets in that order (one
        sort serves a compaction's reads and writes)."""
        bucket, _ = self.route(keys)
        order = np.argsort(bucket)
        return order, np.ascontiguousarray(bucket[order])

    def by_bucket(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``keys`` in the order of their buckets, and those buckets."""
        order, buckets = self.bucket_order(keys)
        return np.ascontiguousarray(keys[order]), buckets

    def reads(self, prefix: bytes, keys: np.ndarray, buckets: np.ndarray) -> tuple[bytes, int]:
        """HMGET commands, one per bucket, reading the stored records of ``keys`` (in the
        order of their ``buckets``: ``by_bucket``)."""
        return keyed_commands(b"HMGET", prefix + b"b:", buckets,
                              np.ascontiguousarray(keys[:, None].view(np.uint8)),
                              (KEY_BYTES,), FIELDS_PER_COMMAND)

    def writes(self, prefix: bytes, keys: np.ndarray, buckets: np.ndarray, recs: np.ndarray
               ) -> tuple[bytes, int]:
        """HSET commands, one per bucket, storing ``recs`` as the records of ``keys`` (in
        the order of their ``buckets``: ``by_bucket``)."""
        return keyed_commands(b"HSET", prefix + b"b:", buckets, self.rows(keys, recs),
                              (KEY_BYTES, self.width), FIELDS_PER_COMMAND)

    def warm_up(self) -> None:
        """Run the flush's, the compaction's and the replies' packing once on two keys."""
        keys = np.array([1, 2], dtype=np.uint64)
        recs = np.zeros((keys.size, self.words), dtype=np.uint64)
        self.encode_flush("", [], [], b"", b"", keys, recs, recs)
        keys, buckets = self.by_bucket(keys)
        self.reads(b"", keys, buckets)
        self.writes(b"", keys, buckets, recs)
        self.parse_rows([self.rows(keys, recs, recs).tobytes()])

    @property
    def row_bytes(self) -> int:
        """The bytes of one row of an entry: its key, base record and current record."""
        return 8 * (1 + 2 * self.words)

    def parse_rows(self, blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, base records, current records) of entries' rows, in order."""
        data = np.frombuffer(b"".join(blobs), dtype=np.uint64) if blobs else \
            np.empty(0, dtype=np.uint64)
        step = self.row_bytes // 8
        if data.size % step:
            raise ValueError(f"log rows of {data.size} words, not a multiple of {step}")
        table = data.reshape(-1, step)
        return (np.ascontiguousarray(table[:, 0]),
                np.ascontiguousarray(table[:, 1:1 + self.words]),
                np.ascontiguousarray(table[:, 1 + self.words:]))


def id_before(a: bytes, b: bytes) -> bool:
    """Whether stream id ``a`` comes before ``b``."""
    am, _, aseq = a.partition(b"-")
    bm, _, bseq = b.partition(b"-")
    return (int(am), int(aseq or 0)) < (int(bm), int(bseq or 0))


def own_entry(flush_id: bytes, worker: str, own_from: int) -> bool:
    """Whether an entry was appended by a flush this process prepared (its deltas are in
    the cache already): this worker's id and a sequence from ``own_from`` on. A flush of an
    earlier run of the same worker (resent from its log) is merged like any other's."""
    who, _, seq = flush_id.decode().rpartition(":")
    return own_from > 0 and who == worker and int(seq) >= own_from


def _lock(state: RedisState, i: int, ms: int, wait: float) -> bytes | None:
    """Take shard ``i``'s compaction lock (waiting up to ``wait`` s); its token or None."""
    key = state.shards[i].prefix + "lock"
    token = os.urandom(8).hex().encode()
    deadline = time.monotonic() + wait
    while True:
        if state.call(i, "set", key, token, nx=True, px=ms):
            return token
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def _unlock(state: RedisState, i: int, token: bytes) -> None:
    key = state.shards[i].prefix + "lock"
    if state.call(i, "get", key) == token:
        state.call(i, "delete", key)


def _entries(state: RedisState, i: int, after: bytes, count: int | None = None
             ) -> list[tuple[bytes, bytes, bytes]]:
    """(id, flush id, rows) of shard ``i``'s entries after ``after``."""
    got = state.call(i, "xrange", state.shards[i].prefix + "log", b"(" + after, b"+",
                     count=count)
    return [(e[0], e[1][b"f"], e[1][b"d"]) for e in got]


def _stored(state: RedisState, i: int, layout: DeltaLogLayout, keys: np.ndarray,
            buckets: np.ndarray) -> np.ndarray:
    """The stored records of ``keys`` (in the order of their ``buckets``; zero where not
    stored) in shard ``i``'s buckets, as (n, words) uint64: one HMGET per bucket,
    pipelined, the replies read as bytes (``replies``)."""
    url = state.shards[i].url
    payload, n = layout.reads(state.shards[i].prefix.encode(), keys, buckets)
    with state.wire:
        buf, starts, errors = transport.pipeline_raw(state, i, payload, n)
    if errors.any():
        start = int(starts[np.flatnonzero(errors)[0]])
        raise StoreUnavailable(f"shard {url}: {replies.first_error(buf, start, buf.size)}")
    out = np.empty(keys.size * layout.width, dtype=np.uint8)
    rows = replies.fixed_values(buf, starts, layout.width, out)
    if rows != keys.size:
        raise StoreUnavailable(f"shard {url}: stored records that are not {keys.size} "
                               f"values of {layout.width} bytes")
    return out.view(np.uint64).reshape(keys.size, layout.words)


def _watch(state: RedisState, i: int, token: bytes, pos: bytes) -> bool:
    """WATCH shard ``i``'s ``pos``, lock and pause keys, and check that the lock is still
    ``token`` and ``pos`` unchanged and that no snapshot pauses the shard (False: not so,
    and nothing is watched any more). Call it holding ``state.wire``: the transaction
    (``_commit``) follows on the same connection."""
    prefix = state.shards[i].prefix.encode()
    pos_key, lock_key, pause_key = prefix + b"pos", prefix + b"lock", prefix + b"pause"
    got = transport.pipeline(state, i, command(b"WATCH", pos_key, lock_key, pause_key)
                             + command(b"GET", lock_key) + command(b"GET", pos_key)
                             + command(b"EXISTS", pause_key), 4)
    for reply in got:
        if isinstance(reply, Exception):
            transport.pipeline(state, i, command(b"UNWATCH"), 1)
            raise StoreUnavailable(f"shard {state.shards[i].url}: {reply}")
    if got[1] == token and (got[2] or START) == pos and not got[3]:
        return True
    transport.pipeline(state, i, command(b"UNWATCH"), 1)
    return False


def _commit(state: RedisState, i: int, new_pos: bytes, writes: bytes, n: int) -> bool:
    """Write the folded records (``writes``: ``n`` HSET commands) and move ``pos`` to
    ``new_pos`` in one transaction, which Redis drops if a key ``_watch`` watched changed
    since (another compaction moved ``pos``, a reader took the lock, a snapshot paused the
    shard): whether it applied. Redis applies a transaction whole or refuses it whole (a
    command refused when queued, out of memory say, aborts it). The replies (one per
    command) are read as bytes (``replies``)."""
    url = state.shards[i].url
    pos_key = state.shards[i].prefix.encode() + b"pos"
    buf, starts, errors = transport.pipeline_raw(
        state, i, command(b"MULTI") + writes + command(b"SET", pos_key, new_pos)
        + command(b"EXEC"), n + 3)
    start = int(starts[-1])
    header = buf[start:start + 8].tobytes().split(b"\r\n", 1)[0]
    if header in (b"*-1", b"_"):  # dropped: a watched key changed
        return False
    if header[:1] == b"-":
        raise StoreUnavailable(f"shard {url}: compaction refused: "
                               f"{replies.first_error(buf, start, buf.size)}")
    if errors[-1]:  # a bucket key of another type: the others were written
        raise StoreUnavailable(f"shard {url}: compaction wrote {n + 1 - int(errors[-1])} of "
                               f"{n + 1} commands: {replies.first_error(buf, start, buf.size)}")
    return True


def _trim(state: RedisState, i: int, token: bytes, new_pos: bytes) -> None:
    """Trim shard ``i``'s log after a compaction and release the lock (``log.lua``'s 't')."""
    shard = state.shards[i]
    prefix = shard.prefix.encode()
    head = [prefix, b"", b"1", b"", b"", b""]
    payload = command(b"EVALSHA", shard.sha or "", 2, prefix + b"pos", prefix + b"pause",
                      *head, b"t", token, new_pos, CURSOR_KEEP_MS)
    with state.wire:
        transport.roundtrip(state, {i: payload})


def read_folded(state: RedisState, i: int, locked: bool = True
                ) -> tuple[np.ndarray, np.ndarray, bytes]:
    """(keys, records, last entry id) of shard ``i``'s state: its buckets with the entries
    after ``pos`` folded in. ``locked``: hold the compaction lock meanwhile, renewed as the
    buckets are read (a caller that paused the shard's flushes and compactions passes
    False)."""
    layout = state.layout
    assert isinstance(layout, DeltaLogLayout) and state.model is not None
    for _ in range(3):  # a read that lost its lock (stalled past LOCK_MS) starts again
        token = _lock(state, i, LOCK_MS, state.pause_timeout) if locked else None
        if locked and token is None:
            raise StoreUnavailable(f"shard {state.shards[i].url}: the compaction lock "
                                   f"stayed taken for {state.pause_timeout:g} s")
        try:
            got = _read_locked(state, i, token)
        finally:
            if token is not None:
                _unlock(state, i, token)
        if got is not None:
            table, entries, pos = got
            if entries:
                keys, base, cur = layout.parse_rows([e[2] for e in entries])
                fold_rows(table, keys, base, cur, state.model.optimizer.state_dtype)
            records = table.records()
            last = entries[-1][0] if entries else pos
            return (np.ascontiguousarray(records[:, 0]), np.ascontiguousarray(records[:, 1:]),
                    last)
    raise StoreUnavailable(f"shard {state.shards[i].url}: its state could not be read "
                           "under the compaction lock")


def _read_locked(state: RedisState, i: int, token: bytes | None
                 ) -> tuple[StateTable, list[tuple[bytes, bytes, bytes]], bytes] | None:
    """The buckets, ``pos`` and the entries after it; None if the lock was lost."""
    from .bulk import read_shard

    assert state.model is not None
    key = state.shards[i].prefix + "lock"
    pos = state.call(i, "get", state.shards[i].prefix + "pos") or START
    table = StateTable(state.model.optimizer.stride)
    for n, (keys, recs) in enumerate(read_shard(state, i)):
        store_records(table, keys, recs)
        if token is not None and n % 500 == 499:
            # still ours: renewed; lost: a compaction may have run meanwhile
            if state.call(i, "get", key) != token:
                return None
            state.call(i, "pexpire", key, LOCK_MS)
    entries = _entries(state, i, pos)
    if token is not None and state.call(i, "get", key) != token:
        return None
    return table, entries, pos


class Folded(NamedTuple):
    """What one compaction did: the distinct coordinates it wrote and the entries it
    folded (both 0: nothing to fold, or another worker or a reader held the lock)."""

    coordinates: int
    entries: int


def compact(state: RedisState, i: int, trim: bool = False) -> Folded:
    """Fold shard ``i``'s oldest entries after ``pos`` into its buckets (at most
    ``COMPACT_ENTRIES``). ``trim``: with nothing to fold, trim the log all the same (a
    worker stopping)."""
    layout = state.layout
    assert isinstance(layout, DeltaLogLayout) and state.model is not None
    shard = state.shards[i]
    token = _lock(state, i, LOCK_MS, 0.0)
    if token is None:
        return Folded(0, 0)
    try:
        pos = state.call(i, "get", shard.prefix + "pos") or START
        entries = _entries(state, i, pos, COMPACT_ENTRIES)
        if not entries and not (trim and state.call(i, "xlen", shard.prefix + "log")):
            return Folded(0, 0)
        keys, base, cur = layout.parse_rows([e[2] for e in entries])
        stride = state.model.optimizer.stride
        # the distinct keys: a hash table, not a sort, filled an entry at a time so that
        # it grows with them, not with the rows (a flush's rows are distinct: 64 entries of
        # 20k rows touch about 200k keys, not 1.3M); then their stored records, in place
        table = StateTable(stride)
        sizes = [len(e[2]) // layout.row_bytes for e in entries]
        zeros = np.zeros((max(sizes, default=0), stride - 1), dtype=np.uint64)
        start = 0
        for size in sizes:
            store_records(table, keys[start:start + size], zeros[:size])
            start += size
        # the slots in bucket order come from the same sort as the keys (no lookup)
        live = table.live_slots()
        order, buckets = layout.bucket_order(table.words[::stride][live])
        slots = live[order]
        touched = np.ascontiguousarray(table.words[::stride][slots])
        if touched.size:
            table.words.reshape(table.capacity, stride)[slots, 1:] = \
                _stored(state, i, layout, touched, buckets)
        fold_rows(table, keys, base, cur, state.model.optimizer.state_dtype, absent=0)
        recs = table.words.reshape(table.capacity, stride)[slots, 1:]
        new_pos = entries[-1][0] if entries else pos
        writes, n = layout.writes(shard.prefix.encode(), touched, buckets,
                                  np.ascontiguousarray(recs))
        with state.wire:
            applied = _watch(state, i, token, pos) and _commit(state, i, new_pos, writes, n)
        if not applied:
            return Folded(0, 0)
        _trim(state, i, token, new_pos)
        return Folded(int(touched.size), len(entries))
    finally:
        _unlock(state, i, token)  # the trim released it when it ran


def note_cursor(state: RedisState, i: int, cursor: bytes) -> None:
    """Record a cursor just read (a worker that loaded its shard) as live, so that the
    trim spares the entries after it until its first flush."""
    now = int(time.time() * 1000)
    state.call(i, "hset", state.shards[i].prefix + "cur", state.worker,
               cursor + b" " + str(now).encode())


def forget_cursor(state: RedisState, i: int) -> None:
    """A worker stopping: its cursor no longer holds the trim back."""
    state.call(i, "hdel", state.shards[i].prefix + "cur", state.worker)

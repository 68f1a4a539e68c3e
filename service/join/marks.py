"""The join across workers of a Redis state store: clicks published as marks in Redis, read
by the worker that holds their impression.

Design (issue 13, "an impression shown by one worker joins a click that reaches another"):

- **Impressions stay with the worker that took them** (its ``JoinState``, its write-ahead
  log in its data-directory slot): nothing of an impression crosses the network, so
  ``/v1/impressions`` costs what it costs with one worker, and a SIGKILL loses none (the
  slot's log and join snapshot are read again on restart: ``stores.redis.join_log``).
- **A click is joined where its impression is.** A feedback event for an id the worker
  holds (pending, or closed recently) is joined there at once, as with one worker. The
  others are *forwarded*: published, before the answer, as one entry of a Redis stream on
  shard 0 (``<prefix>j:clicks``: the 64-bit id keys, times, labels, the arrival time, the
  publishing worker). A stream rather than a hash of marks per id: every worker reads only
  the clicks published since its last read (``XRANGE`` after its cursor), O(clicks) per
  tick whatever the number of pending impressions, where reading marks by id costs
  O(pending) per tick; clicks are rare next to impressions, so each worker reading all of
  them is cheap. The stream is capped (``STREAM_MAXLEN`` entries, approximate trimming): a
  worker stopped for longer than the stream holds misses the clicks trimmed meanwhile, and
  their impressions expire as negatives.
- **The watermark is shared**: the largest event time any worker has seen, kept on shard 0
  (``<prefix>j:wm``, a max: order and repeats do not matter). Publishing clicks raises it to
  their ``ts``; each tick raises it to the worker's newest impression ``ts``. With a shared
  store requests never close impressions by event time (each worker would close by its
  own clock); the tick (``REMOTE_TICK_SECONDS``) does, in one Lua call that raises the
  watermark, reads it and reads the clicks after the cursor, atomically: every click
  published before the watermark reached the value read is in the same read, so it is
  applied before the windows that value closes (a click published later reached the
  service after its window closed, in event time: ``late``, as with one worker).
- **Exactly once**: only the owner closes its impressions. The tick logs what it read (the
  watermark, its clock, the clicks it holds, the new cursor: ``Kind.JOIN_MARKS``) before
  applying it, so learning the log again closes the same impressions at the same points;
  the rows it learns travel in the worker's flushes, whose ids make a resent flush
  harmless. A restart resumes reading at the logged cursor. A worker's first impression
  sets the cursor to ``CURSOR_MARGIN`` (60 s) before its arrival (stream ids are the
  server's clock in ms; the margin is for host clocks that disagree), so a click published
  before the worker's first tick is still read, and a replay starts at the same place.
- **Counting**: ``late`` is counted by the owner (a click past its window, or for an id it
  closed). A click for an id no worker holds is not ``unknown`` on any one worker: the
  worker it reached counts it ``forwarded``, the owner that reads it ``marks_matched``;
  across workers, ``forwarded - marks_matched`` is the unknown ones (the ``cluster`` part of
  ``GET /v1/join``, summed from the status every worker writes to ``<prefix>j:status`` on
  its ticks). A retried feedback request that reaches another worker is published twice;
  the owner counts the second ``repeated_clicks``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import numpy as np

if TYPE_CHECKING:
    from ..stores.redis.state import RedisState

#: seconds between two ticks of a shared join (read the clicks, close the windows)
REMOTE_TICK_SECONDS = 0.25
#: entries (feedback requests with forwarded clicks) the click stream keeps, about
STREAM_MAXLEN = 1_000_000
#: entries read per call
READ_COUNT = 5000

#: KEYS: the stream, the watermark. ARGV: maxlen, worker, event time max (-1: none), data.
PUBLISH = """
local t = tonumber(ARGV[3])
if t >= 0 then
  local wm = tonumber(redis.call('GET', KEYS[2]) or '-1')
  if t > wm then redis.call('SET', KEYS[2], string.format('%.17g', t)) end
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'w', ARGV[2], 'd', ARGV[4])
"""

#: KEYS: the stream, the watermark. ARGV: event time max (-1: none), cursor ("": the end),
#: count. Reply: {watermark, entries, cursor}.
READ = """
local t = tonumber(ARGV[1])
local wm = tonumber(redis.call('GET', KEYS[2]) or '-1')
if t > wm then
  redis.call('SET', KEYS[2], string.format('%.17g', t))
  wm = t
end
local cursor = ARGV[2]
if cursor == '' then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last > 0 then cursor = last[1][1] else cursor = '0-0' end
  return {string.format('%.17g', wm), {}, cursor}
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. cursor, '+', 'COUNT', ARGV[3])
if #entries > 0 then cursor = entries[#entries][1] end
return {string.format('%.17g', wm), entries, cursor}
"""

_HEAD = struct.Struct("<dI")  # the arrival time on the publishing worker, clicks


@dataclass
class Clicks:
    """Clicks as they travel: id keys, times (None: absent), labels, arrival times."""

    keys: list[int] = field(default_factory=list)
    ts: list[float | None] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    ats: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)


def pack(keys: list[int], ts: list[float | None], labels: list[int], at: float) -> bytes:
    """One stream entry's data: the arrival time, then each click's key, ts (NaN: none)
    and label."""
    n = len(keys)
    return (_HEAD.pack(at, n) + np.array(keys, dtype="<u8").tobytes()
            + np.array([math.nan if t is None else t for t in ts], dtype="<f8").tobytes()
            + np.array(labels, dtype="<u1").tobytes())


def only(clicks: Clicks, owns: Callable[[int], bool]) -> Clicks:
    """The clicks whose id ``owns`` accepts."""
    out = Clicks()
    for i, key in enumerate(clicks.keys):
        if owns(key):
            out.keys.append(key)
            out.ts.append(clicks.ts[i])
            out.labels.append(clicks.labels[i])
            out.ats.append(clicks.ats[i])
    return out


def unpack(data: bytes, into: Clicks) -> None:
    at, n = _HEAD.unpack_from(data, 0)
    pos = _HEAD.size
    keys = np.frombuffer(data, dtype="<u8", count=n, offset=pos).tolist()
    ts = np.frombuffer(data, dtype="<f8", count=n, offset=pos + 8 * n).tolist()
    labels = np.frombuffer(data, dtype="<u1", count=n, offset=pos + 16 * n).tolist()
    into.keys.extend(keys)
    into.ts.extend(None if math.isnan(t) else t for t in ts)
    into.labels.extend(labels)
    into.ats.extend([at] * n)


class _Logged(msgspec.Struct, array_like=True):
    """A tick as the log holds it (``Kind.JOIN_MARKS``)."""

    watermark: float
    now: float
    cursor: str
    keys: list[int]
    ts: list[float | None]
    labels: list[int]
    ats: list[float]


@dataclass
class Tick:
    """What one shared tick read: the agreed watermark, the clock, the clicks this worker
    holds, the stream position after them."""

    watermark: float
    now: float
    cursor: str
    clicks: Clicks

    def encode(self) -> bytes:
        c = self.clicks
        return msgspec.msgpack.encode(_Logged(self.watermark, self.now, self.cursor, c.keys,
                                              c.ts, c.labels, c.ats))

    @staticmethod
    def decode(payload: bytes | memoryview) -> Tick:
        r = msgspec.msgpack.decode(bytes(payload), type=_Logged)
        return Tick(r.watermark, r.now, r.cursor, Clicks(r.keys, r.ts, r.labels, r.ats))


class ClickMarks:
    """The shared side of the join on shard 0 of a Redis store."""

    def __init__(self, state: RedisState) -> None:
        self.state = state
        prefix = state.prefix
        self.stream = prefix + "j:clicks"
        self.wm_key = prefix + "j:wm"
        self.status_key = prefix + "j:status"

    def publish(self, keys: list[int], ts: list[float | None], labels: list[int],
                at: float) -> None:
        """Publish clicks for the other workers (raises ``StoreUnavailable``)."""
        newest = max((t for t in ts if t is not None), default=-1.0)
        self.state.call(0, "eval", PUBLISH, 2, self.stream, self.wm_key, STREAM_MAXLEN,
                        self.state.worker, repr(newest), pack(keys, ts, labels, at))

    def read(self, seen: float, cursor: str) -> tuple[float, str, Clicks]:
        """Raise the shared watermark to ``seen``; (the watermark, the new cursor, the clicks
        other workers published after ``cursor``). Blocking: the learner calls it from a
        worker thread, without its lock, and applies the result under it."""
        every = Clicks()
        seen_arg = repr(seen) if math.isfinite(seen) else "-1"
        wm = -math.inf
        first = True
        while True:
            raw = self.state.call(0, "eval", READ, 2, self.stream, self.wm_key, seen_arg,
                                  cursor, READ_COUNT)
            if first:  # the value the clicks read with it were published under
                value = float(raw[0])
                wm = value if value >= 0 else -math.inf
                first = False
            cursor = raw[2].decode() if isinstance(raw[2], bytes) else str(raw[2])
            entries = raw[1]
            for _, fields in entries:
                values = dict(zip(fields[::2], fields[1::2], strict=True))
                if values.get(b"w", b"").decode() == self.state.worker:
                    continue  # its own: published because it did not hold them
                unpack(values[b"d"], every)
            if len(entries) < READ_COUNT:
                break
        return wm, cursor, every

    def report(self, status: dict[str, object]) -> None:
        """This worker's join status, for ``cluster`` sums."""
        self.state.call(0, "hset", self.status_key, self.state.worker,
                        msgspec.json.encode(status))

    def cluster(self, counters: tuple[str, ...]) -> dict[str, object]:
        """Every worker's last reported counters, summed."""
        raw = self.state.call(0, "hgetall", self.status_key) or {}
        sums = dict.fromkeys(counters, 0)
        pending = 0
        for value in raw.values():
            st = msgspec.json.decode(value)
            pending += int(st.get("pending", 0))
            for c in counters:
                sums[c] += int(st.get(c, 0))
        return {"workers": len(raw), "pending": pending, **sums,
                "unmatched_clicks": sums["forwarded"] - sums["marks_matched"]}

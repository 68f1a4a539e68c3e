"""Exact 64-bit keys in Redis: coordinates bucketed into small hashes.

Redis keeps a hash of up to ``hash-max-listpack-entries`` short fields as one listpack (128
in the ``redis.conf`` Redis ships; 512 compiled in, what a server started without a config
file has, as the tests' and Docker's are), a few bytes of overhead per field: with about
100 coordinates per hash a
coordinate costs about 23 bytes (8-byte key field, 8-byte packed value, entry headers, the
key's share). A coordinate's bucket is a hash of its key over the model's ``buckets``
(fixed when the model is created: choose about live coordinates / 100), and its shard is
``bucket % shards``. Values are the cache's own record bytes (FTRL: z, n as two float32; the
other learners float64 columns), so one worker reads back exactly what it wrote; merging a
foreign delta adds in double precision and rounds to the record's type (``struct.pack``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ftrl_core._jit import kernel
from ftrl_core.hashing import mix64

from .resp import command, pack_groups

KEY_BYTES = 8


@kernel
def _route(keys, buckets, shards, bucket_out, shard_out):  # type: ignore[no-untyped-def]
    for i in range(keys.size):
        b = np.int64(((mix64(keys[i]) & np.uint64(0xFFFFFFFF)) * np.uint64(buckets))
                     >> np.uint64(32))
        bucket_out[i] = b
        shard_out[i] = b % shards


class BucketLayout:
    """Encode flush calls for ``buckets.lua`` and decode its replies."""

    script = "buckets.lua"
    kind = "buckets"

    def __init__(self, stride: int, dtype: type, buckets: int, shards: int) -> None:
        if not 1 <= buckets < 2**32:
            raise ValueError(f"buckets must be in [1, 2^32), got {buckets}")
        self.words = stride - 1
        self.width = 8 * self.words
        self.dtype = np.dtype(dtype)
        self.ncols = self.width // self.dtype.itemsize
        self.fmt = "<" + ("f" if self.dtype == np.float32 else "d") * self.ncols
        self.buckets = buckets
        self.shards = shards

    def identity(self) -> dict[str, Any]:
        return {"layout": self.kind, "buckets": self.buckets}

    def route(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bucket, shard) of each key."""
        bucket = np.empty(keys.size, dtype=np.int64)
        shard = np.empty(keys.size, dtype=np.int64)
        _route(np.ascontiguousarray(keys, dtype=np.uint64), self.buckets, self.shards, bucket,
               shard)
        return bucket, shard

    def key_name(self, prefix: str, bucket: int) -> str:
        return f"{prefix}b:{bucket}"

    def rows(self, keys: np.ndarray, *records: np.ndarray) -> np.ndarray:
        """Each key's 8 bytes then its records' bytes, one row of bytes per key."""
        parts = [keys[:, None].view(np.uint8)]
        parts += [r.view(np.uint8).reshape(keys.size, self.width) for r in records]
        return np.ascontiguousarray(np.concatenate(parts, axis=1))

    def _blob(self, groups: np.ndarray, rows: np.ndarray) -> bytes:
        out = np.empty(rows.size + 8 * rows.shape[0], dtype=np.uint8)
        n = pack_groups(groups, rows, out)
        return out[:n].tobytes()

    def encode(self, sha: str, declared: list[bytes], head: list[bytes], wkeys: np.ndarray,
               wbase: np.ndarray, wcur: np.ndarray, rkeys: np.ndarray, now: bytes = b""
               ) -> tuple[bytes, np.ndarray, np.ndarray]:
        """One EVALSHA for a shard (``declared``: its KEYS): returns (payload, write order,
        read order): the reply's records come in those orders. ``now``: the flush's time,
        which stamps the ages of the coordinates written (a model that evicts; ``b""``
        otherwise)."""
        wb, _ = self.route(wkeys)
        rb, _ = self.route(rkeys)
        wo = np.argsort(wb, kind="stable")
        ro = np.argsort(rb, kind="stable")
        writes = self._blob(wb[wo], self.rows(wkeys[wo], wbase[wo], wcur[wo]))
        reads = self._blob(rb[ro], np.ascontiguousarray(rkeys[ro, None].view(np.uint8)))
        payload = command(b"EVALSHA", sha, len(declared), *declared, *head, self.width,
                          self.fmt, self.ncols, writes, reads, now)
        return payload, wo, ro

    def warm_up(self) -> None:
        """Run this layout's compiled packing once on two keys (``RedisState.warm_up``)."""
        keys = np.array([1, 2], dtype=np.uint64)
        recs = np.zeros((keys.size, self.words), dtype=np.uint64)
        self.encode("", [], [], keys, recs, recs, keys)

    def decode(self, body: Any, n: int) -> np.ndarray:
        """The reply's records as (n, words) uint64."""
        data = np.frombuffer(body, dtype=np.uint64)
        if data.size != n * self.words:
            raise ValueError(f"flush reply holds {data.size} words, expected {n * self.words}")
        return data.reshape(n, self.words)

    # -- bulk load and read (load-state, snapshots) -----------------------------------------

    def seed_commands(self, prefixes: Sequence[str], keys: np.ndarray, recs: np.ndarray
                      ) -> Iterator[tuple[int, bytes]]:
        """(shard, HSET command) per bucket, writing ``recs`` as stored values; a shard's
        keys start with ``prefixes[shard]``."""
        bucket, shard = self.route(keys)
        order = np.argsort(bucket, kind="stable")
        b_sorted = bucket[order]
        starts = np.flatnonzero(np.r_[True, b_sorted[1:] != b_sorted[:-1]])
        ends = np.r_[starts[1:], b_sorted.size]
        kb = keys[order, None].view(np.uint8)
        vb = np.ascontiguousarray(recs[order]).view(np.uint8).reshape(order.size, self.width)
        for a, e in zip(starts.tolist(), ends.tolist(), strict=True):
            args: list[bytes] = []
            for r in range(a, e):
                args.append(kb[r].tobytes())
                args.append(vb[r].tobytes())
            s = int(shard[order[a]])
            yield s, command(b"HSET", self.key_name(prefixes[s], int(b_sorted[a])), *args)

    def scan_pattern(self, prefix: str) -> str:
        return f"{prefix}b:*"

    def parse_key(self, name: bytes, value: Any) -> tuple[np.ndarray, np.ndarray]:
        """(keys, records) of one bucket from its HGETALL reply."""
        items = list(value.items()) if isinstance(value, dict) else []
        keys = np.frombuffer(b"".join(k for k, _ in items), dtype=np.uint64)
        recs = np.frombuffer(b"".join(v for _, v in items), dtype=np.uint64)
        return keys, recs.reshape(keys.size, self.words)

    read_command = "HGETALL"

"""Hashed mode (``--hash-bits B``) in Redis: dense chunk strings updated with BITFIELD.

Slot s (the low B bits of a hashed key) lives in chunk ``s >> 16`` at index ``s & 0xFFFF``;
a chunk is a string of 65,536 slots x C signed 64-bit columns (the optimizer's state
columns), and chunk c lives on shard ``c % shards``. A flush sends one ``BITFIELD ...
OVERFLOW SAT INCRBY i64 #i d ...`` per chunk (inside the flush script, for the flush id),
its arguments packed as RESP by a compiled kernel.

Fixed point: a state value x is stored as the integer ``rint(x * 2^32)`` (round half to
even), so the resolution is 2^-32 (2.3e-10) and the range +-2^31 (2.1e9); the overflow
policy saturates. A delta is ``fx(current) - fx(base)``, an exact integer, and integer
additions commute: several workers' deltas merge to the same value in any order. Read back,
a value is ``integer / 2^32`` rounded to the cache's type: for FTRL's float32 (z, n) that is
exactly the value written whenever |x| >= 2^-8 (the float32's last bit is coarser than
2^-32), and within 2^-33 below.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ftrl_core._jit import kernel
from ftrl_core.hashing import HASHED_FIELD, VALUE_BITS

from .resp import array_header, command, put_bulk, put_int_bulk

SCALE_BITS = 32
SCALE = float(2**SCALE_BITS)
CHUNK_BITS = 16
CHUNK_SLOTS = 1 << CHUNK_BITS
#: sub-commands per BITFIELD call: the script passes them through Lua's unpack(), whose
#: stack holds about 8,000 values
MAX_SUBCOMMANDS = 1500
_TAG = np.uint64(HASHED_FIELD + 1) << np.uint64(VALUE_BITS)
_INCRBY = np.frombuffer(b"INCRBY", dtype=np.uint8)
_GET = np.frombuffer(b"GET", dtype=np.uint8)
_I64 = np.frombuffer(b"i64", dtype=np.uint8)
_W = np.frombuffer(b"w", dtype=np.uint8)
_R = np.frombuffer(b"r", dtype=np.uint8)


@kernel
def _bitfield_groups(  # type: ignore[no-untyped-def]
        chunks, index, ints, write, max_sub, incrby, get, i64, w_tag, r_tag, out, p):
    """Groups [chunk][w|r][n][sub-commands...] for sorted ``chunks``; returns (end, args)."""
    tmp = np.empty(24, dtype=np.uint8)
    ncols = ints.shape[1]
    per = 4 if write else 3
    nargs = 0
    i = 0
    n = chunks.size
    while i < n:
        c = chunks[i]
        j = i
        while j < n and chunks[j] == c and (j - i + 1) * ncols <= max_sub:
            j += 1
        p = put_int_bulk(out, p, c, np.uint8(0), tmp)
        p = put_bulk(out, p, w_tag if write else r_tag)
        p = put_int_bulk(out, p, np.int64((j - i) * ncols * per), np.uint8(0), tmp)
        nargs += 3 + (j - i) * ncols * per
        for r in range(i, j):
            for k in range(ncols):
                p = put_bulk(out, p, incrby if write else get)
                p = put_bulk(out, p, i64)
                p = put_int_bulk(out, p, np.int64(index[r] * ncols + k), np.uint8(35), tmp)
                if write:
                    p = put_int_bulk(out, p, ints[r, k], np.uint8(0), tmp)
        i = j
    return p, nargs


class ChunkLayout:
    """Encode flush calls for ``chunks.lua`` and decode its replies."""

    script = "chunks.lua"
    kind = "chunks"

    def __init__(self, stride: int, dtype: type, hash_bits: int, shards: int) -> None:
        self.words = stride - 1
        self.dtype = np.dtype(dtype)
        self.ncols = 8 * self.words // self.dtype.itemsize
        self.hash_bits = hash_bits
        self.shards = shards

    def identity(self) -> dict[str, Any]:
        return {"layout": self.kind, "scale_bits": SCALE_BITS, "chunk_bits": CHUNK_BITS}

    def slots(self, keys: np.ndarray) -> np.ndarray:
        if keys.size and np.any((keys & ~np.uint64((1 << self.hash_bits) - 1)) != _TAG):
            raise ValueError("the chunk layout holds hashed-mode keys only (--hash-bits)")
        return (keys & np.uint64((1 << self.hash_bits) - 1)).astype(np.int64)

    def route(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chunk = self.slots(keys) >> CHUNK_BITS
        return chunk, chunk % self.shards

    def to_fixed(self, recs: np.ndarray) -> np.ndarray:
        cols = recs.view(self.dtype).reshape(recs.shape[0], self.ncols).astype(np.float64)
        return np.rint(cols * SCALE).astype(np.int64)

    def from_fixed(self, ints: np.ndarray) -> np.ndarray:
        cols = (ints.astype(np.float64) / SCALE).astype(self.dtype)
        return np.ascontiguousarray(cols).view(np.uint64).reshape(ints.shape[0], self.words)

    def _groups(self, keys: np.ndarray, ints: np.ndarray, write: bool
                ) -> tuple[bytes, int, np.ndarray]:
        slots = self.slots(keys)
        order = np.argsort(slots, kind="stable")
        s = slots[order]
        chunks = s >> CHUNK_BITS
        index = s & (CHUNK_SLOTS - 1)
        ints = np.ascontiguousarray(ints[order]) if write else np.zeros((s.size, self.ncols),
                                                                        dtype=np.int64)
        groups = s.size * self.ncols // MAX_SUBCOMMANDS + np.unique(chunks).size + 1
        out = np.empty(s.size * self.ncols * 72 + groups * 48, dtype=np.uint8)
        end, nargs = _bitfield_groups(chunks, index, ints, write, MAX_SUBCOMMANDS, _INCRBY,
                                      _GET, _I64, _W, _R, out, 0)
        return out[:end].tobytes(), int(nargs), order

    def encode(self, sha: str, declared: list[bytes], head: list[bytes], wkeys: np.ndarray,
               wbase: np.ndarray, wcur: np.ndarray, rkeys: np.ndarray, now: bytes = b""
               ) -> tuple[bytes, np.ndarray, np.ndarray]:
        # ``now`` (ages) is unused: hashed mode has no per-coordinate eviction
        delta = self.to_fixed(wcur) - self.to_fixed(wbase)
        wbody, wn, wo = self._groups(wkeys, delta, True)
        rbody, rn, ro = self._groups(rkeys, delta[:0], False)
        fixed = command(b"EVALSHA", sha, len(declared), *declared, *head, self.ncols)
        # the command's array header counts the fixed arguments and the groups' ones
        nfixed = 3 + len(declared) + len(head) + 1
        payload = array_header(nfixed + wn + rn) + fixed[fixed.index(b"\r\n") + 2:] + wbody \
            + rbody
        return payload, wo, ro

    def warm_up(self) -> None:
        """Run this layout's compiled packing once on two keys (``RedisState.warm_up``)."""
        keys = _TAG | np.array([1, 2], dtype=np.uint64)
        recs = np.zeros((keys.size, self.words), dtype=np.uint64)
        self.encode("", [], [], keys, recs, recs, keys)

    def decode(self, body: Any, n: int) -> np.ndarray:
        flat = np.fromiter((v for group in body for v in group), dtype=np.int64,
                           count=n * self.ncols)
        return self.from_fixed(flat.reshape(n, self.ncols))

    # -- bulk load and read (load-state, snapshots) -----------------------------------------

    def seed_commands(self, prefixes: Sequence[str], keys: np.ndarray, recs: np.ndarray
                      ) -> Iterator[tuple[int, bytes]]:
        """(shard, SET command) per chunk: whole chunk strings, big-endian int64 columns."""
        ints = self.to_fixed(recs)
        slots = self.slots(keys)
        chunk = slots >> CHUNK_BITS
        for c in np.unique(chunk).tolist():
            sel = chunk == c
            dense = np.zeros((CHUNK_SLOTS, self.ncols), dtype=">i8")
            dense[slots[sel] & (CHUNK_SLOTS - 1)] = ints[sel]
            last = int((slots[sel] & (CHUNK_SLOTS - 1)).max()) + 1
            s = c % self.shards
            yield s, command(b"SET", f"{prefixes[s]}c:{c}", dense[:last].tobytes())

    def scan_pattern(self, prefix: str) -> str:
        return f"{prefix}c:*"

    read_command = "GET"

    def parse_key(self, name: bytes, value: Any) -> tuple[np.ndarray, np.ndarray]:
        c = int(name.rsplit(b":", 1)[1])
        whole = len(value) // (8 * self.ncols) * 8 * self.ncols
        ints = np.frombuffer(value[:whole], dtype=">i8").reshape(-1, self.ncols)
        live = np.flatnonzero(ints.any(axis=1))
        keys = _TAG | (np.uint64(c) << np.uint64(CHUNK_BITS)) | live.astype(np.uint64)
        return keys, self.from_fixed(ints[live].astype(np.int64))

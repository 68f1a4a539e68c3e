"""Stable 64-bit feature keys.

A feature is (field, value bytes). Its hash is xxHash64 of the value bytes, seeded with the
xxHash64 of the field name, so the same feature gets the same key in every process and on
every machine (Python's ``hash()`` is salted per process and would not).

Key layout (exact mode, the default): the top 10 bits hold ``field id + 1`` and the low 54
bits the value hash. Keys are never 0 (0 marks an empty table slot), features of different
fields never collide, and a collision inside a field needs two of its values to agree on 54
bits: about one pair in 2^27 values, collisionless in practice. Per-field statistics read the
field straight from the key.

Hashed mode (``--hash-bits B``, Vowpal Wabbit's behaviour): the value hash is folded into
2^B slots shared by all fields; collisions across fields happen as in VW, and the field of a
stored key is no longer known (it shows as ``*``).
"""

from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import inline_kernel, kernel

P1 = np.uint64(0x9E3779B185EBCA87)
P2 = np.uint64(0xC2B2AE3D27D4EB4F)
P3 = np.uint64(0x165667B19E3779F9)
P4 = np.uint64(0x85EBCA77C2B2AE63)
P5 = np.uint64(0x27D4EB2F165667C5)

FIELD_BITS = 10
VALUE_BITS = 64 - FIELD_BITS
MAX_FIELDS = (1 << FIELD_BITS) - 2  # ids 0..1021 (tags 1..1022)
HASHED_FIELD = MAX_FIELDS  # the tag 1023 (= HASHED_FIELD + 1) marks keys made in hashed mode
VALUE_MASK = np.uint64((1 << VALUE_BITS) - 1)
#: seed of the field-name hash (any fixed value; changing it changes every key)
FIELD_SEED = np.uint64(0xC7F1E1D5EED)
#: xor-ed into a field's seed to key its real-valued feature (distinct from every token)
NUMERIC_TAG = np.uint64(0x6E756D6572696321)
#: the value hash of the bias feature
BIAS_HASH = np.uint64(0xB1A5)


@inline_kernel
def _rotl(x: np.uint64, r: int) -> np.uint64:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _unaligned_load(bits: int):  # type: ignore[no-untyped-def]
    """An intrinsic that loads a little-endian ``bits``-bit integer at ``buf[i]``, unaligned:
    one instruction where byte-by-byte assembly costs eight loads and fourteen shifts."""

    @intrinsic
    def load(typingctx, arr, idx):  # type: ignore[no-untyped-def]
        sig = types.uint64(arr, idx)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]],
                                           wraparound=False)
            value = builder.load(builder.bitcast(ptr, ir.IntType(bits).as_pointer()), align=1)
            return value if bits == 64 else builder.zext(value, ir.IntType(64))

        return sig, codegen

    return load


if sys.byteorder == "little":
    _load64 = _unaligned_load(64)
    _load32 = _unaligned_load(32)

    @inline_kernel
    def _read64(buf: np.ndarray, i: int) -> np.uint64:
        return _load64(buf, i)  # type: ignore[no-any-return]

    @inline_kernel
    def _read32(buf: np.ndarray, i: int) -> np.uint64:
        return _load32(buf, i)  # type: ignore[no-any-return]

else:  # pragma: no cover - big-endian machines: assemble the bytes

    @inline_kernel
    def _read64(buf: np.ndarray, i: int) -> np.uint64:
        v = np.uint64(0)
        for b in range(8):
            v |= np.uint64(buf[i + b]) << np.uint64(8 * b)
        return v

    @inline_kernel
    def _read32(buf: np.ndarray, i: int) -> np.uint64:
        v = np.uint64(0)
        for b in range(4):
            v |= np.uint64(buf[i + b]) << np.uint64(8 * b)
        return v


@inline_kernel
def _round(acc: np.uint64, lane: np.uint64) -> np.uint64:
    acc = acc + lane * P2
    acc = _rotl(acc, 31)
    return acc * P1


@inline_kernel
def _merge(acc: np.uint64, val: np.uint64) -> np.uint64:
    acc ^= _round(np.uint64(0), val)
    return acc * P1 + P4


@kernel
def xxh64(buf: np.ndarray, start: int, end: int, seed: np.uint64) -> np.uint64:
    """xxHash64 of ``buf[start:end]`` (uint8 array), bit-exact with the reference C code."""
    n = end - start
    i = start
    if n >= 32:
        v1 = seed + P1 + P2
        v2 = seed + P2
        v3 = seed
        v4 = seed - P1
        limit = end - 32
        while i <= limit:
            v1 = _round(v1, _read64(buf, i))
            v2 = _round(v2, _read64(buf, i + 8))
            v3 = _round(v3, _read64(buf, i + 16))
            v4 = _round(v4, _read64(buf, i + 24))
            i += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge(h, v1)
        h = _merge(h, v2)
        h = _merge(h, v3)
        h = _merge(h, v4)
    else:
        h = seed + P5
    h += np.uint64(n)
    while i + 8 <= end:
        h ^= _round(np.uint64(0), _read64(buf, i))
        h = _rotl(h, 27) * P1 + P4
        i += 8
    if i + 4 <= end:
        h ^= _read32(buf, i) * P1
        h = _rotl(h, 23) * P2 + P3
        i += 4
    while i < end:
        h ^= np.uint64(buf[i]) * P5
        h = _rotl(h, 11) * P1
        i += 1
    h ^= h >> np.uint64(33)
    h *= P2
    h ^= h >> np.uint64(29)
    h *= P3
    h ^= h >> np.uint64(32)
    return h


@inline_kernel
def mix64(x: np.uint64) -> np.uint64:
    """MurmurHash3's 64-bit finaliser: a bijection that spreads every input bit."""
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


@inline_kernel
def pair_hash(ha: np.uint64, hb: np.uint64, seed: np.uint64) -> np.uint64:
    """Value hash of a quadratic interaction from the value hashes of its two features."""
    return mix64(mix64(ha ^ seed) + _rotl(hb, 31) * P1)


@inline_kernel
def make_key(field: int, h: np.uint64, hash_mask: np.uint64) -> np.uint64:
    """The table key of a feature of ``field`` whose value hashes to ``h``.

    ``hash_mask`` is 0 in exact mode; in hashed mode it is 2^B - 1.
    """
    if hash_mask != np.uint64(0):
        return (h & hash_mask) | (np.uint64(HASHED_FIELD + 1) << np.uint64(VALUE_BITS))
    return (np.uint64(field + 1) << np.uint64(VALUE_BITS)) | (h & VALUE_MASK)


def field_seed(name: str) -> np.uint64:
    """The seed of a field: xxHash64 of its UTF-8 name."""
    raw = np.frombuffer(name.encode("utf-8"), dtype=np.uint8)
    return np.uint64(xxh64(raw, 0, raw.size, FIELD_SEED))


@inline_kernel
def key_field(key: np.uint64) -> int:
    """The field id a stored key carries in its top bits (``HASHED_FIELD`` in hashed mode);
    the kernels' version of ``field_of_keys``."""
    return np.int64(key >> np.uint64(VALUE_BITS)) - 1  # type: ignore[return-value]


def field_of_keys(keys: np.ndarray) -> np.ndarray:
    """Field id of each key (``HASHED_FIELD`` for keys made in hashed mode)."""
    return (keys >> np.uint64(VALUE_BITS)).astype(np.int64) - 1

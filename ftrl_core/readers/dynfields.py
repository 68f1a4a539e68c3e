"""Fields that appear as the data flows (VW namespaces, JSON feature names).

A kernel that meets a field name computes its seed (``xxh64(name, FIELD_SEED)``, exactly
``hashing.field_seed``) and looks it up in the registry's open-addressing map
(``lookup_keys``/``lookup_ids``). A new name is registered by the kernel itself: the next id
(``reg[0]``), its seed in ``seeds`` and the lookup map, and the name's byte range in
``names`` (start, length, flags, lookup slot), so that ``after_parse`` can tell the Python
registry (``FieldRegistry.adopt``) in the same order.

When every id but the last is taken, the next new name opens the overflow field there
(``fields.OVERFLOW_FIELD``, recorded with ``NAME_OVERFLOW``) and every later new name
gets that id without a lookup entry; the caller then seeds its value hashes with the name's
own seed, so the keys of overflowed fields stay apart. Names are checked before they are
registered (``valid_field_name``).

Registration is per row: the fields a row registered are rolled back if the row turns out
bad (the inserts are undone in reverse order, which restores the probe map exactly), so a
skipped line never leaves a field behind. Two names with the same 64-bit seed would share a
field; at 1,022 fields the chance is about 2^-44.
"""

from __future__ import annotations

import json
import threading
import weakref

import numpy as np

from .._jit import inline_kernel, kernel
from ..fields import LOOKUP_SIZE, OVERFLOW_FIELD, OVERFLOW_NAME, OVERFLOW_SEED, FieldRegistry
from ..hashing import MAX_FIELDS
from ..limits import MAX_FIELD_NAME_BYTES
from .base import FeatureOptions, Format, Outputs

#: ``names[k, 2]`` flags
NAME_JSON_ESCAPED = 1  # the bytes are a JSON string body with escapes
NAME_DEFAULT_NS = 2  # VW's default namespace, named " " (its bytes are not in the buffer)
NAME_OVERFLOW = 4  # the overflow field was opened (``fields.OVERFLOW_FIELD``)
_OVERFLOW_BYTES = tuple(OVERFLOW_NAME.encode())


@inline_kernel
def find_field(seed: np.uint64, lookup_keys: np.ndarray, lookup_ids: np.ndarray) -> int:
    """Id of the field whose seed is ``seed``, or -1."""
    mask = LOOKUP_SIZE - 1
    slot = np.int64(seed & np.uint64(mask))
    while True:
        fid = lookup_ids[slot]
        if fid < 0:
            return -1
        if lookup_keys[slot] == seed:
            return fid
        slot = (slot + 1) & mask


@kernel
def register_field(seed: np.uint64, lookup_keys: np.ndarray, lookup_ids: np.ndarray,
                   seeds: np.ndarray, reg: np.ndarray, names: np.ndarray, start: int,
                   length: int, flags: int) -> int:
    """Register a new field (its seed is not in the map); returns its id. Once the other
    ids are used up, ``OVERFLOW_FIELD`` (opened by the first field that finds them so); -1
    only for a registry full without one (a model saved before overflow existed)."""
    fid = reg[0]
    if fid >= OVERFLOW_FIELD:
        if fid > OVERFLOW_FIELD:
            return OVERFLOW_FIELD if seeds[OVERFLOW_FIELD] == OVERFLOW_SEED else -1
        seeds[fid] = OVERFLOW_SEED
        k = reg[1]
        names[k, 0] = 0
        names[k, 1] = 0
        names[k, 2] = NAME_OVERFLOW
        names[k, 3] = -1  # no lookup entry
        reg[0] = fid + 1
        reg[1] = k + 1
        return fid
    mask = LOOKUP_SIZE - 1
    slot = np.int64(seed & np.uint64(mask))
    while lookup_ids[slot] >= 0:
        slot = (slot + 1) & mask
    lookup_keys[slot] = seed
    lookup_ids[slot] = fid
    seeds[fid] = seed
    k = reg[1]
    names[k, 0] = start
    names[k, 1] = length
    names[k, 2] = flags
    names[k, 3] = slot
    reg[0] = fid + 1
    reg[1] = k + 1
    return fid


@kernel
def rollback_fields(lookup_keys: np.ndarray, lookup_ids: np.ndarray, seeds: np.ndarray,
                    reg: np.ndarray, names: np.ndarray, count0: int, new0: int) -> None:
    """Undo the registrations made since the registry had ``count0`` fields and ``new0``
    pending names."""
    for k in range(reg[1] - 1, new0 - 1, -1):
        slot = names[k, 3]
        if slot >= 0:
            lookup_ids[slot] = -1
            lookup_keys[slot] = np.uint64(0)
        seeds[count0 + k - new0] = np.uint64(0)
    reg[0] = count0
    reg[1] = new0


@inline_kernel
def valid_field_name(buf: np.ndarray, a: int, b: int) -> bool:
    """Whether ``buf[a:b]`` (UTF-8, already validated) is a field name: 1 to
    ``MAX_FIELD_NAME_BYTES`` bytes, no control character (C0, DEL or C1), not the overflow
    field's reserved name."""
    if b <= a or b - a > MAX_FIELD_NAME_BYTES:
        return False
    if b - a == len(_OVERFLOW_BYTES):
        same = True
        for i in range(b - a):
            if buf[a + i] != _OVERFLOW_BYTES[i]:
                same = False
                break
        if same:
            return False
    for i in range(a, b):
        c = buf[i]
        if c < 32 or c == 127:
            return False
        if c == 0xC2 and i + 1 < b and 0x80 <= buf[i + 1] <= 0x9F:
            return False
    return True


@inline_kernel
def valid_utf8(buf: np.ndarray, a: int, b: int) -> bool:
    """Whether ``buf[a:b]`` is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF)."""
    i = a
    while i < b:
        n = utf8_len(buf, i, b)
        if n == 0:
            return False
        i += n
    return True


@inline_kernel
def utf8_len(buf: np.ndarray, i: int, lim: int) -> int:
    """Length of the well-formed UTF-8 sequence at ``buf[i]``, or 0."""
    c = buf[i]
    if c < 0x80:
        return 1
    if 0xC2 <= c <= 0xDF:
        n = 2
        lo = 0x80
        hi = 0xBF
    elif 0xE0 <= c <= 0xEF:
        n = 3
        lo = 0xA0 if c == 0xE0 else 0x80
        hi = 0x9F if c == 0xED else 0xBF
    elif 0xF0 <= c <= 0xF4:
        n = 4
        lo = 0x90 if c == 0xF0 else 0x80
        hi = 0x8F if c == 0xF4 else 0xBF
    else:
        return 0
    if i + n > lim or not (lo <= buf[i + 1] <= hi):
        return 0
    for j in range(2, n):
        if not (0x80 <= buf[i + j] <= 0xBF):
            return 0
    return n


_LOCKS: weakref.WeakKeyDictionary[FieldRegistry, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def registry_lock(registry: FieldRegistry) -> threading.Lock:
    """The lock of ``registry`` for callers that parse from several threads: kernels that
    register fields write the registry's arrays, so two must not run at once on one."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(registry)
        if lock is None:
            lock = _LOCKS[registry] = threading.Lock()
        return lock


class DynamicFieldsFormat(Format):
    """A format whose kernel registers fields: holds the arrays and adopts the names."""

    def __init__(self, registry: FieldRegistry, options: FeatureOptions) -> None:
        super().__init__(registry, options)
        self._reg = np.zeros(2, dtype=np.int64)  # field count, new names this call
        self._names = np.zeros((MAX_FIELDS, 4), dtype=np.int64)

    def begin(self) -> None:
        """Before a kernel call: the registry's current size, no new names yet."""
        self._reg[0] = len(self.registry)
        self._reg[1] = 0

    def adopt_names(self, buf: np.ndarray) -> None:
        """After a kernel call: tell the registry the names its kernel registered."""
        if not self._reg[1]:
            return
        for k in range(int(self._reg[1])):
            start, length, flags, _slot = (int(x) for x in self._names[k])
            if flags & NAME_OVERFLOW:
                self.registry.adopt_overflow()
            else:
                self.registry.adopt(decode_name(buf, start, length, flags))
        self._reg[1] = 0

    def after_parse(self, buf: np.ndarray, out: Outputs) -> None:
        self.adopt_names(buf)


def decode_name(buf: np.ndarray, start: int, length: int, flags: int) -> str:
    """The text of a name a kernel recorded."""
    if flags & NAME_DEFAULT_NS:
        return " "
    raw = buf[start:start + length].tobytes()
    if flags & NAME_JSON_ESCAPED:
        return str(json.loads(b'"' + raw + b'"'))
    return raw.decode("utf-8")

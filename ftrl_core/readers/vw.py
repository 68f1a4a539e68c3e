"""Vowpal Wabbit text: ``label [importance [initial]] ['tag]|ns[:w] f1 f2:0.5 f3:str ...``,
read as VW 9 reads it (``parse_example_text.cc``) where the two can agree:

- Lines: an empty line (VW's example separator) gives no row; any other line gives one,
  a line of blanks too (no label, no features: it is predicted, as VW predicts it). A
  line's byte order mark is dropped.
- Label section: before the first ``|``, or the whole line if it has none (then the row has
  no features). From after its first tab if it holds one; tokens split by spaces; the last
  token is the tag when it starts with ``'`` or touches the bar (so ``1|a x`` and a lone
  ``1`` are tags and unlabelled, as in VW: write ``1 |a x``). Then, in order: the label,
  -1, 0 or 1 in any decimal spelling (-1 means 0), E_LABEL otherwise; the importance, a
  number from 0 to ``limits.MAX_WEIGHT`` (E_WEIGHT); the initial prediction, a number
  within +-``limits.MAX_ABS_VALUE`` (E_NUMBER) that starts the row's margin
  (``Batch.base``); a fourth token is E_SYNTAX. No label gives NaN: the row is predicted,
  not learned.
- Namespaces: the field is the whole namespace name; ``|`` followed by a blank is the
  default namespace, named ``" "``. New names are registered by the kernel as the data flows
  (``dynfields``; names as ``limits`` bounds them, E_FIELD_NAME). ``|ns:0.5`` scales every
  numeric value of the namespace.
- Features: ``name`` is the token ``name`` with value 1; ``name:v`` the same token with value
  ``v``, a finite number (E_NUMBER naming the namespace otherwise: NaN and infinities,
  which VW reads as floats, are refused, and so is a number followed by other bytes, where
  VW warns and drops the rest of the line); ``name:`` is ``name`` with value 1;
  ``name:str``, a value that does not start like a number, is the token ``name^str`` with
  value 1 (not scaled), the value running to the next blank as in VW (VW chains the hashes
  of name and value, so there ``a:b`` and a literal ``a^b`` differ; here they are one
  feature); ``:v`` is an anonymous feature, numbered by its position in the namespace as
  VW does. The token's hash is xxh64 of its bytes seeded by the namespace. A value of 0
  adds nothing (as in VW); repeats within a row are summed (``|a x x`` is x = 2, where VW
  keeps two features). Spaces and tabs separate.
- Interactions (``--interactions a:b``, VW's ``-q ab``) pair namespaces by their first
  byte (``vwparts``): every namespace starting with ``a`` with every one starting with
  ``b``; ``a:a`` includes each feature's product with itself. Repeats being summed first,
  ``|a x x`` with ``a:a`` gives x*x = 4 once where VW has three products of 1.
"""

from __future__ import annotations

import numpy as np

from ..fields import OVERFLOW_FIELD, FieldRegistry
from ..hashing import FIELD_SEED, MAX_FIELDS, xxh64
from .base import FeatureOptions, Outputs
from .dynfields import DynamicFieldsFormat
from .numparse import POW5, POW10
from .quoting import quote_bytes
from .vwkernel import (
    DEFAULT_NAMESPACE,
    F_FIELD,
    F_INITIAL,
    F_LABEL,
    F_NAMESPACE,
    F_WEIGHT,
    parse_vw,
)


class VWFormat(DynamicFieldsFormat):
    name = "vw"

    def __init__(self, registry: FieldRegistry, options: FeatureOptions) -> None:
        super().__init__(registry, options)
        self._opts = np.array([options.drop_missing, options.max_row_features], dtype=np.int64)
        raw = np.frombuffer(DEFAULT_NAMESPACE.encode(), dtype=np.uint8)
        self._default_seed = np.uint64(xxh64(raw, 0, raw.size, FIELD_SEED))
        self._err_field = ""
        #: each field's namespace group (its name's first byte), -1 for none
        self._group = np.full(MAX_FIELDS + 1, -1, dtype=np.int64)
        self._grouped = 0  # fields of the registry whose group is set

    def _groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interactions as (group a, group b, pair field) by namespace byte, as VW's -q
        pairs namespaces; the group of every field registered outside the kernel."""
        reg = self.registry
        pair_fields = {f for _, _, f in reg.pairs}
        for fid in range(self._grouped, len(reg)):
            name = reg.names[fid].encode("utf-8")
            self._group[fid] = -1 if fid == 0 or fid in pair_fields or fid == OVERFLOW_FIELD \
                or not name else name[0]
        self._grouped = len(reg)
        pairs = [(reg.names[a].encode("utf-8")[:1], reg.names[b].encode("utf-8")[:1], f)
                 for a, b, f in reg.pairs]
        arr = np.array([(a[0], b[0], f) for a, b, f in pairs if a and b],
                       dtype=np.int64).reshape(-1, 3)
        return (np.ascontiguousarray(arr[:, 0]), np.ascontiguousarray(arr[:, 1]),
                np.ascontiguousarray(arr[:, 2]))

    def parse(self, buf: np.ndarray, pos: int, end: int, final: bool, out: Outputs) -> int:
        self.begin()
        reg = self.registry
        ga, gb, pf = self._groups()
        if out.base is None or out.base.size != out.labels.size:
            out.base = np.zeros(out.labels.size, dtype=np.float64)
        status = int(parse_vw(
            buf, pos, end, final, self._opts, self._default_seed, POW5, POW10, reg.seeds,
            reg.lookup_keys, reg.lookup_ids, self._reg, self._names, self.options.hash_mask,
            ga, gb, pf, self._group, out.indptr, out.keys, out.fields, out.values, out.refs,
            out.kinds, out.labels, out.weights, out.base, out.lines, out.err, out.state))
        return status

    def after_parse(self, buf: np.ndarray, out: Outputs) -> None:
        self.adopt_names(buf)
        self._grouped = len(self.registry)  # the kernel set the groups of its new fields
        if out.err[0]:
            self._err_field = self._describe(buf, int(out.err[1]), int(out.err[3]),
                                             self.registry)

    @staticmethod
    def _describe(buf: np.ndarray, fcode: int, ns_range: int, registry: FieldRegistry) -> str:
        if fcode == F_LABEL:
            return "label"
        if fcode == F_WEIGHT:
            return "importance"
        if fcode == F_INITIAL:
            return "initial prediction"
        if fcode == F_FIELD:
            return registry.name(ns_range)
        if fcode != F_NAMESPACE:
            return ""
        if ns_range < 0:
            return repr(DEFAULT_NAMESPACE)
        start, length = ns_range >> 24, ns_range & ((1 << 24) - 1)
        return quote_bytes(buf[start:start + length].tobytes(), 80)

    def field_name(self, column: int) -> str:
        return self._err_field

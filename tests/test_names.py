"""``NameStore``: the arena is sized by ``_payload_bytes`` before the recording kernel (which
does not check its bounds) writes, so the sum must be exactly what it writes; and every
kind of feature reads back as its name."""

from __future__ import annotations

import json

import numpy as np

from ftrl_core.fields import FieldRegistry
from ftrl_core.names import NameStore, _payload_bytes
from ftrl_core.readers import FeatureOptions
from ftrl_core.readers.jsonl import JsonlFormat, parse_event_array
from ftrl_core.readers.rows import KIND_JSON_ESCAPED, KIND_PAIR


def reference_payload(kinds: np.ndarray) -> int:
    """The bytes of each kind, by the formats' rules, in numpy (as the sum was taken before
    the kernel): a token's length (a JSON-escaped one's is encoded as KIND_JSON_ESCAPED -
    length), 16 for a pair's two keys, none for the others."""
    k = kinds.astype(np.int64)
    escaped = np.where(k <= KIND_JSON_ESCAPED, KIND_JSON_ESCAPED - k, 0)
    return int(np.where(k >= 0, k, 0).sum() + escaped.sum() + 16 * (k == KIND_PAIR).sum())


def test_payload_bytes_equals_the_rule() -> None:
    rng = np.random.default_rng(7)
    for dtype in (np.int32, np.int64):
        kinds = rng.integers(-40, 40, size=500).astype(dtype)
        new_pos = rng.choice(500, size=200, replace=False).astype(np.int64)
        assert _payload_bytes(new_pos, kinds) == reference_payload(kinds[new_pos])
        assert _payload_bytes(new_pos[:0], kinds) == 0


def test_every_kind_reads_back_as_its_name() -> None:
    registry = FieldRegistry()
    registry.add_interactions([("a", "b")])
    fmt = JsonlFormat(registry, FeatureOptions())
    events = [{"label": 1, "features": {"a": "x" * 300, "b": "caf\u00e9 \"q\"", "n": 2.5}},
              {"label": 0, "features": {"a": "y", "b": ["z", "w"]}}]
    body = json.dumps({"events": events}).encode()
    batch = parse_event_array(body, fmt, require_label=True).batch
    store = NameStore()
    store.arena = np.empty(4, dtype=np.uint8)  # grown by the sum, exactly as needed
    store.record(batch, np.arange(batch.nnz, dtype=np.int64))
    assert int(store.counts[1]) == reference_payload(batch.kinds)
    names = {store.describe(int(k), registry) for k in batch.keys.tolist()}
    assert ("a", "x" * 300) in names and ("b", "caf\u00e9 \"q\"") in names
    assert ("n", "(value)") in names and ("b", "w") in names
    assert ("a:b", "y^z") in names and ("a:b", "y^w") in names  # pairs: their two keys

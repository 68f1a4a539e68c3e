"""Impression ids: kept as 64-bit keys (never as strings), and the deterministic coin
negative subsampling tosses with them."""

from __future__ import annotations

import hashlib

import numpy as np

from ftrl_core.batch import Batch
from ftrl_core.blake2b import BLOCK, blake2b_64

#: the longest id accepted, in UTF-8 bytes
MAX_ID_BYTES = 128
assert MAX_ID_BYTES <= BLOCK  # an id is one block of the compiled hash

_TWO_64 = float(1 << 64)


def id_key(text: str) -> int:
    """The 64-bit key of an id. 64 bits: two ids collide with probability ~n^2/2^65, about
    3e-8 for a million pending impressions; a collision is counted as a duplicate."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def raw_keys(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> list[int]:
    """``id_key`` of ids given as UTF-8 byte ranges of a body's array (no escapes: the bytes
    are the id's; 1 to ``MAX_ID_BYTES`` each), in one compiled pass."""
    return blake2b_64(buf, starts, lens).tolist()  # type: ignore[no-any-return]


def plain_keys(batch: Batch) -> list[int] | None:
    """The id keys of a parsed impression body when every event has a plain id (no
    escapes, 1 to 128 bytes: valid as it is): hashed from the body's bytes without making
    strings, in one compiled pass. None otherwise (``event_ids`` and ``check_ids`` then)."""
    starts = batch.extra["id_start"]
    lens = batch.extra["id_len"]
    escaped = batch.extra["id_escaped"]
    assert isinstance(starts, np.ndarray) and isinstance(lens, np.ndarray)
    assert isinstance(escaped, np.ndarray)
    if not starts.size:
        return []
    if starts.min() < 0 or lens.min() < 1 or lens.max() > MAX_ID_BYTES or escaped.any():
        return None
    assert batch.buf is not None
    return raw_keys(batch.buf, starts, lens)


def id_keys(texts: list[str]) -> list[int]:
    """``id_key`` of each id."""
    raw = [t.encode() for t in texts]
    lens = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    if not raw or lens.min() < 1 or lens.max() > BLOCK:
        return [id_key(t) for t in texts]
    starts = np.zeros(len(raw), dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    return raw_keys(np.frombuffer(b"".join(raw), dtype=np.uint8), starts, lens)


def coin(key: int) -> float:
    """A uniform number in [0, 1) decided by ``key`` alone, so a restarted process (or a
    replay of the log) keeps and drops the same negatives. A second hash of the key, so it
    is independent of anything else derived from the key."""
    mixed = hashlib.blake2b(key.to_bytes(8, "little"), digest_size=8,
                            person=b"ctr-negative").digest()
    return int.from_bytes(mixed, "little") / _TWO_64

"""``Idempotency-Key``: a retried training batch is learned once and answered as the first.

The rules follow the IETF draft "The Idempotency-Key HTTP Header Field"
(draft-ietf-httpapi-idempotency-key-header) and Stripe's practice:

- a key is 1-128 visible ASCII characters (400 otherwise);
- a key seen within ``--dedupe-window`` seconds whose request was learned gets that
  request's answer again (``p``, ``accepted``, ``model_version``), with the response header
  ``Idempotent-Replayed: true``, and nothing is learned;
- the same key with another body is a client error (422): the key names one request;
- the same key while its first request is still being made durable is a conflict (409 with
  ``Retry-After``): the retry comes back for the answer.

The table is this process's; a shared store also keeps the keys in Redis
(``service.stores.redis.idempotency``) so a retry that reaches another worker is answered
there. Answers keep ``p`` as float32 (equal to the first answer's to about 1e-7), 4 bytes
per event of the last window: at 150,000 events/s and the default 600 s window, 360 MB.
Keys travel in the write-ahead log, and the table is in every checkpoint, so a restart
still knows the keys of its window.

Stream marks. A key ``~stream:<tag>:<entry id>`` is not an Idempotency-Key: the join
consumer (``redis_streams.joined``) gives it to the request that carries a stream's entries
up to that entry id, so the write-ahead log holds, in the record itself, how far each stream
has been applied. ``record`` keeps the highest entry id per tag instead of an answer (no
``p``, never expired), live and when the log is learned again, and checkpoints carry the
marks; a restarted consumer acknowledges the pending entries at or below its stream's mark
without applying them again. Clients cannot send such a key (400).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import Problem

MAX_KEY_BYTES = 128
HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
#: the keys that are stream marks, not Idempotency-Keys
MARK_PREFIX = "~stream:"


def entry_id(text: str) -> tuple[int, int]:
    """A Redis stream entry id ``<ms>-<seq>`` as a comparable pair (ValueError if not)."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def mark_key(tag: str, entry: str) -> str:
    """The key that marks ``tag``'s stream as applied up to ``entry`` (an entry id)."""
    return f"{MARK_PREFIX}{tag}:{entry}"


@dataclass
class Answer:
    """A learned request's answer, kept for its retries."""

    fingerprint: int
    at: float
    accepted: int
    model_version: int
    p: np.ndarray  # float32
    #: the store's durability ticket: retries wait (409) until it is durable
    ticket: int = 0

    def p64(self) -> np.ndarray:
        """``p`` as the shortest decimals of its float32 values (what the answer shows)."""
        return np.array([float(str(x)) for x in self.p], dtype=np.float64)


def check_key(key: str | None) -> str:
    """The key of a request ('' for none), or a 400 problem naming the bad value."""
    if key is None:
        return ""
    raw = key.encode("utf-8", "surrogateescape")
    if not 1 <= len(raw) <= MAX_KEY_BYTES or not all(0x21 <= b <= 0x7E for b in raw) \
            or key.startswith(MARK_PREFIX):
        shown = key[:40] + ("..." if len(key) > 40 else "")
        raise Problem(400, "invalid-idempotency-key",
                      f"Idempotency-Key {shown!r} ({len(raw)} bytes): a key is 1 to "
                      f"{MAX_KEY_BYTES} visible ASCII characters, not starting with "
                      f"{MARK_PREFIX!r}")
    return key


def in_progress(key: str) -> Problem:
    return Problem(409, "idempotency-key-in-use",
                   f"a request with Idempotency-Key {key!r} is still being learned; retry "
                   "for its answer", headers={"Retry-After": "1"})


def mismatch(key: str) -> Problem:
    return Problem(422, "idempotency-key-reused",
                   f"Idempotency-Key {key!r} was used for another request body within the "
                   "dedupe window; nothing was learned (a key names one request)")


class IdempotencyKeys:
    """The keys of the last ``window`` seconds, oldest first."""

    def __init__(self, window: float) -> None:
        self.window = float(window)
        self._keys: OrderedDict[str, Answer] = OrderedDict()
        self.replayed = 0  # retries answered from the table (for /metrics)
        #: stream tag -> the highest entry id applied (``mark_key``)
        self.marks: dict[str, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        return sum(a.p.nbytes for a in self._keys.values())

    def expire(self, now: float | None = None) -> None:
        limit = (time.time() if now is None else now) - self.window
        while self._keys:
            first = next(iter(self._keys.values()))
            if first.at >= limit:
                break
            self._keys.popitem(last=False)

    def lookup(self, key: str, fingerprint: int,
               is_durable: Callable[[int], bool] = lambda t: True) -> Answer | None:
        """The answer of a learned request with this key, None if the key is free; raises
        the 409 / 422 problems of the rules above."""
        if not key:
            return None
        self.expire()
        found = self._keys.get(key)
        if found is None:
            return None
        if found.fingerprint != fingerprint:
            raise mismatch(key)
        if not is_durable(found.ticket):
            raise in_progress(key)
        self.replayed += 1
        return found

    def record(self, key: str, fingerprint: int, at: float, accepted: int, version: int,
               p: np.ndarray, ticket: int = 0) -> None:
        """Remember a request just learned (its retries wait until ``ticket`` is durable);
        a stream mark moves its stream's mark instead."""
        if key.startswith(MARK_PREFIX):
            tag, _, entry = key[len(MARK_PREFIX):].rpartition(":")
            mark = entry_id(entry)
            if mark > self.marks.get(tag, (-1, -1)):
                self.marks[tag] = mark
            return
        if at >= time.time() - self.window:
            self._keys[key] = Answer(fingerprint, at, accepted, version,
                                     np.asarray(p, dtype=np.float32), ticket)

    # -- checkpoints --------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """The answered keys as arrays (a checkpoint part)."""
        self.expire()
        done = list(self._keys.items())
        keys = np.array([k for k, _ in done], dtype=np.str_) if done else np.empty(0, "U1")
        meta = np.array([(a.fingerprint, a.at, a.accepted, a.model_version) for _, a in done],
                        dtype=np.float64).reshape(-1, 4)
        sizes = np.array([a.p.size for _, a in done], dtype=np.int64)
        flat = np.concatenate([a.p for _, a in done]) if done else np.empty(0, np.float32)
        tags = sorted(self.marks)
        return {"keys": keys, "meta": meta, "sizes": sizes, "p": flat.astype(np.float32),
                "mark_tags": np.array(tags, dtype=np.str_) if tags else np.empty(0, "U1"),
                "marks": np.array([self.marks[t] for t in tags], dtype=np.int64
                                  ).reshape(-1, 2)}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        offsets = np.concatenate([[0], np.cumsum(arrays["sizes"])]).astype(np.int64)
        for i, key in enumerate(arrays["keys"].tolist()):
            fp, at, accepted, version = arrays["meta"][i]
            p = arrays["p"][offsets[i]:offsets[i + 1]].copy()
            self._keys[str(key)] = Answer(int(fp), float(at), int(accepted), int(version), p)
        if "marks" in arrays:  # checkpoints written before stream marks have none
            for tag, (ms, seq) in zip(arrays["mark_tags"].tolist(),
                                      arrays["marks"].tolist(), strict=True):
                self.marks[str(tag)] = (int(ms), int(seq))
        self.expire()

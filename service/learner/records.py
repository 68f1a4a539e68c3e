"""What the learner writes to the write-ahead log, and reads back at start-up.

A ``BATCH`` record is a ``/v1/train`` body exactly as it was accepted; a ``LINES`` record
the good lines of a piece of a ``/v1/train/stream`` body. Both carry the time they were
accepted and the request's ``Idempotency-Key`` (empty: none). Learning is deterministic in
arrival order, so parsing and learning the records again after the last snapshot rebuilds
the model the process had, bit for bit, with its field numbering and its answers (which the
idempotency table needs) included.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_HEAD = struct.Struct("<dH")


@dataclass(frozen=True)
class TrainRecord:
    body: bytes | bytearray | memoryview
    key: str  # the Idempotency-Key, '' for none
    at: float  # wall-clock seconds when it was accepted

    def encode(self) -> bytes:
        k = self.key.encode()
        return b"".join((_HEAD.pack(self.at, len(k)), k, self.body))  # one copy

    @classmethod
    def decode(cls, payload: memoryview) -> TrainRecord:
        at, n = _HEAD.unpack_from(payload, 0)
        start = _HEAD.size
        key = bytes(payload[start:start + n]).decode()
        return cls(payload[start + n:], key, at)

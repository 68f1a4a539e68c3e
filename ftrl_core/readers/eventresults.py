"""What the parsing of an in-memory JSON body gives: its batch and its bad events
(``jsonl.parse_events``/``parse_event_array``), the events' ids, and the body as the
kernels' array."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..batch import Batch

_BYTES = np.dtype(np.uint8)


def id_arrays(ids: np.ndarray) -> dict[str, np.ndarray]:
    return {"id_start": ids[0], "id_len": ids[1], "id_escaped": ids[2]}


def event_ids(batch: Batch) -> list[str | None]:
    """The ``id`` of each row of a JSON batch (None where the event had none)."""
    starts = batch.extra["id_start"]
    lens = batch.extra["id_len"]
    escaped = batch.extra["id_escaped"]
    assert isinstance(starts, np.ndarray) and isinstance(lens, np.ndarray)
    assert isinstance(escaped, np.ndarray) and batch.buf is not None
    raw = batch.buf
    out: list[str | None] = []
    for s, n, e in zip(starts.tolist(), lens.tolist(), escaped.tolist(), strict=True):
        if s < 0:
            out.append(None)
            continue
        text = raw[s:s + n].tobytes()
        out.append(json.loads(b'"' + text + b'"') if e else text.decode("utf-8"))
    return out


@dataclass
class EventError:
    """A bad event of a body: its index (0-based line or array position; -1: the body
    itself), the field and the message; ``code`` is the ``rows.E_*`` code."""

    index: int
    field: str
    message: str
    code: int
    value: str | None = None  # the bad value's JSON text, cut and escaped


@dataclass
class EventsResult:
    """The good events of a body as one batch (``extra["event_index"]`` maps rows back to
    events), and the bad ones."""

    batch: Batch
    errors: list[EventError]

    @property
    def ok(self) -> bool:
        return not self.errors


def as_buffer(body: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """A body as the kernels' writable uint8 array (no copy of a bytearray)."""
    if type(body) is bytearray:  # the service's bodies: writable, no flags to look at
        return np.frombuffer(body, _BYTES)
    if isinstance(body, np.ndarray):
        arr = np.ascontiguousarray(body).reshape(-1).view(np.uint8)
    else:
        arr = np.frombuffer(body, dtype=np.uint8)
    # kernels are compiled for writable arrays: one type, one compiled version
    return arr if arr.flags.writeable else arr.copy()

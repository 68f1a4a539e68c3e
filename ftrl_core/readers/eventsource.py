"""Event bodies from files: the chunked reader around the compiled converter of delimited
files (``events``), and ``open_event_reader(path, fmt)``, which picks the reader a file needs
for ``ctr replay`` and ``ctr predict --url`` (the HTTP counterpart of ``open_reader``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from .base import BadLine, BadLineError
from .eventlines import JsonLinesEventReader, VWEventReader
from .events import (
    BAD_LINE,
    BODY_PREFIX,
    BODY_SUFFIX,
    MESSAGES,
    NEED_INPUT,
    NO_SPACE,
    EventBatch,
    Layout,
    avazu_layout,
    criteo_layout,
    delimited_events,
)
from .rows import E_COLUMNS
from .source import InputError, open_binary


def warm_up() -> None:
    """Load the compiled converter now (a second or so in a new process) rather than in the
    middle of a timed run."""
    buf = np.frombuffer(b"1" + b"\t" * 39 + b"\n", np.uint8).copy()
    layout = criteo_layout()
    out = np.empty(1024, np.uint8)
    delimited_events(buf, 0, buf.size, True, layout.classes, layout.label_col, layout.short_rows,
                     layout.col_field, layout.int_cols, layout.names, layout.name_off, 1, 1,
                     layout.row_budget, out, np.empty(1), np.empty(1, np.int64),
                     np.empty((1, 2), np.int64), np.empty(41, np.int64),
                     np.zeros(4, np.int64), np.array([0, 0, 0, 1], np.int64))


class DelimitedEventReader:
    """Bodies of ``batch_size`` events from a Criteo TSV or Avazu CSV file, in file order.

    ``labels=True`` (training) requires and writes labels; ``labels=False`` (prediction)
    writes none. Bad lines raise ``BadLineError`` unless ``skip_bad_lines``."""

    def __init__(self, path: str, fmt: str, batch_size: int = 1000, labels: bool = True,
                 skip_bad_lines: bool = False, limit: int | None = None,
                 chunk_bytes: int = 1 << 20) -> None:
        if fmt not in ("criteo", "avazu"):
            raise InputError(f"no compiled event converter for format {fmt!r}")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.path, self.fmt, self.batch_size = str(path), fmt, int(batch_size)
        self.labels, self.skip_bad_lines, self.limit = labels, skip_bad_lines, limit
        self.chunk_bytes = int(chunk_bytes)
        self.bad_lines: list[BadLine] = []
        self.bad_line_count = 0
        self.rows = 0

    def __iter__(self) -> Iterator[EventBatch]:
        with open_binary(self.path) as fh:
            if self.fmt == "criteo":
                layout, first_line = criteo_layout(), 1
            else:
                layout, first_line = avazu_layout(fh.readline(), self.path), 2
            yield from self._read(fh, layout, first_line)

    def _read(self, fh: BinaryIO, layout: Layout, first_line: int) -> Iterator[EventBatch]:
        n = self.batch_size
        buf = np.empty(self.chunk_bytes, dtype=np.uint8)
        out = np.empty(6 * self.chunk_bytes + n * layout.row_budget, dtype=np.uint8)
        labels, lines = np.empty(n, np.float64), np.empty(n, np.int64)
        spans = np.empty((n, 2), np.int64)
        starts = np.empty(layout.col_field.size + 1, np.int64)
        err = np.zeros(4, np.int64)
        state = np.array([0, 0, len(BODY_PREFIX), first_line], np.int64)
        out[: len(BODY_PREFIX)] = np.frombuffer(BODY_PREFIX, np.uint8)
        remaining = self.limit if self.limit is not None else -1
        carry, eof = 0, False
        while not eof and remaining != 0:
            if carry == buf.size:  # one line longer than the buffer
                buf = np.concatenate([buf, np.empty(buf.size, np.uint8)])
            view = memoryview(buf)[carry:]  # type: ignore[arg-type]
            got = 0
            while got < len(view):
                k = fh.readinto(view[got:])  # type: ignore[attr-defined]
                if not k:
                    eof = True
                    break
                got += k
            end, pos = carry + got, 0
            while remaining != 0:
                max_rows = n if remaining < 0 else min(n, remaining)
                state[0] = pos
                status = delimited_events(
                    buf, pos, end, eof, layout.classes, layout.label_col, layout.short_rows,
                    layout.col_field, layout.int_cols, layout.names, layout.name_off,
                    int(self.labels), max_rows, layout.row_budget, out, labels, lines, spans,
                    starts, err, state)
                pos = int(state[0])
                if status == NEED_INPUT:
                    break
                if status == BAD_LINE:
                    pos = self._bad_line(buf, end, err, int(state[3]), layout)
                    state[3] += 1
                elif status == NO_SPACE:  # bodies always hold batch_size rows
                    out = np.concatenate([out, np.empty(out.size, np.uint8)])
                else:  # a full body
                    rows = int(state[1])
                    yield self._emit(out, int(state[2]), labels, lines, spans, rows)
                    self.rows += rows
                    if remaining > 0:
                        remaining -= rows
                    state[1], state[2] = 0, len(BODY_PREFIX)
            carry = end - pos
            buf[:carry] = buf[pos:end].copy()
        if state[1]:
            rows = int(state[1])
            self.rows += rows
            yield self._emit(out, int(state[2]), labels, lines, spans, rows)

    @staticmethod
    def _emit(out: np.ndarray, o: int, labels: np.ndarray, lines: np.ndarray,
              spans: np.ndarray, rows: int) -> EventBatch:
        out[o: o + 2] = np.frombuffer(BODY_SUFFIX, np.uint8)
        return EventBatch(out[: o + 2].tobytes(), labels[:rows].copy(), lines[:rows].copy(),
                          spans[:rows].copy())

    def _bad_line(self, buf: np.ndarray, end: int, err: np.ndarray, line: int,
                  layout: Layout) -> int:
        code, col, start = (int(x) for x in err[:3])
        raw = buf[start:end].tobytes()
        nl = raw.find(b"\n")
        message = MESSAGES.get(code, f"error {code}")
        if code == E_COLUMNS:
            message = f"{message}: found {col}, expected {layout.col_field.size}"
            fname = ""
        else:
            fname = layout.column_name(col)
        text = raw[: min(nl if nl >= 0 else len(raw), 80)].decode("utf-8", "backslashreplace")
        bad = BadLine(line, fname, message, text)
        if not self.skip_bad_lines:
            raise BadLineError(self.path, bad)
        self.bad_line_count += 1
        if len(self.bad_lines) < 100:
            self.bad_lines.append(bad)
        return end if nl < 0 else start + nl + 1


EVENT_FORMATS = ("criteo", "avazu", "jsonl", "vw")


class EventSource(Protocol):
    """What every event reader offers: batches, then counts of rows and bad lines."""

    rows: int
    bad_line_count: int
    bad_lines: list[BadLine]

    def __iter__(self) -> Iterator[EventBatch]: ...


def open_event_reader(path: str, fmt: str = "auto", batch_size: int = 1000,
                      labels: bool = True, skip_bad_lines: bool = False,
                      limit: int | None = None) -> EventSource:
    """Event bodies of ``path`` in ``fmt`` (``auto``: detected like ``ctr train`` does)."""
    from . import detect_format

    if str(path) == "-":
        if fmt == "auto":
            raise InputError("reading standard input needs --format")
    elif not Path(path).exists():
        raise InputError(f"{path}: no such file")
    elif Path(path).is_file() and Path(path).stat().st_size == 0:
        raise InputError(f"{path}: empty input")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt in ("criteo", "avazu"):
        return DelimitedEventReader(path, fmt, batch_size, labels, skip_bad_lines, limit)
    if fmt == "jsonl":
        return JsonLinesEventReader(path, batch_size, labels, skip_bad_lines, limit)
    if fmt == "vw":
        return VWEventReader(path, batch_size, labels, skip_bad_lines, limit)
    raise InputError(f"unknown format {fmt!r} (known: {', '.join(EVENT_FORMATS)})")

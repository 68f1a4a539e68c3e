"""The chunked reader every format shares, and the options that shape features.

A ``Format`` knows its fields and calls its compiled kernel; ``Reader`` owns the file, the
chunk buffers, line numbers and bad-line handling, and yields ``Batch`` objects.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..batch import Batch
from ..fields import BIAS, OVERFLOW_NAME, FieldRegistry
from ..limits import MAX_FIELD_NAME_BYTES
from .quoting import printable, shorten
from .rows import ERROR, ERROR_MESSAGES, FULL, OK
from .source import open_binary

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 1 << 20


@dataclass(frozen=True)
class FeatureOptions:
    """How rows become features (the same for every format)."""

    drop_missing: bool = False
    ints: str = "token"  # "token" | "log" (Criteo integer columns)
    hash_bits: int = 0  # 0: exact 64-bit keys; B: fold into 2^B slots
    max_row_features: int = 10_000
    strict: bool = False  # JSON lines: unknown top-level keys are errors
    #: JSON lines: the declared fields (ids 1..n, right after the bias); an event that
    #: leaves one out gets its missing token, as an empty TSV column does
    fields: tuple[str, ...] = ()
    #: JSON lines: a field that is not declared is an error (E_UNKNOWN_FIELD)
    strict_fields: bool = False

    def __post_init__(self) -> None:
        if self.ints not in ("token", "log"):
            raise ValueError(f"--ints must be 'token' or 'log', got {self.ints!r}")
        object.__setattr__(self, "fields", tuple(self.fields))
        check_field_names(self.fields)
        if self.strict_fields and not self.fields:
            raise ValueError("--strict-fields needs the declared fields (--fields)")
        if not (self.hash_bits == 0 or 1 <= self.hash_bits <= 54):
            raise ValueError(f"--hash-bits must be between 1 and 54, got {self.hash_bits}")
        if self.max_row_features < 2:
            raise ValueError("max_row_features must be at least 2")

    @property
    def hash_mask(self) -> np.uint64:
        return np.uint64((1 << self.hash_bits) - 1 if self.hash_bits else 0)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "drop_missing": self.drop_missing, "ints": self.ints, "hash_bits": self.hash_bits,
            "max_row_features": self.max_row_features}
        if self.fields:  # (absent from files written before fields could be declared)
            out["fields"] = list(self.fields)
            out["strict_fields"] = self.strict_fields
        return out


def check_field_names(names: tuple[str, ...]) -> None:
    """Declared field names follow the rules of field names met in the data."""
    seen: set[str] = set()
    for name in names:
        raw = name.encode("utf-8", "surrogatepass")
        if not raw or len(raw) > MAX_FIELD_NAME_BYTES or any(
                ord(c) < 32 or 127 <= ord(c) <= 159 for c in name):
            raise ValueError(f"--fields: {name[:80]!r} is not a field name (1 to "
                             f"{MAX_FIELD_NAME_BYTES} bytes, no control characters)")
        if name in seen or name in (BIAS, OVERFLOW_NAME):
            raise ValueError(f"--fields: {name!r} is declared twice" if name in seen
                             else f"--fields: {name!r} is a reserved name")
        seen.add(name)


@dataclass
class BadLine:
    line: int
    field: str
    message: str
    text: str


class BadLineError(ValueError):
    """A malformed line; names the file, the line number and the field."""

    def __init__(self, source: str, bad: BadLine) -> None:
        self.source = source
        self.bad = bad
        where = f"{source}:{bad.line}"
        fld = f" field {shorten(bad.field, 80)}:" if bad.field else ""
        super().__init__(f"{where}:{fld} {bad.message} (line starts "
                         f"'{printable(bad.text[:80])}')")


@dataclass
class Outputs:
    indptr: np.ndarray
    keys: np.ndarray
    fields: np.ndarray
    values: np.ndarray
    refs: np.ndarray
    kinds: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    lines: np.ndarray
    #: code, field or column, offset of the line, a packed key, offset of the bad value
    err: np.ndarray = field(default_factory=lambda: np.zeros(5, dtype=np.int64))
    state: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.int64))
    #: per-row arrays a format adds (``after_parse``), passed on as ``Batch.extra``
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    #: each row's initial margin, for formats that have one (VW's "initial prediction")
    base: np.ndarray | None = None

    @classmethod
    def allocate(cls, rows: int, nnz: int) -> Outputs:
        indptr = np.empty(rows + 1, dtype=np.int64)
        indptr[0] = 0
        return cls(indptr, np.empty(nnz, np.uint64), np.empty(nnz, np.int32),
                   np.empty(nnz, np.float64), np.empty(nnz, np.int64), np.empty(nnz, np.int32),
                   np.empty(rows, np.float64), np.empty(rows, np.float64),
                   np.empty(rows, np.int64))

    def batch(self, buf: np.ndarray, first_line: int) -> Batch:
        rows, nnz = int(self.state[1]), int(self.state[2])
        base = None
        if self.base is not None and self.base[:rows].any():  # (zeros: no array at all)
            base = self.base[:rows].copy()
        return Batch(self.indptr[: rows + 1], self.keys[:nnz], self.fields[:nnz],
                     self.values[:nnz], self.labels[:rows], self.weights[:rows],
                     self.refs[:nnz], self.kinds[:nnz], buf, first_line + self.lines[:rows],
                     {k: v[:rows] for k, v in self.extra.items()}, base)


class Format(ABC):
    """One input format: its fields, its header (if any) and its kernel."""

    name: str = ""
    has_header = False
    #: the message of each error code (a format may word one its own way)
    messages: dict[int, str] = ERROR_MESSAGES
    #: whether ``parse`` leaves every shared object alone (its fields are all known before
    #: the first row: a fixed schema, or a header); only then may chunks of one file be
    #: parsed in several threads at once (``parallel.ParallelReader``)
    fixed_fields = False

    def __init__(self, registry: FieldRegistry, options: FeatureOptions) -> None:
        self.registry = registry
        self.options = options

    def read_header(self, line: bytes) -> None:  # pragma: no cover - formats with headers
        raise NotImplementedError

    @abstractmethod
    def parse(self, buf: np.ndarray, pos: int, end: int, final: bool, out: Outputs) -> int:
        """Run the kernel over ``buf[pos:end]``; returns OK, FULL or ERROR."""

    def after_parse(self, buf: np.ndarray, out: Outputs) -> None:  # noqa: B027 - optional hook
        """Hook for formats whose kernels register fields (adopt their names)."""

    def field_name(self, column: int) -> str:
        """Name of the field at ``column`` (as the kernel reports it in ``err[1]``)."""
        return str(column)


class Reader:
    """Iterate a file as batches of rows, in order, in constant memory."""

    #: whether iterating already runs parsing in threads of its own (the trainer then adds
    #: no prefetch thread)
    threaded = False

    def __init__(self, path: str | Path, fmt: Format, chunk_bytes: int = DEFAULT_CHUNK,
                 skip_bad_lines: bool = False, recycle: int = 0) -> None:
        """``recycle=N`` reuses N sets of output arrays round-robin instead of allocating
        fresh ones per batch (fresh pages cost a third of the parse time); only for callers
        that drop each batch before N more have been read, like the trainer."""
        self.recycle = int(recycle)
        self.path = str(path)
        self.format = fmt
        self.chunk_bytes = int(chunk_bytes)
        self.skip_bad_lines = skip_bad_lines
        self.bad_lines: list[BadLine] = []
        self.bad_line_count = 0
        self.rows = 0
        self.lines = 0

    def __iter__(self) -> Iterator[Batch]:
        with open_binary(self.path) as fh:
            yield from self._read(fh)

    def capacities(self) -> tuple[int, int]:
        """(rows, features) one set of output arrays holds: a row always fits in an empty
        set, whatever ``max_row_features`` says."""
        rows_cap = max(64, self.chunk_bytes // 32)
        nnz_cap = self.chunk_bytes // 4 + self.format.options.max_row_features + 64
        return rows_cap, nnz_cap

    def _read(self, fh: BinaryIO) -> Iterator[Batch]:
        line_base = 1  # line number of the first line in the buffer
        if self.format.has_header:
            header = fh.readline()
            if not header:
                return
            self.format.read_header(header)
            line_base = 2
        rows_cap, nnz_cap = self.capacities()
        pool: list[Outputs] = []
        turn = 0
        buf = np.empty(self.chunk_bytes, dtype=np.uint8)
        carry = 0
        eof = False
        while not eof:
            if carry == buf.size:  # one line longer than the buffer: grow it
                bigger = np.empty(buf.size * 2, dtype=np.uint8)
                bigger[:carry] = buf[:carry]
                buf = bigger
            got = 0
            view = memoryview(buf)[carry:]  # type: ignore[arg-type]
            while got < len(view):
                n = fh.readinto(view[got:])  # type: ignore[attr-defined]
                if not n:
                    eof = True
                    break
                got += n
            end = carry + got
            pos = 0
            while True:
                if len(pool) < self.recycle:
                    pool.append(Outputs.allocate(rows_cap, nnz_cap))
                out = pool[turn % len(pool)] if pool else Outputs.allocate(rows_cap, nnz_cap)
                out.state[:] = (pos, 0, 0, 0)
                status = self.format.parse(buf, pos, end, eof, out)
                self.format.after_parse(buf, out)
                rows = int(out.state[1])
                if rows:
                    # only a set handed out moves the ring on: a parse that found no row
                    # (a buffer without a whole line, a bad line) must not, or a set still
                    # held by one of the last ``recycle`` batches would be written over
                    turn += 1
                    self.rows += rows
                    yield out.batch(buf, line_base)
                line_base += int(out.state[3])
                pos = int(out.state[0])
                if status == OK:
                    break
                if status == FULL:
                    continue
                assert status == ERROR
                pos = self._bad_line(buf, end, out, line_base)
                line_base += 1
            self.lines = line_base - 1
            carry = end - pos
            if carry and not eof:
                # batches keep views into ``buf``: the next chunk gets a new buffer
                nxt = np.empty(max(buf.size, 2 * carry), dtype=np.uint8)
                nxt[:carry] = buf[pos:end]
                buf = nxt
            elif not eof:
                buf = np.empty(buf.size, dtype=np.uint8)

    def _bad_line(self, buf: np.ndarray, end: int, out: Outputs, line: int) -> int:
        """Report or record the line at ``out.err``; returns the offset after it."""
        bad, eol = describe_bad_line(self.format, buf, end, out, line)
        if not self.skip_bad_lines:
            raise BadLineError(self.path, bad)
        self._skipped(bad)
        return eol

    def _skipped(self, bad: BadLine) -> None:
        """Count and (the first hundred) keep a skipped line."""
        self.bad_line_count += 1
        if len(self.bad_lines) < 100:
            self.bad_lines.append(bad)
        log.debug("skipped %s:%d: %s", self.path, bad.line, bad.message)


def describe_bad_line(fmt: Format, buf: np.ndarray, end: int, out: Outputs, line: int
                      ) -> tuple[BadLine, int]:
    """The bad line a kernel reported in ``out.err`` (numbered ``line``), and the offset
    after it."""
    code, column, start = (int(x) for x in out.err[:3])
    raw = buf[start:end].tobytes()
    nl = raw.find(b"\n")
    eol = end if nl < 0 else start + nl + 1
    text = raw[: min(nl if nl >= 0 else len(raw), 80)].decode("utf-8", "backslashreplace")
    message = fmt.messages.get(code, f"error {code}")
    if code == 1:
        message = f"{message}: found {column}"
        fname = ""
    else:
        fname = fmt.field_name(column)
    return BadLine(line, fname, message, text), eol

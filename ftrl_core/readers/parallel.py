"""Parse one file in several threads, hand its batches on strictly in file order.

Where parsing a row costs more than learning it (interactions, ``--ints log``, a slower
CPU), one parse thread leaves the learner waiting, and on a shared machine a parser the
scheduler stops leaves the other running; the kernels release the GIL, so threads parsing
different chunks run on different cores (``trainer.parse_threads`` says how many a run
gets). Only formats whose ``parse`` touches no shared state (fixed
fields, ``Format.fixed_fields``) take this path; formats that meet new fields in the data
register them as they go, in file order, and stay sequential.

The pieces: ``LineChunks`` cuts the stream where the sequential ``Reader`` would (reading
and, for gzip, decompressing stay serial, under a lock); each worker parses the chunk it
took with line numbers counted from the chunk's start; the consumer (the learner's thread)
takes chunks in order, adds the lines of all the chunks before, and yields the same batches,
skipped lines and ``FILE:LINE`` errors as ``Reader``. A bad line that stops the run is
raised after the rows before it were yielded, as ``Reader`` does.

Memory stays bounded: a worker takes a chunk only while fewer than ``ahead`` chunks are
taken and not yet released, and a chunk is released (its buffer and output arrays reused)
when the consumer asks for the batch after its last one, i.e. once the caller is done with
it. So the caller must not keep a batch past the next one, as with ``Reader(recycle=N)``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..batch import Batch
from .base import DEFAULT_CHUNK, BadLine, BadLineError, Format, Outputs, Reader, describe_bad_line
from .linechunks import Chunk, LineChunks
from .rows import ERROR, FULL, OK
from .source import open_binary

#: seconds a waiting thread sleeps before it looks whether the run was stopped
POLL = 0.1


@dataclass
class ParsedChunk:
    """What a worker made of one chunk; line numbers count from the chunk's first line
    (0)."""

    chunk: Chunk
    #: output arrays holding rows, each with the chunk line of its first row's line base
    parts: list[tuple[Outputs, int]] = field(default_factory=list)
    #: every bad line met (skipped, or the last one stops the file)
    bad: list[BadLine] = field(default_factory=list)
    #: the last bad line stops the file (no ``--skip-bad-lines``)
    stop: bool = False
    #: lines the chunk holds (blank and bad ones included)
    lines: int = 0
    #: every output set taken (to recycle), those without rows included
    used: list[Outputs] = field(default_factory=list)


class ParallelReader(Reader):
    """``Reader`` with ``threads`` parse threads (for formats with ``fixed_fields``)."""

    threaded = True

    def __init__(self, path: str | Path, fmt: Format, chunk_bytes: int = DEFAULT_CHUNK,
                 skip_bad_lines: bool = False, threads: int = 2, ahead: int = 0,
                 recycle: bool = False) -> None:
        """``ahead``: chunks taken and not yet released at most (default: two per thread
        and one). ``recycle``: reuse the buffers and output arrays of released chunks (for
        callers that drop each batch before asking for the next, like the trainer);
        without it every chunk gets new ones, and batches may be kept."""
        if not fmt.fixed_fields:
            raise ValueError(f"{fmt.name}: fields appear in the data; parse it sequentially")
        super().__init__(path, fmt, chunk_bytes=chunk_bytes, skip_bad_lines=skip_bad_lines)
        self.threads = max(1, int(threads))
        self.ahead = int(ahead) or 2 * self.threads + 1
        self.reuse = recycle

    def __iter__(self) -> Iterator[Batch]:
        with open_binary(self.path) as fh:
            yield from self._read_parallel(fh)

    def _read_parallel(self, fh: BinaryIO) -> Iterator[Batch]:
        line_base = 1  # line number of the next chunk's first line
        if self.format.has_header:
            header = fh.readline()
            if not header:
                return
            self.format.read_header(header)
            line_base = 2
        run = _Run(self, LineChunks(fh, self.chunk_bytes))
        try:
            run.start()
            index = 0
            while True:
                parsed = run.result(index)
                if parsed is None:
                    return
                for out, first in parsed.parts:
                    self.rows += int(out.state[1])
                    yield out.batch(parsed.chunk.array, line_base + first)
                for i, bad in enumerate(parsed.bad):
                    bad.line += line_base
                    if parsed.stop and i == len(parsed.bad) - 1:
                        raise BadLineError(self.path, bad)
                    self._skipped(bad)
                line_base += parsed.lines
                self.lines = line_base - 1
                run.release(parsed)  # the caller asked for more: it is done with the batches
                index += 1
        finally:
            run.stop()


class _Run:
    """The worker threads of one pass over a file, and what they share."""

    def __init__(self, reader: ParallelReader, chunks: LineChunks) -> None:
        self.reader = reader
        self.chunks = chunks
        chunks.take = self._take_buffer
        self.rows_cap, self.nnz_cap = reader.capacities()
        self.read_lock = threading.Lock()  # one thread reads (and decompresses) at a time
        self.slots = threading.Semaphore(reader.ahead)
        self.done = threading.Condition()
        self.results: dict[int, ParsedChunk | BaseException] = {}
        self.taken = 0  # chunks handed out so far (the next one's index)
        self.total: int | None = None  # chunks in the file, once the end was read
        self.stopping = threading.Event()
        self.free_outputs: list[Outputs] = []
        self.free_buffers: list[bytearray] = []
        self.workers = [threading.Thread(target=self._work, name=f"ctr-parse-{i}", daemon=True)
                        for i in range(reader.threads)]

    def start(self) -> None:
        for t in self.workers:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.workers:
            t.join(timeout=5)

    def result(self, index: int) -> ParsedChunk | None:
        """Chunk ``index`` parsed (None past the last one); a worker's exception is raised
        here, in order."""
        with self.done:
            while index not in self.results and (self.total is None or index < self.total):
                self.done.wait(POLL)
            item = self.results.pop(index, None)
        if isinstance(item, BaseException):
            raise item
        return item

    def release(self, parsed: ParsedChunk) -> None:
        if self.reader.reuse:
            self.free_outputs.extend(parsed.used)
            self.free_buffers.append(parsed.chunk.raw)
        self.slots.release()

    # -- worker side ---------------------------------------------------------------------

    def _work(self) -> None:
        while not self.stopping.is_set():
            if not self.slots.acquire(timeout=POLL):
                continue
            with self.read_lock:
                if self.total is not None:
                    self.slots.release()
                    return
                index = self.taken
                self.taken += 1
                item: Chunk | ParsedChunk | BaseException | None
                try:
                    item = self.chunks.next()
                except BaseException as exc:  # (a damaged gzip stream): raised in order
                    item = exc
                if not isinstance(item, Chunk):
                    self.total = index if item is None else index + 1
            if isinstance(item, Chunk):
                try:
                    item = self._parse(item)
                except BaseException as exc:
                    item = exc
            with self.done:
                if item is not None:
                    self.results[index] = item
                self.done.notify_all()
            if item is None:
                self.slots.release()
                return

    def _parse(self, chunk: Chunk) -> ParsedChunk:
        """The loop of ``Reader._read`` over one chunk, lines counted from 0."""
        reader, fmt = self.reader, self.reader.format
        buf = chunk.array
        parsed = ParsedChunk(chunk)
        pos = 0
        line = 0
        while True:
            out = self._take_outputs()
            parsed.used.append(out)
            out.state[:] = (pos, 0, 0, 0)
            # every chunk but the last ends with a newline: "final" reads its last line,
            # which the sequential reader reads too, its newline being in the buffer
            status = fmt.parse(buf, pos, chunk.end, True, out)
            fmt.after_parse(buf, out)
            if int(out.state[1]):
                parsed.parts.append((out, line))
            line += int(out.state[3])
            pos = int(out.state[0])
            if status == OK:
                break
            if status == FULL:
                continue
            assert status == ERROR
            bad, pos = describe_bad_line(fmt, buf, chunk.end, out, line)
            parsed.bad.append(bad)
            line += 1
            if not reader.skip_bad_lines:
                parsed.stop = True
                break
        parsed.lines = line
        return parsed

    def _take_outputs(self) -> Outputs:
        try:
            return self.free_outputs.pop()
        except IndexError:
            return Outputs.allocate(self.rows_cap, self.nnz_cap)

    def _take_buffer(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes (its content is overwritten)."""
        while self.free_buffers:
            try:
                raw = self.free_buffers.pop()
            except IndexError:
                break
            if len(raw) == size:
                return raw
        return bytearray(size)

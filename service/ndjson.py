"""NDJSON training streams: learned while the body arrives, in bounded memory.

The body is cut at newlines into pieces of complete lines (``PIECE_BYTES``, or whatever
arrived within ``PIECE_SECONDS`` so a slow producer's events are not held back); each piece
is parsed by the compiled line scanner and learned under the learn lock, so other requests
interleave between pieces. Bad lines are skipped and reported with their 1-based line
number. A single line longer than the body limit stops the stream with a 413 problem that
says how much was learned before it (nothing already accepted is lost); so does any other
failure that stops a stream (see ``learn_stream``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.requests import ClientDisconnect

from ftrl_core.metrics import EPS

from .errors import Problem, store_problem
from .events import line_error
from .learner import Learned, LearnerService
from .stores import StoreError

log = logging.getLogger(__name__)
PIECE_BYTES = 256 << 10
PIECE_SECONDS = 0.05
MAX_REPORTED = 100


class LineTooLong(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"a line longer than {size} bytes")
        self.size = size


class LineTimeout(Exception):
    pass


async def iter_pieces(chunks: AsyncIterator[bytes], max_line: int,
                      piece_bytes: int = PIECE_BYTES, piece_seconds: float = PIECE_SECONDS,
                      line_seconds: float | None = None) -> AsyncIterator[bytes]:
    """Pieces of complete lines of a byte stream (the last may lack its newline).

    Complete lines are handed on once ``piece_bytes`` of them are in, or ``piece_seconds``
    after they arrived even if nothing more comes (the read goes on in a task meanwhile).
    Raises ``LineTooLong`` at the first line over ``max_line`` bytes (its newline not
    counted), whether it arrives across chunks or inside one, and ``LineTimeout`` when a
    line has not ended ``line_seconds`` after the one before it (a stream is long-lived by
    design, but a producer that sends a byte now and then must not hold a connection
    without ever finishing a line; a blank line resets the clock); in both cases after
    yielding the complete lines before it."""
    it = chunks.__aiter__()
    buf = bytearray()
    tail = 0  # bytes of buf's unfinished last line
    since = line_start = time.monotonic()
    nxt: asyncio.Future[bytes] | None = None
    try:
        while True:
            complete = len(buf) - tail
            if complete and (len(buf) >= piece_bytes
                             or time.monotonic() - since >= piece_seconds):
                piece = bytes(buf[:complete])
                del buf[:complete]
                since = time.monotonic()
                yield piece
                continue
            if nxt is None:
                nxt = asyncio.ensure_future(anext(it))
            deadlines = [since + piece_seconds] if complete else []
            if line_seconds is not None:
                deadlines.append(line_start + line_seconds)
            timeout = max(min(deadlines) - time.monotonic(), 0.0) if deadlines else None
            done, _ = await asyncio.wait({nxt}, timeout=timeout)
            if not done:
                if line_seconds is not None and \
                        time.monotonic() >= line_start + line_seconds:
                    if complete:
                        yield bytes(buf[:complete])  # lines that arrived whole are learned
                    raise LineTimeout
                continue  # time to hand on the complete lines
            try:
                chunk = nxt.result()
            except StopAsyncIteration:
                break
            finally:
                nxt = None
            if not chunk:
                continue
            newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
            if newlines.size:
                # the lengths of the lines this chunk ends; the first one began in buf
                lengths = np.diff(newlines, prepend=-1) - 1
                lengths[0] += tail
                over = np.flatnonzero(lengths > max_line)
                if over.size:
                    k = int(over[0])
                    good = bytes(buf[: len(buf) - tail]) if k == 0 \
                        else bytes(buf) + chunk[: int(newlines[k - 1]) + 1]
                    if good:
                        yield good  # the complete lines before the line too long are learned
                    raise LineTooLong(max_line)
                tail = len(chunk) - int(newlines[-1]) - 1
                line_start = time.monotonic()
            else:
                tail += len(chunk)
            buf += chunk
            if tail > max_line:
                complete = len(buf) - tail
                if complete:
                    yield bytes(buf[:complete])
                raise LineTooLong(max_line)
    finally:
        if nxt is not None:
            nxt.cancel()
    if buf.strip():
        yield bytes(buf)


@dataclass
class StreamSummary:
    accepted: int = 0
    rejected: int = 0
    lines: int = 0  # lines consumed so far (the line number base of the next piece)
    logloss_sum: float = 0.0
    errors: list[dict[str, Any]] = field(default_factory=list)
    model_version: int = 0

    def add_piece(self, piece: bytes, done: Learned) -> None:
        self.accepted += done.p.size
        self.rejected += len(done.errors)
        if done.p.size:
            q = np.clip(done.p, EPS, 1.0 - EPS)
            y = done.labels
            self.logloss_sum -= float(np.sum(y * np.log(q) + (1.0 - y) * np.log1p(-q)))
        for err in done.errors:
            if len(self.errors) >= MAX_REPORTED:
                break
            self.errors.append(line_error(self.lines + err.index + 1,
                                          _line(piece, err.index), err))
        self.lines += piece.count(b"\n") + (0 if piece.endswith(b"\n") else 1)
        self.model_version = done.version

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": self.rejected, "errors": self.errors,
                "logloss": self.logloss_sum / self.accepted if self.accepted else None,
                "model_version": self.model_version}


def _line(piece: bytes, index: int) -> bytes:
    start = 0
    for _ in range(index):
        start = piece.index(b"\n", start) + 1
    end = piece.find(b"\n", start)
    return piece[start: end if end >= 0 else len(piece)]


async def learn_stream(service: LearnerService, chunks: AsyncIterator[bytes],
                       max_line: int, line_seconds: float | None = None) -> dict[str, Any]:
    """Learn an NDJSON body; returns the summary the route sends.

    A stream always ends with its summary: a bad line is a rejected line, counted and
    reported; a failure that stops the stream (a line too long, a body that stops arriving,
    a store that goes away, anything unexpected) is a problem that carries the summary of
    what was learned before it, so a client never learns events twice by retrying blind."""
    summary = StreamSummary(model_version=service.version)
    try:
        async for piece in iter_pieces(chunks, max_line, line_seconds=line_seconds):
            summary.add_piece(piece, await service.learn_lines(piece))
    except LineTooLong as exc:
        raise Problem(413, "line-too-long",
                      f"line {summary.lines + 1} is longer than {exc.size} bytes (the limit "
                      f"of one line); the {summary.accepted} events before it were learned",
                      line=summary.lines + 1, **summary.as_dict()) from None
    except LineTimeout:
        raise Problem(408, "body-timeout",
                      f"line {summary.lines + 1} did not arrive within {line_seconds:g} s "
                      f"(--body-timeout: the longest one line of a stream may take); the "
                      f"{summary.accepted} events before it were learned",
                      headers={"Connection": "close"}, timeout=line_seconds,
                      line=summary.lines + 1, **summary.as_dict()) from None
    except (Problem, StoreError) as exc:
        problem = exc if isinstance(exc, Problem) else store_problem(exc)
        problem.detail = (f"{problem.detail or problem}; the stream stopped at line "
                          f"{summary.lines + 1}: the {summary.accepted} events before it "
                          "were learned")
        problem.extensions = {**problem.extensions, "line": summary.lines + 1,
                              **summary.as_dict()}
        raise problem from None
    except ClientDisconnect:
        raise
    except Exception:
        log.exception("a stream failed after %d events were learned", summary.accepted)
        raise Problem(500, "stream-failed",
                      f"the stream failed unexpectedly at line {summary.lines + 1}; the "
                      f"{summary.accepted} events before it were learned",
                      line=summary.lines + 1, **summary.as_dict()) from None
    return summary.as_dict()

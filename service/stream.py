"""NDJSON training streams: learned while the body arrives, in bounded memory.

The body is cut at newlines into pieces of complete lines (``PIECE_BYTES``, or whatever
arrived within ``PIECE_SECONDS`` so a slow producer's events are not held back); each piece
is parsed by the compiled line scanner and learned under the learn lock, so other requests
interleave between pieces. Bad lines are skipped and reported with their 1-based line
number. A single line longer than the body limit stops the stream with a 413 problem that
says how much was learned before it (nothing already accepted is lost).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ftrl_core.metrics import EPS

from .errors import Problem
from .events import line_detail
from .learner import LearnerService, LinesLearned

PIECE_BYTES = 256 << 10
PIECE_SECONDS = 0.05
MAX_REPORTED = 100


class LineTooLong(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"a line longer than {size} bytes")
        self.size = size


async def iter_pieces(chunks: AsyncIterator[bytes], max_line: int,
                      piece_bytes: int = PIECE_BYTES, piece_seconds: float = PIECE_SECONDS,
                      ) -> AsyncIterator[bytes]:
    """Pieces of complete lines of a byte stream (the last may lack its newline). Raises
    ``LineTooLong`` as soon as an unfinished line exceeds ``max_line`` bytes."""
    buf = bytearray()
    last_nl = -1  # offset in buf of its last newline
    since = time.monotonic()
    async for chunk in chunks:
        if not chunk:
            continue
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            last_nl = len(buf) + nl
        buf += chunk
        too_long = len(buf) - (last_nl + 1) > max_line
        if last_nl >= 0 and (too_long or len(buf) >= piece_bytes
                             or time.monotonic() - since >= piece_seconds):
            piece = bytes(buf[: last_nl + 1])
            del buf[: last_nl + 1]
            last_nl = -1
            since = time.monotonic()
            yield piece  # the complete lines before a line too long are learned
        if too_long:
            raise LineTooLong(max_line)
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

    def add_piece(self, piece: bytes, done: LinesLearned) -> None:
        self.accepted += done.p.size
        self.rejected += len(done.errors)
        if done.p.size:
            q = np.clip(done.p, EPS, 1.0 - EPS)
            y = done.labels
            self.logloss_sum -= float(np.sum(y * np.log(q) + (1.0 - y) * np.log1p(-q)))
        for err in done.errors:
            if len(self.errors) >= MAX_REPORTED:
                break
            self.errors.append({"line": self.lines + err.index + 1, "field": err.field,
                                "detail": line_detail(_line(piece, err.index), err)})
        self.lines += piece.count(b"\n") + (0 if piece.endswith(b"\n") else 1)
        self.model_version = done.model_version

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
                       max_line: int) -> dict[str, Any]:
    """Learn an NDJSON body; returns the summary the route sends."""
    summary = StreamSummary(model_version=service.version)
    try:
        async for piece in iter_pieces(chunks, max_line):
            summary.add_piece(piece, await service.learn_lines(piece))
    except LineTooLong as exc:
        raise Problem(413, "line-too-long",
                      f"line {summary.lines + 1} is longer than {exc.size} bytes (the limit "
                      f"of one line); the {summary.accepted} events before it were learned",
                      line=summary.lines + 1, **summary.as_dict()) from None
    return summary.as_dict()

"""Cut a byte stream into chunks of whole lines, exactly where ``base.Reader`` cuts it.

``Reader`` fills a buffer of ``chunk_bytes``, parses the complete lines in it and carries
the incomplete last line to the front of the next buffer (a buffer grows to twice a carry
that fills half of it, and never shrinks). ``LineChunks`` makes the same buffers and ends
each at its last newline, so a parallel reader parses the same lines into the same batches
as the sequential one: batch boundaries, and with them every float the learner and the
metrics sum, stay the same.

Buffers are ``bytearray``s (``rfind`` finds the last newline without copying) seen by the
kernels as writable uint8 arrays, the type they are compiled for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np


@dataclass
class Chunk:
    """``raw[:end]``: whole lines, except that the last chunk may end without a newline."""

    raw: bytearray
    end: int
    #: the last chunk of the stream
    final: bool

    @property
    def array(self) -> np.ndarray:
        return np.frombuffer(self.raw, dtype=np.uint8)


class LineChunks:
    """Successive ``Chunk``s of ``fh``; ``take(size)`` supplies an empty buffer of ``size``
    bytes (a recycled one or a new one). Not thread-safe: callers serialise ``next``."""

    def __init__(self, fh: BinaryIO, chunk_bytes: int,
                 take: Callable[[int], bytearray] | None = None) -> None:
        self.fh = fh
        self.size = int(chunk_bytes)
        self.take = take or bytearray
        self.carry = b""
        self.done = False

    def next(self) -> Chunk | None:
        """The next chunk, or None at the end of the stream."""
        while not self.done:
            raw = self.take(self.size)
            n = len(self.carry)
            raw[:n] = self.carry
            end, eof = self._fill(raw, n)
            if eof:
                self.done = True
                return Chunk(raw, end, True) if end else None
            cut = raw.rfind(b"\n", 0, end) + 1
            self.carry = bytes(raw[cut:end])
            if self.carry:  # Reader's rule: the next buffer holds at least twice the carry
                self.size = max(self.size, 2 * len(self.carry))
            if cut:
                return Chunk(raw, cut, False)
        return None

    def _fill(self, raw: bytearray, start: int) -> tuple[int, bool]:
        """Read into ``raw[start:]`` until it is full or the stream ends; (end, eof)."""
        view = memoryview(raw)[start:]
        got = 0
        while got < len(view):
            n = self.fh.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                return start + got, True
            got += n
        return start + got, False

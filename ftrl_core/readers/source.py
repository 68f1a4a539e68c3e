"""Byte sources: a file (plain or gzip, detected by its magic bytes) read in chunks.

Readers hand complete lines to compiled kernels; the tail of a chunk that holds an
incomplete line is carried to the front of the next one, so memory stays constant
whatever the file size.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"


class InputError(Exception):
    """A file that cannot be read at all (missing, empty, unknown format)."""


def open_binary(path: str | Path) -> BinaryIO:
    """Open ``path`` for reading bytes, decompressing gzip transparently; ``-`` is stdin."""
    if str(path) == "-":
        import sys

        return sys.stdin.buffer
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory")
    with open(p, "rb") as probe:
        magic = probe.read(2)
    if magic == GZIP_MAGIC:
        return CheckedGzipFile(p)  # type: ignore[return-value]
    return open(p, "rb")


class CheckedGzipFile(gzip.GzipFile):
    """A gzip file whose damage (truncated, corrupt) is an ``InputError`` naming it."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), "rb")
        self._path = path

    def _damaged(self, exc: Exception) -> InputError:
        return InputError(f"{self._path}: damaged gzip data ({exc})")

    def read(self, size: int | None = -1) -> bytes:
        try:
            return super().read(size)
        except (EOFError, OSError, zlib.error) as exc:
            raise self._damaged(exc) from None

    def read1(self, size: int = -1) -> bytes:
        try:
            return super().read1(size)
        except (EOFError, OSError, zlib.error) as exc:
            raise self._damaged(exc) from None

    def peek(self, n: int) -> bytes:
        try:
            return super().peek(n)
        except (EOFError, OSError, zlib.error) as exc:
            raise self._damaged(exc) from None

    def readline(self, size: int | None = -1) -> bytes:
        try:
            return super().readline(size)
        except (EOFError, OSError, zlib.error) as exc:
            raise self._damaged(exc) from None


def peek_lines(path: str | Path, n: int = 2, limit: int = 1 << 16) -> list[bytes]:
    """The first ``n`` lines of a file (decompressed), for format detection."""
    with open_binary(path) as fh:
        head = fh.read(limit)
    return head.splitlines()[:n]

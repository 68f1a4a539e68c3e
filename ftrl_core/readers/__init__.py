"""Readers for the formats CTR people have: Criteo TSV, Avazu CSV, VW text, JSON lines.

``open_reader(path, fmt)`` picks the format (``auto`` detects it from the name and the first
line) and returns a ``Reader`` that yields batches.
"""

from __future__ import annotations

from pathlib import Path

from ..fields import FieldRegistry
from .avazu import AvazuFormat
from .base import BadLine, BadLineError, FeatureOptions, Format, Reader
from .criteo import CriteoFormat
from .jsonl import JsonlFormat
from .source import InputError, peek_lines
from .vw import VWFormat

FORMATS: dict[str, type[Format]] = {
    "criteo": CriteoFormat,
    "avazu": AvazuFormat,
    "vw": VWFormat,
    "jsonl": JsonlFormat,
}

__all__ = ["FORMATS", "BadLine", "BadLineError", "FeatureOptions", "InputError", "Reader",
           "detect_format", "make_format", "open_reader"]


def detect_format(path: str | Path) -> str:
    """Guess the format of ``path`` from its extension, then from its first line."""
    name = str(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"),
                     (".vw", "vw"), (".csv", "avazu"), (".tsv", "criteo")):
        if name.endswith(ext) and fmt in FORMATS:
            return fmt
    lines = peek_lines(path, 1)
    if not lines or not lines[0].strip():
        raise InputError(f"{path}: empty input")
    first = lines[0].strip()
    if first.startswith(b"{") and "jsonl" in FORMATS:
        return "jsonl"
    if first.count(b"\t") in (38, 39):
        return "criteo"
    if b"," in first and b"click" in first.split(b",") and "avazu" in FORMATS:
        return "avazu"
    if b"|" in first and "vw" in FORMATS:
        return "vw"
    raise InputError(f"{path}: cannot tell the format from the first line; pass --format")


def make_format(fmt: str, registry: FieldRegistry, options: FeatureOptions) -> Format:
    try:
        cls = FORMATS[fmt]
    except KeyError:
        raise InputError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})") from None
    return cls(registry, options)


def open_reader(path: str | Path, fmt: str, registry: FieldRegistry, options: FeatureOptions,
                skip_bad_lines: bool = False, chunk_bytes: int | None = None,
                recycle: int = 0) -> Reader:
    """A reader of ``path`` in format ``fmt`` (``auto`` to detect it)."""
    if str(path) != "-":
        p = Path(path)
        if not p.exists():
            raise InputError(f"{path}: no such file")
        if p.is_file() and p.stat().st_size == 0:
            raise InputError(f"{path}: empty input")
    if fmt == "auto":
        if str(path) == "-":
            raise InputError("reading standard input needs --format")
        fmt = detect_format(path)
    kwargs = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
    return Reader(path, make_format(fmt, registry, options), skip_bad_lines=skip_bad_lines,
                  recycle=recycle, **kwargs)

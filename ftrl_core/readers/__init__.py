"""Readers for the formats CTR people have: Criteo TSV, Avazu CSV, VW text, JSON lines.

``open_reader(path, fmt)`` picks the format (``auto`` detects it from the name and the first
line) and returns a ``Reader`` that yields batches.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..fields import FieldRegistry
from .base import BadLine, BadLineError, FeatureOptions, Format, Reader
from .parallel import ParallelReader
from .source import InputError, peek_lines


class _Formats(Mapping[str, type[Format]]):
    """Format name -> class, each format's module imported when its class is first asked
    for: the JSON and VW readers cost a process that reads Criteo a tenth of its start-up."""

    def __init__(self, where: dict[str, str]) -> None:
        self._where = where
        self._classes: dict[str, type[Format]] = {}

    def __getitem__(self, name: str) -> type[Format]:
        cls = self._classes.get(name)
        if cls is None:
            module, _, attr = self._where[name].partition(":")
            cls = getattr(importlib.import_module(module, __name__), attr)
            self._classes[name] = cls
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


FORMATS: Mapping[str, type[Format]] = _Formats({
    "criteo": ".criteo:CriteoFormat",
    "avazu": ".avazu:AvazuFormat",
    "vw": ".vw:VWFormat",
    "jsonl": ".jsonl:JsonlFormat",
})

__all__ = ["FORMATS", "BadLine", "BadLineError", "FeatureOptions", "InputError",
           "ParallelReader", "Reader", "detect_format", "make_format", "open_reader"]


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
                recycle: int = 0, threads: int = 1) -> Reader:
    """A reader of ``path`` in format ``fmt`` (``auto`` to detect it). ``threads`` > 1:
    parse in that many threads if the format's fields are fixed (``ParallelReader``; with
    ``recycle``, its buffers are reused as ``Reader``'s are)."""
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
    form = make_format(fmt, registry, options)
    if threads > 1 and form.fixed_fields:
        return ParallelReader(path, form, skip_bad_lines=skip_bad_lines, threads=threads,
                              recycle=recycle > 0, **kwargs)
    return Reader(path, form, skip_bad_lines=skip_bad_lines, recycle=recycle, **kwargs)

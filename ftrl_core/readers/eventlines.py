"""Event bodies from line formats whose rows are (nearly) events already: JSON lines and VW.

- JSON lines: each line is an event; lines are joined into ``{"events": [...]}`` bodies
  byte for byte, never re-encoded. msgspec reads only the labels (for scoring) and checks
  that each line is one JSON object; a line that is not names its line number.
- VW text: ``label [importance] ['tag]|ns tok tok|ns2 tok ...``. Each namespace becomes a
  field whose value is the list of its tokens (``{"ns": ["tok", "tok"]}``), the importance
  becomes ``weight`` and the tag ``id``. A token with a value other than 1 (``tok:0.5``) has
  no event form (a list item is a token of value 1), so such a line is refused, naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np

from .base import BadLine, BadLineError
from .events import BODY_PREFIX, BODY_SUFFIX, EventBatch
from .source import open_binary

#: the field of VW features written before any namespace name (``| a b``)
VW_DEFAULT_NAMESPACE = " "


class _Labelled(msgspec.Struct):
    label: bool | float | None = None


_label_decoder = msgspec.json.Decoder(list[_Labelled])
_one_decoder = msgspec.json.Decoder(_Labelled)


def _label_value(v: bool | float | None) -> float:
    if v is None:
        return math.nan
    x = float(v)
    return 0.0 if x == -1.0 else x


class _LineEvents:
    """The shared loop: numbered, non-blank lines turned into events, grouped into bodies."""

    def __init__(self, path: str, batch_size: int = 1000, labels: bool = True,
                 skip_bad_lines: bool = False, limit: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.path, self.batch_size, self.labels = str(path), int(batch_size), labels
        self.skip_bad_lines, self.limit = skip_bad_lines, limit
        self.bad_lines: list[BadLine] = []
        self.bad_line_count = 0
        self.rows = 0

    def _bad(self, line: int, field: str, message: str, text: bytes) -> None:
        bad = BadLine(line, field, message, text[:80].decode("utf-8", "replace"))
        if not self.skip_bad_lines:
            raise BadLineError(self.path, bad)
        self.bad_line_count += 1
        if len(self.bad_lines) < 100:
            self.bad_lines.append(bad)

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        remaining = -1 if self.limit is None else self.limit
        with open_binary(self.path) as fh:
            for number, raw in enumerate(fh, 1):
                if remaining == 0:
                    return
                text = raw.rstrip(b"\r\n")
                if text.strip():
                    yield number, text
                    remaining -= 1

    def _body(self, events: list[bytes], labels: list[float], lines: list[int]) -> EventBatch:
        spans = np.empty((len(events), 2), dtype=np.int64)
        at = len(BODY_PREFIX)
        for i, ev in enumerate(events):
            spans[i] = (at, at + len(ev))
            at += len(ev) + 1
        self.rows += len(events)
        return EventBatch(BODY_PREFIX + b",".join(events) + BODY_SUFFIX,
                          np.asarray(labels, np.float64), np.asarray(lines, np.int64), spans)


class JsonLinesEventReader(_LineEvents):
    """Bodies of ``batch_size`` JSON-lines events, the lines' bytes unchanged."""

    def __iter__(self) -> Iterator[EventBatch]:
        events: list[bytes] = []
        lines: list[int] = []
        for number, text in self._lines():
            events.append(text)
            lines.append(number)
            if len(events) == self.batch_size:
                yield from self._flush(events, lines)
                events, lines = [], []
        if events:
            yield from self._flush(events, lines)

    def _flush(self, events: list[bytes], lines: list[int]) -> Iterator[EventBatch]:
        try:
            decoded = _label_decoder.decode(b"[" + b",".join(events) + b"]")
            if len(decoded) != len(events):  # a line holding two values, `{..},{..}`
                raise msgspec.ValidationError("more values than lines")
        except (msgspec.DecodeError, msgspec.ValidationError):
            yield from self._flush_checked(events, lines)
            return
        labels = [_label_value(d.label) for d in decoded]
        if self.labels:
            self._check_labels(events, labels, lines)
        if events:
            yield self._body(events, labels, lines)

    def _flush_checked(self, events: list[bytes], lines: list[int]) -> Iterator[EventBatch]:
        """The slow path of a body with a bad line: check lines one by one, in order."""
        keep_ev: list[bytes] = []
        keep_ln: list[int] = []
        keep_lb: list[float] = []
        for ev, ln in zip(events, lines, strict=True):
            try:
                y = _label_value(_one_decoder.decode(ev).label)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                what = "label" if "$.label" in str(exc) else ""
                self._bad(ln, what, f"not one JSON event object: {exc}", ev)
                continue
            if self.labels and math.isnan(y):
                self._bad(ln, "label", "label is missing (training needs one)", ev)
                continue
            keep_ev.append(ev)
            keep_ln.append(ln)
            keep_lb.append(y)
        if keep_ev:
            yield self._body(keep_ev, keep_lb, keep_ln)

    def _check_labels(self, events: list[bytes], labels: list[float], lines: list[int]) -> None:
        missing = [i for i, y in enumerate(labels) if math.isnan(y)]
        for i in missing:
            self._bad(lines[i], "label", "label is missing (training needs one)", events[i])
        for i in reversed(missing):
            del events[i], labels[i], lines[i]


class VWEventReader(_LineEvents):
    """Bodies of ``batch_size`` events from VW text (namespaces -> fields of tokens)."""

    def __iter__(self) -> Iterator[EventBatch]:
        events: list[bytes] = []
        labels: list[float] = []
        lines: list[int] = []
        for number, text in self._lines():
            try:
                event, label = vw_event(text.decode("utf-8"), self.labels)
            except UnicodeDecodeError:
                self._bad(number, "", "is not valid UTF-8 (JSON cannot carry it)", text)
                continue
            except _VWLineError as exc:
                self._bad(number, exc.field, str(exc), text)
                continue
            events.append(msgspec.json.encode(event))
            labels.append(label)
            lines.append(number)
            if len(events) == self.batch_size:
                yield self._body(events, labels, lines)
                events, labels, lines = [], [], []
        if events:
            yield self._body(events, labels, lines)


class _VWLineError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


_BLANKS = re.compile(r"[ \t]+")


def _number(text: str, what: str, field: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or "_" in text:
        raise _VWLineError(field, f"{what} {text!r} is not a finite number")
    return v


def vw_event(line: str, need_label: bool = True) -> tuple[dict[str, Any], float]:
    """One VW line as an event dict and its label (0/1, NaN if none), read as the ``vw``
    reader reads it (the tag is the last token before the bar when it starts with ``'`` or
    touches the bar; ``| x`` is the default namespace ``" "``; values of 0 add nothing)."""
    head, bar, rest = line.partition("|")
    if not bar:
        raise _VWLineError("", "no '|': a VW line needs at least one namespace")
    parts = [t for t in _BLANKS.split(head) if t]
    tag = None
    if parts and (parts[-1].startswith("'") or head[-1:] not in (" ", "\t")):
        tag = parts.pop().removeprefix("'")
    if len(parts) > 2:
        raise _VWLineError("label", f"a third number ({parts[2]!r}) cannot be sent as an event")
    event: dict[str, Any] = {}
    label = math.nan
    if parts:
        y = _number(parts[0], "label", "label")
        if y not in (-1.0, 0.0, 1.0):
            raise _VWLineError("label", f"label {parts[0]!r} is not 0/1 (or -1/1)")
        label = 1.0 if y == 1.0 else 0.0
        event["label"] = int(label)
    elif need_label:
        raise _VWLineError("label", "label is missing (training needs one)")
    if len(parts) == 2:
        w = _number(parts[1], "importance", "weight")
        if w < 0:
            raise _VWLineError("weight", f"importance {parts[1]!r} is negative")
        event["weight"] = w
    if tag:
        event["id"] = tag
    features: dict[str, list[str]] = {}
    for section in rest.split("|"):
        tokens = [t for t in _BLANKS.split(section) if t]
        name, scale = VW_DEFAULT_NAMESPACE, 1.0
        if section and section[0] not in (" ", "\t"):
            name, colon, text = tokens.pop(0).partition(":")
            if colon:
                scale = _number(text, "namespace scale", name)
            name = name or VW_DEFAULT_NAMESPACE
        bag = features.setdefault(name, [])  # registered even if empty, as the reader does
        for tok in tokens:
            text, colon, value = tok.partition(":")
            v = scale * (_number(value, f"the value of {text!r}", name) if colon else 1.0)
            if v == 0.0:
                continue
            if v != 1.0:
                raise _VWLineError(name, f"feature {tok!r} has value {v:g} in namespace "
                                   f"{name!r}; only tokens of value 1 can be sent as events")
            bag.append(text)
    event["features"] = features
    return event, label

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
from collections.abc import Iterator

import msgspec
import numpy as np

from .base import BadLine, BadLineError
from .events import BODY_PREFIX, BODY_SUFFIX, EventBatch
from .source import open_binary
from .vwevents import VWLineError, vw_event


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
        bad = BadLine(line, field, message, text[:80].decode("utf-8", "backslashreplace"))
        if not self.skip_bad_lines:
            raise BadLineError(self.path, bad)
        self.bad_line_count += 1
        if len(self.bad_lines) < 100:
            self.bad_lines.append(bad)

    #: which lines are skipped: blank ones (JSON lines) or empty ones only (VW, where a
    #: line of blanks is an example without features)
    skip_blank = True

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        remaining = -1 if self.limit is None else self.limit
        with open_binary(self.path) as fh:
            for number, raw in enumerate(fh, 1):
                if remaining == 0:
                    return
                text = raw.rstrip(b"\r\n")
                if text.strip() if self.skip_blank else text.removeprefix(b"\xef\xbb\xbf"):
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

    skip_blank = False

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
            except VWLineError as exc:
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

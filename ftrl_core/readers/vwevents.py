"""One VW text line as a JSON event, for ``ctr replay`` and ``ctr predict --url``: read by
the rules of the ``vw`` reader (see its docstring), so a file sent to a server is learned
with the keys ``ctr train`` gives it.

What an event cannot carry is refused, naming the field: a feature value other than 1 (an
event's tokens all have value 1), an anonymous feature (``:0.5``: its key is positional),
an initial prediction other than 0.
"""

from __future__ import annotations

import math
import re
from typing import Any

#: the field of VW features written before any namespace name (``| a b``)
VW_DEFAULT_NAMESPACE = " "
_BLANK = " \t"
_NON_FINITE = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)


class VWLineError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def _number(text: str, what: str, field: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or "_" in text or not text.strip() or text != text.strip():
        raise VWLineError(field, f"{what} {text!r} is not a finite number")
    return v


def _numeric(text: str) -> bool:
    """Whether a feature value is meant as a number (the ``vwparts.looks_numeric`` rule)."""
    return not text or text[0] in "0123456789+-." or bool(_NON_FINITE.fullmatch(text))


def _label_section(head: str, need_label: bool) -> tuple[dict[str, Any], float]:
    if "\t" in head:
        head = head[head.index("\t") + 1:]
    parts = [t for t in head.split(" ") if t]
    event: dict[str, Any] = {}
    if parts and (parts[-1].startswith("'") or not head.endswith(" ")):
        event["id"] = parts.pop().removeprefix("'")
        if not event["id"]:
            del event["id"]
    if len(parts) > 3:
        raise VWLineError("label", f"too many label tokens ({len(parts)}): {parts[3]!r}")
    label = math.nan
    if parts:
        y = _number(parts[0], "label", "label")
        if y not in (-1.0, 0.0, 1.0):
            raise VWLineError("label", f"label {parts[0]!r} is not 0/1 (or -1/1)")
        label = 1.0 if y == 1.0 else 0.0
        event["label"] = int(label)
    elif need_label:
        raise VWLineError("label", "label is missing (training needs one)")
    if len(parts) >= 2:
        w = _number(parts[1], "importance", "weight")
        if w < 0:
            raise VWLineError("weight", f"importance {parts[1]!r} is negative")
        event["weight"] = w
    if len(parts) == 3 and _number(parts[2], "initial prediction", "initial") != 0.0:
        raise VWLineError("initial", f"an initial prediction ({parts[2]!r}) cannot be sent "
                          "as an event")
    return event, label


def vw_event(line: str, need_label: bool = True) -> tuple[dict[str, Any], float]:
    """One VW line (not empty) as an event dict and its label (0/1, NaN if none)."""
    line = line.removeprefix("\ufeff")
    bar = line.find("|")
    event, label = _label_section(line if bar < 0 else line[:bar], need_label)
    features: dict[str, list[str]] = {}
    if bar < 0:  # no namespace: the default one, empty (registered, as the reader does)
        features[VW_DEFAULT_NAMESPACE] = []
    p, n = bar, len(line)
    while 0 <= p < n:  # at a bar
        p += 1
        q = p
        while q < n and line[q] not in " \t:|":
            q += 1
        name = line[p:q] or VW_DEFAULT_NAMESPACE
        scale = 1.0
        if q < n and line[q] == ":":
            r = q + 1
            while r < n and line[r] not in " \t|":
                r += 1
            scale = _number(line[q + 1:r], "namespace scale", name)
            q = r
        bag = features.setdefault(name, [])  # registered even if empty, as the reader does
        p = q
        while True:
            while p < n and line[p] in _BLANK:
                p += 1
            if p >= n or line[p] == "|":
                break
            a = p
            while p < n and line[p] not in " \t|":
                p += 1
            token = line[a:p]
            fname, colon, value = token.partition(":")
            if not colon or not value:
                v = scale if not colon else 1.0
                text = fname
            elif _numeric(value):
                v = scale * _number(value, f"the value of {fname!r}", name)
                text = fname
            else:  # a string value: it runs to the next blank, through bars
                while p < n and line[p] not in _BLANK:
                    p += 1
                v, text = 1.0, f"{fname}^{line[a + len(fname) + 1:p]}"
            if v == 0.0:
                continue
            if colon and not fname and not (value and not _numeric(value)):
                raise VWLineError(name, f"anonymous feature {token!r} in namespace {name!r} "
                                  "cannot be sent as an event (its key is its position)")
            if v != 1.0:
                raise VWLineError(name, f"feature {token!r} has value {v:g} in namespace "
                                  f"{name!r}; only tokens of value 1 can be sent as events")
            bag.append(text)
    event["features"] = features
    return event, label

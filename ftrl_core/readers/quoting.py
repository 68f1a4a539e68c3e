"""Quoting bad input in error messages: bounded, and printable whatever the bytes.

An error names the field and the value; both come from the caller's data, so they are cut
to a few dozen characters (a 1 MB field name must not make a 1 MB message) and control
characters or bytes that are not UTF-8 are escaped (binary garbage must not reach a
terminal raw).
"""

from __future__ import annotations

import re

import numpy as np

#: characters of a quoted value or name before it is cut
MAX_QUOTED = 60
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x07``)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def shorten(text: str, limit: int = MAX_QUOTED) -> str:
    """``text`` made printable and cut to about ``limit`` characters, saying so."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return printable(text)


def decode(raw: bytes) -> str:
    """Bytes as text: UTF-8, with what is not UTF-8 escaped (``\\xff``)."""
    return raw.decode("utf-8", "backslashreplace")


def quote_bytes(raw: bytes, limit: int = MAX_QUOTED) -> str:
    """``raw`` as printable text of about ``limit`` characters."""
    text = decode(raw[: 4 * limit + 4])
    if len(raw) > 4 * limit + 4:
        return printable(text[:limit]) + f"... ({len(raw)} bytes)"
    return shorten(text, limit)


_SCALAR_END = re.compile(rb"[,\]}\s]")


def value_text(buf: np.ndarray | bytes | bytearray, pos: int, limit: int = MAX_QUOTED
               ) -> str | None:
    """The JSON text of the value that starts at ``buf[pos]`` (a string to its closing
    quote, a scalar to its delimiter, a container cut short), quoted; None if ``pos < 0``."""
    size = buf.size if isinstance(buf, np.ndarray) else len(buf)
    if pos < 0 or pos >= size:
        return None
    window = 4 * limit + 8
    raw = buf[pos:pos + window]
    raw = raw.tobytes() if isinstance(raw, np.ndarray) else bytes(raw)
    if raw[:1] in (b'"', b"{", b"["):
        raw = raw[:_json_end(raw)]
    else:
        m = _SCALAR_END.search(raw)
        if m is not None:
            raw = raw[:m.start()]
    text = decode(raw)
    if len(text) > limit:
        return printable(text[:limit]) + "..."
    return printable(text)


def _json_end(raw: bytes) -> int:
    """The end of the string or container that starts ``raw`` (string-aware bracket
    matching), or ``len(raw)`` if it does not end within it."""
    depth = 0
    in_string = False
    i = 0
    while i < len(raw):
        c = raw[i]
        if in_string:
            if c == 92:
                i += 1
            elif c == 34:
                in_string = False
                if depth == 0:
                    return i + 1
        elif c == 34:
            in_string = True
        elif c in (91, 123):
            depth += 1
        elif c in (93, 125):
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(raw)

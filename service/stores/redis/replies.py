"""RESP replies read by hand: a compaction's thousands of pipelined replies taken off the
socket as bytes and walked by compiled code.

Through redis-py each reply cost its Python frames and each value a bytes object: reading
the HMGETs of 200k coordinates (4,000 replies) took 40-55 ms of CPU and joining the values
15-30 ms more, about half of a compaction's time in a worker. Here ``scan`` finds where each
complete reply starts (and counts its error items), and ``fixed_values`` copies the values of
HMGET replies into one array. Both read RESP2 and RESP3 (redis-py speaks RESP3 from 8.0 on).
"""

from __future__ import annotations

import numpy as np

from ftrl_core._jit import inline_kernel, kernel

_CR, _LF = 13, 10
_BULK, _VERBATIM, _BLOB_ERROR = 36, 61, 33  # '$' '=' '!': a length, then that many bytes
_ARRAY, _SET, _PUSH = 42, 126, 62  # '*' '~' '>': a count of items
_MAP, _ATTRIBUTE = 37, 124  # '%' '|': a count of pairs
_ERROR, _NULL = 45, 95  # '-' '_'


@inline_kernel
def _line_end(buf: np.ndarray, p: int, end: int) -> int:
    """The index of the CR of the first CRLF at or after ``p`` (-1: not received yet)."""
    while p + 1 < end:
        if buf[p] == _CR and buf[p + 1] == _LF:
            return p
        p += 1
    return -1


@inline_kernel
def _number(buf: np.ndarray, p: int, stop: int) -> int:
    """The signed decimal in ``buf[p:stop]``."""
    neg = buf[p] == _ERROR  # '-': the same byte as an error's marker
    if neg:
        p += 1
    v = 0
    while p < stop:
        v = v * 10 + (int(buf[p]) - 48)
        p += 1
    return -v if neg else v


@kernel
def scan(buf: np.ndarray, pos: int, end: int, want: int, starts: np.ndarray,
         errors: np.ndarray, done: int) -> tuple[int, int]:
    """Walk the complete replies in ``buf[pos:end]``, up to ``want - done`` of them: each
    one's offset goes to ``starts[done]``, its error items (at any depth) to
    ``errors[done]``. Returns (the offset after the last complete reply, ``done`` counting
    them): a reply cut short is walked again, whole, once more bytes came."""
    while done < want:
        p = pos
        items = 1
        errs = 0
        complete = True
        while items > 0:
            if p >= end:
                complete = False
                break
            kind = buf[p]
            e = _line_end(buf, p + 1, end)
            if e < 0:
                complete = False
                break
            items -= 1
            if kind in (_BULK, _VERBATIM, _BLOB_ERROR):
                length = _number(buf, p + 1, e)
                p = e + 2
                if length >= 0:
                    if p + length + 2 > end:
                        complete = False
                        break
                    p += length + 2
                if kind == _BLOB_ERROR:
                    errs += 1
            elif kind in (_ARRAY, _SET, _PUSH):
                count = _number(buf, p + 1, e)
                if count > 0:
                    items += count
                p = e + 2
            elif kind in (_MAP, _ATTRIBUTE):
                count = _number(buf, p + 1, e)
                if count > 0:
                    items += 2 * count
                if kind == _ATTRIBUTE:  # the reply it annotates follows
                    items += 1
                p = e + 2
            else:  # one line: simple string, error, integer, null, double, boolean...
                if kind == _ERROR:
                    errs += 1
                p = e + 2
        if not complete:
            break
        starts[done] = pos
        errors[done] = errs
        done += 1
        pos = p
    return pos, done


@kernel
def fixed_values(buf: np.ndarray, starts: np.ndarray, width: int, out: np.ndarray) -> int:
    """Copy the items of the array replies at ``starts`` (HMGET's: each a bulk string of
    ``width`` bytes, or null, which gives zeros) into ``out``, one row of ``width`` bytes
    each, in order. Returns the rows written, or ``-1 - r`` at the first reply ``r`` that
    is not such an array (an error, a value of another width) or that overflows ``out``."""
    row = 0
    rows = out.size // width
    for r in range(starts.size):
        p = starts[r]
        if buf[p] != _ARRAY:
            return -1 - r
        e = _line_end(buf, p + 1, buf.size)
        count = _number(buf, p + 1, e)
        p = e + 2
        if row + max(count, 0) > rows:
            return -1 - r
        for _ in range(count):
            kind = buf[p]
            e = _line_end(buf, p + 1, buf.size)
            length = _number(buf, p + 1, e) if kind == _BULK else -1
            if kind == _NULL or (kind == _BULK and length < 0):
                for k in range(width):
                    out[row * width + k] = 0
                p = e + 2
            elif kind == _BULK and length == width:
                for k in range(width):
                    out[row * width + k] = buf[e + 2 + k]
                p = e + 2 + width + 2
            else:
                return -1 - r
            row += 1
    return row


def first_error(buf: np.ndarray, start: int, stop: int) -> str:
    """The text of the first error item of the reply in ``buf[start:stop]``."""
    data = buf[start:stop].tobytes()
    at = 0 if data[:1] == b"-" else data.find(b"\r\n-") + 2
    if at < 2 and data[:1] != b"-":
        return "an error reply"
    return data[at + 1:data.find(b"\r\n", at)].decode("utf-8", "replace")

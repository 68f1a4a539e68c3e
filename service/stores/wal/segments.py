"""The log's files: segments of framed records, and how they are read back after a crash.

A segment is ``<first seq, 20 digits>.log``: an 8-byte magic, then records framed as

    u32 payload length | u32 CRC-32 of (seq, kind, payload) | u64 seq | u8 kind | payload

little-endian. Records are appended with one ``writev`` each and never rewritten, so the
only damage a killed process or a power cut can leave is at the end of the last segment: a
frame cut short or whose CRC fails (the kernel wrote some of its pages). Reading stops
there and the tail is cut off (``scan``), as PostgreSQL and Kafka do with a torn WAL tail;
a bad frame anywhere else is corruption, and start-up refuses to guess.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreConfigError

MAGIC = b"CTRWAL1\n"
HEADER = struct.Struct("<IIQB")
#: a frame longer than this is corruption, not a record (bodies are capped far below)
MAX_PAYLOAD = 1 << 30


@dataclass(frozen=True)
class Record:
    seq: int
    kind: int
    payload: memoryview


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.log"


def segments(directory: Path) -> list[tuple[int, Path]]:
    """(first seq, path) of the segments in ``directory``, in order."""
    out = []
    for p in directory.glob("*.log"):
        if p.stem.isdigit() and len(p.stem) == 20:
            out.append((int(p.stem), p))
    return sorted(out)


def frame(seq: int, kind: int, payload: bytes | bytearray | memoryview) -> bytes:
    """The header of a record (its payload follows it in the file)."""
    crc = zlib.crc32(payload, zlib.crc32(struct.pack("<QB", seq, kind)))
    return HEADER.pack(len(payload), crc, seq, kind)


def _parse(data: bytes, path: Path, last: bool) -> tuple[list[Record], int]:
    """The records of one segment's bytes and the length of its valid prefix."""
    if not data.startswith(MAGIC):
        if last and len(data) < len(MAGIC) and MAGIC.startswith(data):
            return [], 0  # created, killed before its magic was written whole
        raise StoreConfigError(f"{path}: not a write-ahead log segment of this version")
    records: list[Record] = []
    view = memoryview(data)
    pos = len(MAGIC)
    end = len(data)
    while pos < end:
        bad = None
        if end - pos < HEADER.size:
            bad = "a record header cut short"
        else:
            length, crc, seq, kind = HEADER.unpack_from(data, pos)
            stop = pos + HEADER.size + length
            if length > MAX_PAYLOAD or stop > end:
                bad = "a record cut short"
            else:
                payload = view[pos + HEADER.size:stop]
                if zlib.crc32(payload, zlib.crc32(struct.pack("<QB", seq, kind))) != crc:
                    bad = "a record whose checksum fails"
                elif records and seq != records[-1].seq + 1:
                    bad = f"record {seq} after record {records[-1].seq}"
        if bad is not None:
            if not last:
                raise StoreConfigError(f"{path}: {bad} at byte {pos}, in a segment that is "
                                       "not the last: the log is corrupt")
            return records, pos
        records.append(Record(seq, kind, payload))
        pos = stop
    return records, pos


@dataclass
class Scan:
    """What ``scan`` found: every valid record after ``after``, the last seq in the log,
    and the segments (first seq, path) that remain."""

    records: list[Record]
    last_seq: int
    segments: list[tuple[int, Path]]
    torn_bytes: int = 0


def scan(directory: Path, after: int) -> Scan:
    """Read the log back: records with seq > ``after``, in order. A torn tail of the last
    segment is cut off the file (what a killed process or a power cut left half written)."""
    found = segments(directory)
    records: list[Record] = []
    last_seq = after
    torn = 0
    for i, (first, path) in enumerate(found):
        is_last = i == len(found) - 1
        nxt = found[i + 1][0] if not is_last else None
        if nxt is not None and nxt - 1 <= after:
            continue  # every record of it is older than the snapshot
        data = path.read_bytes()
        recs, valid = _parse(data, path, is_last)
        if recs and recs[0].seq != first:
            raise StoreConfigError(f"{path}: starts at record {recs[0].seq}, named {first}")
        if valid < len(data):
            torn = len(data) - valid
            with open(path, "r+b") as fh:
                fh.truncate(valid)
                os.fsync(fh.fileno())
        for r in recs:
            if r.seq > after:
                if records and r.seq != records[-1].seq + 1:
                    raise StoreConfigError(f"{path}: record {r.seq} follows record "
                                           f"{records[-1].seq}: a segment is missing")
                if not records and r.seq != after + 1:
                    raise StoreConfigError(
                        f"{path}: the log resumes at record {r.seq}, but the snapshot ends "
                        f"at record {after}: records {after + 1}..{r.seq - 1} are missing")
                records.append(r)
            last_seq = max(last_seq, r.seq)
        if not recs and nxt is None:
            last_seq = max(last_seq, first - 1)
    return Scan(records, last_seq, found, torn)


def iter_payloads(records: list[Record], kind: int) -> Iterator[tuple[int, memoryview]]:
    for r in records:
        if r.kind == kind:
            yield r.seq, r.payload


def fsync_dir(directory: Path) -> None:
    """Make a created, renamed or deleted entry of ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

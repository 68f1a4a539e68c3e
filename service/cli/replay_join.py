"""``ctr replay`` of a mixed stream of impressions and clicks (``gen_events.py``'s JSONL:
``{"type": "impression", "id", "ts", "features"}`` / ``{"type": "click", "id", "ts"}``):
impressions go to ``/v1/impressions``, clicks to ``/v1/feedback``, in file order.

File order matters (a click must reach the server after its impression, and event time
closes windows as it advances): each run of consecutive lines of one type, up to
``--batch-size``, is one request, and all go over one connection. With ``--concurrency``
above 1 (the default 4) that many are pipelined on it (``cli.pipeline``: the server answers
them in order, one at a time), and an error answer ends the replay; with 1, one request at
a time through the client, retried as it retries. The impression-time predictions are
scored against the file's final labels (an impression is a positive when a click for it
appears anywhere in the file).
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from collections.abc import Iterator
from typing import IO, Any, cast

import msgspec
import numpy as np

from ftrl_core.metrics import ProgressiveMetrics

TYPES = (b"impression", b"click")


class _Typed(msgspec.Struct):
    type: str | None = None
    id: Any = None


def _open(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    if path.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def is_mixed(path: str) -> bool:
    """Whether the file's first event has a ``type`` of impression or click."""
    if path == "-":
        return False  # stdin cannot be peeked and read again: --format decides
    with _open(path) as fh:
        for line in fh:
            if line.strip():
                try:
                    first = msgspec.json.decode(line, type=_Typed)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    return False
                return first.type in ("impression", "click")
    return False


def _requests(path: str, batch: int, limit: int | None
              ) -> Iterator[tuple[bool, list[bytes], list[str]]]:
    """(impressions?, lines, their ids) runs of one type, in file order."""
    run: list[bytes] = []
    ids: list[str] = []
    kind: bool | None = None
    sent = 0
    with _open(path) as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line:
                continue
            try:
                ev = msgspec.json.decode(line, type=_Typed)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ValueError(f"{path} line {number}: {exc}") from None
            if ev.type not in ("impression", "click"):
                raise ValueError(f"{path} line {number}: type must be impression or click, "
                                 f"got {ev.type!r}")
            imp = ev.type == "impression"
            if imp != kind or len(run) >= batch:
                if run:
                    yield bool(kind), run, ids
                run, ids, kind = [], [], imp
            run.append(line)
            ids.append(str(ev.id))
            sent += 1
            if limit is not None and sent >= limit:
                break
    if run:
        yield bool(kind), run, ids


class _Scored(msgspec.Struct):
    p: list[float | None]  # null: NaN
    model_version: int


class _Fed(msgspec.Struct):
    model_version: int
    joined: int = 0
    late: int = 0
    unknown: int = 0


Request = tuple[str, bytes, tuple[bool, list[str]]]


def _bodies(args: argparse.Namespace) -> Iterator[Request]:
    """(path, body, (impressions?, ids)) of each request, in file order."""
    for imp, lines, ids in _requests(str(args.data), args.batch_size, args.limit):
        body = b'{"events":[' + b",".join(lines) + b"]}"
        yield ("/v1/impressions" if imp else "/v1/feedback"), body, (imp, ids)


def _answers(args: argparse.Namespace) -> Iterator[tuple[tuple[bool, list[str]], bytes]]:
    """Each request's tag and answer body, in file order."""
    from .pipeline import Pipeline, supported

    if args.concurrency > 1 and supported(args.url):
        yield from Pipeline[tuple[bool, list[str]]](
            args.url, args.api_key, args.concurrency, args.timeout).run(_bodies(args))
        return
    from clients import CTRClient

    with CTRClient(args.url, api_key=args.api_key, timeout=args.timeout) as client:
        for _path, body, tag in _bodies(args):
            if tag[0]:
                result = client.impressions(body)
                yield tag, msgspec.json.encode({"p": result.p,
                                                "model_version": result.model_version})
            else:
                yield tag, msgspec.json.encode(client.feedback(body))


def replay_mixed(args: argparse.Namespace) -> dict[str, Any]:
    counts = {"impressions": 0, "clicks": 0, "joined": 0, "late": 0, "unknown": 0}
    scored: list[tuple[list[str], np.ndarray]] = []
    clicked: set[str] = set()
    version = 0
    batches = 0
    scored_decoder = msgspec.json.Decoder(_Scored)
    fed_decoder = msgspec.json.Decoder(_Fed)
    start = time.perf_counter()
    for (imp, ids), content in _answers(args):
        if imp:
            result = scored_decoder.decode(content)
            if len(result.p) != len(ids):
                raise ValueError(f"{args.url} answered {len(result.p)} predictions for "
                                 f"{len(ids)} impressions")
            scored.append((ids, np.asarray(result.p, dtype=np.float64)))
            counts["impressions"] += len(ids)
            version = max(version, result.model_version)
        else:
            fed = fed_decoder.decode(content)
            clicked.update(ids)
            counts["clicks"] += len(ids)
            counts["joined"] += fed.joined
            counts["late"] += fed.late
            counts["unknown"] += fed.unknown
            version = max(version, fed.model_version)
        batches += 1
    seconds = time.perf_counter() - start
    events = counts["impressions"] + counts["clicks"]
    if events == 0:
        raise ValueError(f"{args.data}: no events to send")
    metrics = ProgressiveMetrics()
    for ids, p in scored:
        metrics.update(p, np.array([1.0 if i in clicked else 0.0 for i in ids]))
    return {**metrics.as_dict(), **counts, "seconds": seconds,
            "events_per_second": events / seconds if seconds > 0 else 0.0,
            "batches": batches, "model_version": version, "batch_size": args.batch_size,
            "concurrency": args.concurrency, "mixed": True}

"""Replay a file against a running server: post it to /v1/train in batches, in file order,
and score the predictions it returns (each made before the server learned that event).

Examples:
  ctr replay syn1m.tsv --url http://127.0.0.1:8000 --metrics-json m.json
  ctr replay events.jsonl --url http://127.0.0.1:8000 --concurrency 1   # exact file order

A mixed stream of impressions and clicks (``"type": "impression" | "click"``, as
the bench kit's ``gen_events.py`` writes) goes to /v1/impressions and /v1/feedback in
file order, one request at a time (``replay_join``).

With ``--concurrency 1`` the server learns the rows in exactly file order, so the progressive
logloss equals that of ``ctr train`` on the same file and learner flags. With more requests
in flight, batches may be learned a little out of order (the metrics are still computed in
file order from the returned predictions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ftrl_core.metrics import ProgressiveMetrics
from ftrl_core.readers.eventsource import EVENT_FORMATS, open_event_reader, warm_up


def add_connection_arguments(p: argparse.ArgumentParser, url_required: bool = True) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--url", required=url_required, help="the server, e.g. http://127.0.0.1:8000")
    g.add_argument("--api-key", default=os.environ.get("CTR_API_KEY"),
                   help="bearer key (default: $CTR_API_KEY)")
    g.add_argument("--batch-size", type=int, default=1000, help="events per request")
    g.add_argument("--concurrency", type=int, default=4,
                   help="requests in flight, one connection each (1: exact file order); "
                   "a stream of impressions and clicks pipelines them on one connection, "
                   "in file order")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per request")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="input file (.gz works; - for stdin with --format)")
    p.add_argument("--format", choices=["auto", *EVENT_FORMATS], default="auto")
    add_connection_arguments(p)
    p.add_argument("--limit", type=int, default=None, help="send only the first N rows")
    p.add_argument("--metrics-json", type=Path, help="write rows, logloss, auc, seconds, "
                   "events_per_second as JSON")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip malformed lines (and events the server rejects) and report them")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")


class EventProgress:
    """rows, events/s and the running logloss on one stderr line."""

    def __init__(self, stream: TextIO | None = None, every: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every if self.tty else 10 * every
        self.start = self.last = time.perf_counter()
        self.pending = False

    def update(self, rows: int, logloss: float) -> None:
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last = now
        rate = rows / max(now - self.start, 1e-9)
        end = "\r" if self.tty else "\n"
        self.stream.write(f"rows {rows:,}  {rate:,.0f} events/s  logloss {logloss:.6f}{end}")
        self.stream.flush()
        self.pending = self.tty

    def finish(self) -> None:
        """End a line left open by ``\\r`` (the summary follows on its own line)."""
        if self.pending:
            self.stream.write("\n")
            self.pending = False


def check_sizes(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be >= 1, got {args.concurrency}")
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")


def replay(args: argparse.Namespace) -> dict[str, Any]:
    from .sender import Sender  # httpx costs 0.2 s to import: only for commands that talk

    check_sizes(args)
    reader = open_event_reader(str(args.data), args.format, args.batch_size, labels=True,
                               skip_bad_lines=args.skip_bad_lines, limit=args.limit)
    sender = Sender(args.url, "train", api_key=args.api_key, concurrency=args.concurrency,
                    timeout=args.timeout, skip_bad_lines=args.skip_bad_lines,
                    source=str(args.data))
    warm_up()  # compiled code loads before the clock starts
    ProgressiveMetrics().update(np.zeros(1), np.zeros(1))
    metrics = ProgressiveMetrics()
    progress = None if args.quiet else EventProgress()
    rejected = []
    batches = 0
    version = 0
    start = time.perf_counter()
    for answer in sender.run(reader):
        p = np.asarray(answer.result.p, dtype=np.float64)
        if p.size != answer.batch.rows:
            raise ValueError(f"{args.url} answered {p.size} predictions for "
                             f"{answer.batch.rows} events")
        if p.size:
            metrics.update(p, answer.batch.labels)
        rejected.extend(answer.dropped)
        batches += 1
        version = max(version, answer.result.model_version)
        if progress is not None:
            progress.update(metrics.rows, metrics.logloss)
    seconds = time.perf_counter() - start
    if metrics.rows == 0:
        raise ValueError(f"{args.data}: no rows to send")
    if progress is not None:
        progress.finish()
    bad = reader.bad_line_count + len(rejected)
    if bad:
        first = (reader.bad_lines + rejected)[:3]
        print(f"ctr replay: skipped {bad} bad line(s); first: "
              + "; ".join(f"line {b.line}: {b.field} {b.message}" for b in first),
              file=sys.stderr)
    return {**metrics.as_dict(), "seconds": seconds,
            "events_per_second": metrics.rows / seconds if seconds > 0 else 0.0,
            "batches": batches, "bad_lines": bad, "model_version": version,
            "concurrency": args.concurrency, "batch_size": args.batch_size}


def run(args: argparse.Namespace) -> int:
    from clients import CTRError

    from . import CommandError
    from .replay_join import is_mixed, replay_mixed

    try:
        mixed = args.format in ("auto", "jsonl") and is_mixed(str(args.data))
        m = replay_mixed(args) if mixed else replay(args)
    except CTRError as exc:
        raise CommandError(f"{args.url}: {exc}") from exc
    if args.metrics_json is not None:
        args.metrics_json.write_text(json.dumps(m, indent=1))
    if mixed:
        if not args.quiet:
            print(f"impressions {m['impressions']:,}  clicks {m['clicks']:,} (joined "
                  f"{m['joined']:,}, late {m['late']:,}, unknown {m['unknown']:,})  logloss "
                  f"at impression time {m['logloss']:.6f}  {m['events_per_second']:,.0f} "
                  f"events/s  ({m['seconds']:.2f} s, model_version {m['model_version']})",
                  file=sys.stderr)
        return 0
    if not args.quiet:
        print(f"rows {m['rows']:,}  logloss {m['logloss']:.6f}  auc {m['auc']:.5f}  "
              f"{m['events_per_second']:,.0f} events/s  ({m['seconds']:.2f} s, "
              f"model_version {m['model_version']})", file=sys.stderr)
    return 0

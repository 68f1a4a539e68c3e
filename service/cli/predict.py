"""Predict a file: one probability per input row on stdout, in order; either with a saved
model (``--model``) or by a running server (``--url``, batches posted to /v1/predict).

Examples:
  ctr predict --model m.ctr test.tsv > p.txt
  ctr predict --url http://127.0.0.1:8000 test.tsv > p.txt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from ftrl_core.model import Model
from ftrl_core.readers import open_reader
from ftrl_core.trainer import RECYCLE, run_model, write_probabilities


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="input file (.gz works; - for stdin)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path, help="model file")
    which.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    p.add_argument("--format", choices=["auto", "criteo", "avazu", "vw", "jsonl"],
                   default="auto", help="default: the model's format, else detected")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip malformed lines (no output line for them)")
    g = p.add_argument_group("with --url")
    g.add_argument("--api-key", default=os.environ.get("CTR_API_KEY"),
                   help="bearer key (default: $CTR_API_KEY)")
    g.add_argument("--batch-size", type=int, default=1000, help="events per request")
    g.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per request")


def run(args: argparse.Namespace) -> int:
    if args.url is not None:
        return run_url(args)
    model = Model.load(args.model)
    fmt = args.format
    if fmt == "auto":
        fmt = model.data_format or "auto"
    reader = open_reader(args.data, fmt, model.registry, model.options,
                         skip_bad_lines=args.skip_bad_lines, recycle=RECYCLE)
    out = sys.stdout
    run_model(model, reader, learn=False, predictions=out)
    out.flush()
    if reader.bad_line_count:
        print(f"ctr predict: skipped {reader.bad_line_count} bad line(s)", file=sys.stderr)
    return 0


def run_url(args: argparse.Namespace) -> int:
    """The same output from a server: rows posted in batches, answers printed in order."""
    from clients import CTRError
    from ftrl_core.readers.eventsource import open_event_reader

    from . import CommandError
    from .replay import check_sizes
    from .sender import Sender

    check_sizes(args)
    reader = open_event_reader(str(args.data), args.format, args.batch_size, labels=False,
                               skip_bad_lines=args.skip_bad_lines)
    sender = Sender(args.url, "predict", api_key=args.api_key, concurrency=args.concurrency,
                    timeout=args.timeout, skip_bad_lines=args.skip_bad_lines,
                    source=str(args.data))
    out = sys.stdout
    skipped = 0
    try:
        for answer in sender.run(reader):
            write_probabilities(out, np.asarray(answer.result.p, dtype=np.float64))
            skipped += len(answer.dropped)
    except CTRError as exc:
        raise CommandError(f"{args.url}: {exc}") from exc
    out.flush()
    skipped += reader.bad_line_count
    if skipped:
        print(f"ctr predict: skipped {skipped} bad line(s)", file=sys.stderr)
    return 0

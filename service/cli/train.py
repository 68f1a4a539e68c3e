"""Train a model over a file with progressive validation (predict each row, then learn it).

Examples:
  ctr train syn1m.tsv --alpha 0.2 --metrics-json m.json --model-out m.ctr
  ctr train more.tsv --model-in m.ctr --model-out m2.ctr   # resume exactly
  ctr train syn1m.tsv --state redis://127.0.0.1:7001,redis://127.0.0.1:7002

With ``--state redis://...`` the model's state lives in Redis shards (under
``--model-name``): the process learns on its local copy and flushes additive deltas after
every batch (or every ``--sync-every-events`` rows); one process gives the predictions of
``--state memory://`` (exactly in the exact-key layout; to about 1e-10 in hashed mode, whose
fixed-point state has a 2^-32 resolution). ``--model-out`` then writes a snapshot of the
shared state.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
from pathlib import Path
from typing import Any

from ftrl_core.model import Model
from ftrl_core.readers import InputError, open_reader
from ftrl_core.readers import detect_format as _detect
from ftrl_core.stores import StateStoreError, open_state, seed, snapshot
from ftrl_core.trainer import RECYCLE, Progress, run_model

from .learner_args import (
    add_learner_arguments,
    add_state_arguments,
    build_model,
    explicit_learner_flags,
)

FORMATS = ["auto", "criteo", "avazu", "vw", "jsonl"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="input file (.gz works; - for stdin with --format)")
    p.add_argument("--format", choices=FORMATS, default="auto")
    add_learner_arguments(p)
    add_state_arguments(p)
    io = p.add_argument_group("input and output")
    io.add_argument("--model-in", type=Path, help="resume from this model file")
    io.add_argument("--model-out", type=Path, help="write the model here")
    io.add_argument("--predictions-out", type=Path,
                    help="one probability per row, each made before the row was learned")
    io.add_argument("--metrics-json", type=Path, help="write the run's metrics as JSON")
    io.add_argument("--skip-bad-lines", action="store_true",
                    help="count, report and skip malformed lines instead of stopping")
    io.add_argument("--quiet", action="store_true", help="no progress line on stderr")


def resolve_format(args: argparse.Namespace, model: Model | None) -> str:
    if args.format != "auto":
        return str(args.format)
    if model is not None and model.data_format and str(args.data) == "-":
        return model.data_format
    return _detect(args.data) if str(args.data) != "-" else "auto"


def load_or_build(args: argparse.Namespace) -> tuple[Model, str]:
    if args.model_in is not None:
        given = explicit_learner_flags(args)
        if given:
            raise ValueError(f"{', '.join(given)}: the learner and features come from "
                             f"--model-in {args.model_in}; drop these flags")
        model = Model.load(args.model_in)
        return model, resolve_format(args, model)
    fmt = resolve_format(args, None)
    if fmt == "auto":
        raise InputError("reading standard input needs --format")
    return build_model(args, fmt), fmt


def report(model: Model, result: Any, reader: Any) -> dict[str, Any]:
    sp = model.sparsity()
    mem = model.memory()
    m = model.metrics.as_dict()
    return {
        **m,
        "rows": result.rows,
        "nnz": sp.nnz,
        "l1_norm": sp.l1_norm,
        "coordinates": sp.coordinates,
        "seconds": result.seconds,
        "rows_per_second": result.rows_per_second,
        "feature_updates": result.features,
        "feature_updates_per_second": result.features / result.seconds if result.seconds else 0,
        "bad_lines": reader.bad_line_count,
        "bytes_per_coordinate": mem["bytes_per_coordinate"],
        "table_bytes": mem["table_bytes"],
        "names_bytes": mem["names_bytes"],
        "optimizer": model.optimizer.config(),
        "fields": {k: v for k, v in sp.fields.items()},
    }


def run_cmd(args: argparse.Namespace) -> int:
    try:
        return _train(args)
    except StateStoreError as exc:  # refused identity, unreachable shard: one line, status 2
        raise ValueError(str(exc)) from None


def _train(args: argparse.Namespace) -> int:
    model, fmt = load_or_build(args)
    reader = open_reader(args.data, fmt, model.registry, model.options,
                         skip_bad_lines=args.skip_bad_lines, recycle=RECYCLE)
    progress = None if args.quiet else Progress()
    with contextlib.ExitStack() as stack:
        store = open_state(args.state, args.model_name,
                           sync_every_events=args.sync_every_events, buckets=args.buckets)
        before = after = None
        if store is not None:
            stack.callback(store.close)
            if args.model_in is not None and store.stored_config() is None:
                seed(store, model)
            store.attach(model)
            before = functools.partial(store.before_learn, model)

            def after(batch: Any, p: Any) -> None:
                store.after_learn(model, batch)
        preds = None
        if args.predictions_out is not None:
            preds = stack.enter_context(open(args.predictions_out, "w", buffering=1 << 20))
        result = run_model(model, reader, learn=True, predictions=preds, progress=progress,
                           before_batch=before, on_batch=after)
        if store is not None:
            store.sync(model)
        if result.rows == 0:
            raise InputError(f"{args.data}: no rows to learn")
        if args.model_out is not None:
            (model if store is None else snapshot(store)).save(args.model_out)
    metrics = report(model, result, reader)
    if reader.bad_line_count:
        print(f"ctr train: skipped {reader.bad_line_count} bad line(s); first: "
              + "; ".join(f"line {b.line}: {b.field} {b.message}" for b in reader.bad_lines[:3]),
              file=sys.stderr)
    if args.metrics_json is not None:
        args.metrics_json.write_text(json.dumps(metrics, indent=1))
    if not args.quiet:
        print(f"rows {metrics['rows']:,}  logloss {metrics['logloss']:.6f}  auc "
              f"{metrics['auc']:.5f}  calibration {metrics['calibration']:.4f}  nnz "
              f"{metrics['nnz']:,}  l1 {metrics['l1_norm']:.1f}  {metrics['rows_per_second']:,.0f}"
              " rows/s", file=sys.stderr)
    return 0


run = run_cmd

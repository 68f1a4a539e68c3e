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
import time
from pathlib import Path
from typing import Any

from ftrl_core.model import Model
from ftrl_core.readers import InputError, open_reader
from ftrl_core.readers import detect_format as _detect
from ftrl_core.trainer import RECYCLE, Progress, parse_threads, run_model
from service.learner_options import LearnerOptions, refuse_bounded_flags

from .outputs import atomic_text, check_output, write_text
from .state_args import add_state_arguments

FORMATS = ["auto", "criteo", "avazu", "vw", "jsonl"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="input file (.gz works; - for stdin with --format)")
    p.add_argument("--format", choices=FORMATS, default="auto")
    LearnerOptions.add_arguments(p)
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
    io.add_argument("--parse-threads", type=_threads, default=0, metavar="N",
                    help="threads parsing the input (Criteo and Avazu; the others take one); "
                         "default: one per core, up to four. The model learns the same "
                         "whatever N is")


def _threads(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError(f"must be from 1 to 64, got {n}")
    return n


def resolve_format(args: argparse.Namespace, model: Model | None) -> str:
    if args.format != "auto":
        return str(args.format)
    if model is not None and model.data_format and str(args.data) == "-":
        return model.data_format
    return _detect(args.data) if str(args.data) != "-" else "auto"


def load_or_build(args: argparse.Namespace) -> tuple[Model, str]:
    if args.model_in is not None:
        given = LearnerOptions.from_args(args).explicit()
        if given:
            raise ValueError(f"{', '.join(given)}: the learner and features come from "
                             f"--model-in {args.model_in}; drop these flags")
        model = Model.load(args.model_in)
        return model, resolve_format(args, model)
    fmt = resolve_format(args, None)
    if fmt == "auto":
        raise InputError("reading standard input needs --format")
    return LearnerOptions.from_args(args).build_model(fmt), fmt


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
        "filter_bytes": mem["filter_bytes"],
        "live_coordinates": mem["live_coordinates"],
        **_bounds_counts(model),
        "optimizer": model.optimizer.config(),
        "fields": {k: v for k, v in sp.fields.items()},
    }


def _bounds_counts(model: Model) -> dict[str, int]:
    """admitted, refused, evicted: with a bounded-memory flag only."""
    bounds = model.optimizer.bounds
    if bounds is None:
        return {}
    counts = bounds.counts(model.optimizer.table)
    return {k: counts[k] for k in ("admitted", "refused", "evicted")}


def run_cmd(args: argparse.Namespace) -> int:
    from service.stores import StoreError, parse_state_url

    for path, flag in ((args.model_out, "--model-out"), (args.predictions_out,
                       "--predictions-out"), (args.metrics_json, "--metrics-json")):
        check_output(path, flag)  # before any work
    try:
        if parse_state_url(args.state).scheme == "memory":
            return _train(args, None)
        refuse_bounded_flags(LearnerOptions.from_args(args), args.state)
        return _train(args, _SharedState(args))
    except StoreError as exc:  # a bad URL, refused identity, unreachable shard: one line
        raise ValueError(str(exc)) from None


#: seconds between two sweeps of the shared state (``service.stores.redis.sweep``; not
#: imported from it: ``ctr train`` without --state should not import the Redis store)
_SWEEP_EVERY = 1.0


class _SharedState:
    """``--state redis://...``: the process learns on its cache and flushes its deltas as
    the store's flush policy says (after every batch, or every ``--sync-every-events``
    rows), synchronously, in the learning thread."""

    def __init__(self, args: argparse.Namespace) -> None:
        from service.stores.redis import FlushPolicy, RedisState

        self.state = RedisState(args.state, args.model_name, buckets=args.buckets)
        self.policy = FlushPolicy(every_events=args.sync_every_events, durable_locally=False)
        self.swept_at = time.monotonic()

    def attach(self, model: Model, seed_from_file: bool) -> None:
        from service.stores.redis import seed

        if seed_from_file and self.state.stored_config() is None:
            seed(self.state, model)
        self.state.attach(model)

    def before(self, model: Model, batch: Any) -> None:
        self.state.before_learn(model, batch)

    def after(self, model: Model, batch: Any) -> None:
        self.state.after_learn(model, batch)
        st = self.state
        if self.policy.due(st.rows_pending, st.tracker.pending, 0.0):
            st.sync(model)
        if st.sweeper is not None and time.monotonic() - self.swept_at >= _SWEEP_EVERY:
            # the shared state's eviction (``sweep``): here in the learning thread, between
            # two batches, on the store's timer
            self.swept_at = time.monotonic()
            now = st.sweep_now()
            report = st.sweep(now)
            if report is not None:
                st.after_sweep(report, now)

    def finish(self, model: Model) -> None:
        self.state.sync(model)

    def snapshot(self, model: Model) -> Model:
        """Every shard's state, with this process's admission filter and bounded-memory
        counters (the ages come from Redis)."""
        from service.stores.redis import snapshot

        shared = snapshot(self.state)
        if model.optimizer.bounds is not None and shared.optimizer.bounds is not None:
            shared.optimizer.bounds.load_state(model.optimizer.bounds.state())
        return shared

    def close(self) -> None:
        self.state.close()


def _train(args: argparse.Namespace, store: _SharedState | None) -> int:
    model, fmt = load_or_build(args)
    reader = open_reader(args.data, fmt, model.registry, model.options,
                         skip_bad_lines=args.skip_bad_lines, recycle=RECYCLE,
                         threads=args.parse_threads or parse_threads())
    progress = None if args.quiet else Progress()
    with contextlib.ExitStack() as stack:
        before = after = None
        if store is not None:
            stack.callback(store.close)
            store.attach(model, args.model_in is not None)
            before = functools.partial(store.before, model)

            def after(batch: Any, p: Any) -> None:
                store.after(model, batch)
        preds = None
        if args.predictions_out is not None:  # renamed into place when the run succeeds
            preds = stack.enter_context(atomic_text(args.predictions_out))
        result = run_model(model, reader, learn=True, predictions=preds, progress=progress,
                           before_batch=before, on_batch=after)
        if store is not None:
            store.finish(model)
        if result.rows == 0:
            raise InputError(f"{args.data}: no rows to learn")
        if args.model_out is not None:
            (model if store is None else store.snapshot(model)).save(args.model_out)
    metrics = report(model, result, reader)
    if reader.bad_line_count:
        print(f"ctr train: skipped {reader.bad_line_count} bad line(s); first: "
              + "; ".join(f"line {b.line}: {b.field} {b.message}" for b in reader.bad_lines[:3]),
              file=sys.stderr)
    if args.metrics_json is not None:
        write_text(args.metrics_json, json.dumps(metrics, indent=1))
    if not args.quiet:
        print(f"rows {metrics['rows']:,}  logloss {metrics['logloss']:.6f}  auc "
              f"{metrics['auc']:.5f}  calibration {metrics['calibration']:.4f}  nnz "
              f"{metrics['nnz']:,}  l1 {metrics['l1_norm']:.1f}  {metrics['rows_per_second']:,.0f}"
              " rows/s", file=sys.stderr)
    return 0


run = run_cmd

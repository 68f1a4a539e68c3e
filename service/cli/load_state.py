"""Seed a shared state store (Redis) from a model file, or read it back into one.

Examples:
  ctr load-state m.ctr --state redis://127.0.0.1:7001,redis://127.0.0.1:7002
  ctr load-state m.ctr --state redis://127.0.0.1:7001 --model-name ads --replace
  ctr load-state --snapshot-out now.ctr --state redis://127.0.0.1:7001

The stored config (learner, features) becomes the model's identity: workers that start
with another config are refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ftrl_core.model import Model

from .outputs import check_output
from .state_args import add_state_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, nargs="?", help="the model file to load")
    add_state_arguments(p)
    p.add_argument("--replace", action="store_true",
                   help="delete the model's existing state in the store first")
    p.add_argument("--snapshot-out", type=Path,
                   help="instead of loading, write the store's state to this model file")


def run(args: argparse.Namespace) -> int:
    from service.stores import StoreError, parse_state_url
    from service.stores.redis import RedisState, seed, snapshot

    check_output(args.snapshot_out, "--snapshot-out")
    try:
        if parse_state_url(args.state).scheme == "memory":
            raise ValueError("--state: load-state needs a shared store (redis://...)")
        store = RedisState(args.state, args.model_name, buckets=args.buckets)
    except StoreError as exc:
        raise ValueError(str(exc)) from None
    try:
        if args.snapshot_out is not None:
            model = snapshot(store)
            model.save(args.snapshot_out)
            print(f"wrote {args.snapshot_out}: {model.optimizer.table.size:,} coordinates, "
                  f"{model.rows:,} rows", file=sys.stderr)
            return 0
        if args.model is None:
            raise ValueError("give a model file to load (or --snapshot-out)")
        n = seed(store, Model.load(args.model), replace=args.replace)
        print(f"loaded {n:,} coordinates into model {args.model_name!r} at {args.state}",
              file=sys.stderr)
        return 0
    except StoreError as exc:
        raise ValueError(str(exc)) from None
    finally:
        store.close()

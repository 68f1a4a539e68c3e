"""Where a command's model state lives: the ``--state`` flags of ``ctr train`` and ``ctr
load-state`` (``ctr serve`` and ``ctr consume`` have theirs as settings)."""

from __future__ import annotations

import argparse


def add_state_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("state store")
    g.add_argument("--state", default="memory://", metavar="URL",
                   help="memory:// (default) or redis://host:port[/db][,redis://...] (shards, "
                        "in a fixed order); rediss:// for TLS; "
                        "redis+cluster://host:port[,host:port...] for a Redis Cluster")
    g.add_argument("--model-name", default="default",
                   help="the model's name in the shared store (default 'default')")
    g.add_argument("--sync-every-events", type=int, default=0, metavar="N",
                   help="flush deltas to the store after N learned rows (default: every batch)")
    g.add_argument("--buckets", type=int, default=None,
                   help="exact-key layout: hashes the coordinates are spread over, fixed when "
                        "the model is created (aim at live coordinates / 100; default 16384)")

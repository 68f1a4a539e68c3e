"""Serve a model over HTTP: learn from events as they arrive, predict at once.

Every flag has an environment variable: the flag name upper-cased with a CTR_ prefix
(--snapshot-dir is CTR_SNAPSHOT_DIR, --lambda is CTR_LAMBDA); a flag wins over its variable.
API keys come from CTR_API_KEYS (comma-separated) and --api-key-file, never from a flag.

Examples:
  ctr serve --port 8000 --alpha 0.2 --snapshot-dir /var/lib/ctr --snapshot-every 60
  ctr serve --model-in /var/lib/ctr/model.ctr --snapshot-dir /var/lib/ctr   # resume
  CTR_API_KEYS=k1,k2 CTR_PREDICT_OPEN=true ctr serve
  ctr serve --workers 2 --state redis://127.0.0.1:7001,redis://127.0.0.1:7002
      # two processes sharing one model through two Redis shards (deltas flushed after
      # every batch; --sync-every-events N / --sync-every-ms MS flush less often)
  ctr serve --variants "rda:lambda=1e-4,fobos:lambda=1e-4,ftrl:alpha=0.1;l1=5;name=strong"
      # then open http://127.0.0.1:8000/dashboard
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .learner_args import LEARNER_FLAGS, add_learner_arguments

#: serve flags whose value goes to Settings unchanged (dest == setting name)
_DIRECT = ("host", "port", "workers", "state", "model_name", "sync_every_events",
           "sync_every_ms", "buckets", "model_in", "snapshot_dir", "snapshot_every",
           "api_key_file", "max_body_bytes", "strict", "predict_open", "access_log",
           "shutdown_timeout", "variants", "stats_every", "stats_history",
           "optimizer", "rate", "hash_bits", "interactions", "drop_missing", "ints",
           "max_row_features", "keep_names")


def add_arguments(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("server")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    s.add_argument("--workers", type=int,
                   help="worker processes (default 1; more need a shared state store)")
    s.add_argument("--log-level", dest="serve_log_level",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (default info)")
    s.add_argument("--access-log", action="store_true", default=None,
                   help="log every request (off by default)")
    s.add_argument("--shutdown-timeout", type=float, metavar="SECONDS",
                   help="on SIGTERM, wait this long for requests in flight (default 20), "
                        "then write the final snapshot")
    st = p.add_argument_group("state and snapshots")
    st.add_argument("--state", metavar="URL",
                    help="state store: memory:// (default, one worker) or "
                         "redis://host:port[/db][,redis://...] (shards, in a fixed order; "
                         "shared by all workers) or redis+cluster://host:port[,host:port...] "
                         "(a Redis Cluster)")
    st.add_argument("--model-name", help="the model's name in a shared store (default "
                                          "'default')")
    st.add_argument("--sync-every-events", type=int, metavar="N",
                    help="shared store: flush deltas after N learned rows (default: every "
                         "batch)")
    st.add_argument("--sync-every-ms", type=float, metavar="MS",
                    help="shared store: flush deltas MS milliseconds after the last flush, "
                         "also when no batch arrives (default: off)")
    st.add_argument("--buckets", type=int,
                    help="shared store, exact-key layout: hashes a new model's coordinates "
                         "are spread over (default 16384)")
    st.add_argument("--model-in", type=Path, help="start from this model file (a snapshot)")
    st.add_argument("--snapshot-dir", type=Path,
                    help="write snapshots here (DIR/model.ctr, atomically)")
    st.add_argument("--snapshot-every", type=float, metavar="SECONDS",
                    help="snapshot this often when the model changed (default 60; 0: only "
                         "on demand and at shutdown)")
    r = p.add_argument_group("requests and security")
    r.add_argument("--max-body-bytes", type=int,
                   help="largest request body, and longest stream line (default 16 MiB)")
    r.add_argument("--strict", action="store_true", default=None,
                   help="reject events with unknown top-level keys")
    r.add_argument("--api-key-file", type=Path,
                   help="file of API keys, one per line (with CTR_API_KEYS)")
    r.add_argument("--predict-open", action="store_true", default=None,
                   help="with API keys, leave /v1/predict open")
    d = p.add_argument_group("shadow variants and dashboard")
    d.add_argument("--variants", metavar="SPEC,...",
                   help="extra learners trained on the same stream, compared on "
                        "/v1/variants and /dashboard: OPTIMIZER[:PARAM=VALUE;...] separated "
                        "by commas, e.g. 'rda:lambda=1e-4,ftrl:l1=5;name=strong' (PARAM: "
                        "the optimizer's hyperparameters, l1, rate, name)")
    d.add_argument("--stats-every", type=float, metavar="SECONDS",
                   help="sample the dashboard's history this often (default 2)")
    d.add_argument("--stats-history", type=int, metavar="N",
                   help="samples of history kept (default 900)")
    add_learner_arguments(p)
    p.set_defaults(keep_names=None)


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (the rest come from CTR_* or defaults)."""
    out: dict[str, Any] = {k: getattr(args, k) for k in _DIRECT
                           if getattr(args, k, None) is not None}
    if args.serve_log_level is not None:
        out["log_level"] = args.serve_log_level
    for flag in LEARNER_FLAGS:
        name = flag[2:]
        value = getattr(args, f"opt_{name}")
        if value is not None:
            out["lambda_" if name == "lambda" else name] = value
    for name in ("field_l1", "field_l2"):
        if getattr(args, name):
            out[name] = ",".join(getattr(args, name))
    return out


def settings_environment(overrides: dict[str, Any]) -> dict[str, str]:
    """The command line's settings as the CTR_* variables ``Settings()`` reads."""
    env = {}
    for name, value in overrides.items():
        var = "CTR_LAMBDA" if name == "lambda_" else f"CTR_{name.upper()}"
        env[var] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return env


def _settings_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"--{loc.replace('_', '-')}: {msg}" if loc else msg)
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.auth import load_keys
    from service.settings import Settings
    from service.startup import check_startup, model_builder
    from service.stores import StateStoreError, open_store

    from . import CommandError

    try:
        settings = Settings(**settings_overrides(args))
    except ValidationError as exc:
        raise CommandError(_settings_error(exc)) from None
    check_startup(settings)
    try:
        store = open_store(settings.state, settings.model_name,
                           sync_every_events=settings.sync_every_events,
                           sync_every_ms=settings.sync_every_ms, buckets=settings.buckets)
        try:
            if settings.state_scheme != "memory":  # identity check (and seeding) up front
                store.open(model_builder(settings), settings.model_in)
        finally:
            store.close()
    except StateStoreError as exc:
        raise CommandError(str(exc)) from None
    load_keys(settings)
    logging.getLogger("service").setLevel(settings.log_level.upper())
    options: dict[str, Any] = dict(
        factory=True, host=settings.host, port=settings.port, log_level=settings.log_level,
        access_log=settings.access_log, lifespan="on", server_header=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout))
    if settings.workers > 1:  # each worker process imports the app and reads CTR_* again
        os.environ.update(settings_environment(settings_overrides(args)))
        uvicorn.run("service.app:create_app_from_env", workers=settings.workers, **options)
        return 0
    config = uvicorn.Config(functools.partial(create_app, settings), **options)
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise CommandError("the server did not start (see the log above)")
    return 0

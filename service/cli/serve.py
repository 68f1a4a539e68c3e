"""Serve a model over HTTP: learn from events as they arrive, predict at once.

Every flag has an environment variable: the flag name upper-cased with a CTR_ prefix
(--data-dir is CTR_DATA_DIR, --lambda is CTR_LAMBDA); a flag wins over its variable.
API keys come from CTR_API_KEYS (comma-separated) and --api-key-file, never from a flag.

Examples:
  ctr serve --port 8000 --alpha 0.2 --data-dir /var/lib/ctr   # durable; resumes from it
  ctr serve --model-in model.ctr --data-dir /var/lib/ctr   # a new data dir from a file
  CTR_API_KEYS=k1,k2 CTR_PREDICT_OPEN=true ctr serve
  ctr serve --workers 2 --data-dir D
      # one learner process and two prediction workers mapping its model (memory store)
  ctr serve --workers 2 --state redis://127.0.0.1:7001,redis://127.0.0.1:7002 --data-dir D
      # two processes sharing one model through two Redis shards, each with its own
      # write-ahead log (deltas flushed every 250 ms or 4,000 rows; --sync-every-events N /
      # --sync-every-ms MS choose otherwise)
  ctr serve --variants "rda:lambda=1e-4,fobos:lambda=1e-4,ftrl:alpha=0.1;l1=5;name=strong"
      # then open http://127.0.0.1:8000/dashboard
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import math
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.learner_options import LearnerOptions


def add_arguments(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("server")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    s.add_argument("--workers", type=int,
                   help="worker processes (default 1). With the memory store: N prediction "
                        "workers over one learner process's model in shared memory (FTRL); "
                        "with a Redis store: N workers sharing the model through it")
    s.add_argument("--log-level", dest="serve_log_level",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (default info)")
    s.add_argument("--access-log", action="store_true", default=None,
                   help="log every request (off by default)")
    s.add_argument("--shutdown-timeout", type=float, metavar="SECONDS",
                   help="on SIGTERM, wait this long for requests in flight (default 20), "
                        "then write the final checkpoint")
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
    st.add_argument("--model-in", type=Path,
                    help="start from this model file (a new data directory, or none)")
    st.add_argument("--data-dir", type=Path,
                    help="keep checkpoints and a write-ahead log here: every answered request "
                         "survives a crash, and a restart resumes from it (default: none, the "
                         "model lives in memory only)")
    st.add_argument("--fsync", choices=["always", "everysec", "no"],
                    help="sync the write-ahead log before each answer (always, the default), "
                         "once a second, or never (the kernel decides)")
    st.add_argument("--snapshot-every", type=float, metavar="SECONDS",
                    help="write a checkpoint this often when the model changed (default 60; "
                         "0: only on demand and at shutdown); with a Redis store, how often "
                         "each worker snapshots its pending impressions (the join)")
    st.add_argument("--dedupe-window", type=float, metavar="SECONDS",
                    help="remember Idempotency-Keys this long (default 600)")
    r = p.add_argument_group("requests and security")
    r.add_argument("--max-body-bytes", type=int,
                   help="largest request body, and longest stream line (default 16 MiB)")
    r.add_argument("--strict", action="store_true", default=None,
                   help="reject events with unknown top-level keys")
    r.add_argument("--body-timeout", type=float, metavar="SECONDS",
                   help="a request body must arrive whole within this (and each line of a "
                        "stream); else 408 (default 60)")
    r.add_argument("--header-timeout", type=float, metavar="SECONDS",
                   help="the request line and headers must arrive within this; else the "
                        "connection is closed (default 10)")
    r.add_argument("--keep-alive-timeout", type=float, metavar="SECONDS",
                   help="close idle keep-alive connections after this (default 5)")
    r.add_argument("--max-connections", type=int, metavar="N",
                   help="open connections per worker; more are answered 503 and closed "
                        "(default 1000)")
    r.add_argument("--api-key-file", type=Path,
                   help="file of API keys, one per line (with CTR_API_KEYS)")
    r.add_argument("--predict-open", action="store_true", default=None,
                   help="with API keys, leave /v1/predict open")
    j = p.add_argument_group("the attribution join (/v1/impressions, /v1/feedback)")
    add_join_arguments(j)
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
    LearnerOptions.add_arguments(p)


def add_join_arguments(group: argparse._ArgumentGroup) -> None:
    """The join's flags, the same on ``ctr serve`` and ``ctr consume`` (defaults and ``CTR_``
    variables are the Settings')."""
    group.add_argument("--join-window", type=float, metavar="SECONDS",
                   help="a click joins its impression within this many seconds of it "
                        "(event time; default 3600)")
    group.add_argument("--join-policy", choices=["wait", "fnw"],
                   help="wait: learn each impression once its window closes (default); "
                        "fnw: learn it at once as a negative, a click adds a weighted "
                        "positive (fake-negative weighting)")
    group.add_argument("--max-pending", type=int, metavar="N",
                   help="pending impressions kept at most; the oldest close early "
                        "(default 0: no limit)")
    group.add_argument("--negative-rate", type=float, metavar="R",
                   help="wait: keep a negative with probability R (by a hash of its id), "
                        "learned with weight 1/R (default 1)")


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (the rest come from CTR_* or defaults): every
    flag whose destination is a setting's name."""
    from service.settings import Settings

    out: dict[str, Any] = {k: getattr(args, k) for k in Settings.model_fields
                           if k != "log_level" and getattr(args, k, None) is not None}
    out.update(LearnerOptions.from_args(args).given())
    if getattr(args, "serve_log_level", None) is not None:
        out["log_level"] = args.serve_log_level
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

    from ftrl_core.model import Model
    from service.app import create_app
    from service.auth import load_keys
    from service.connections import LimitedHttpToolsProtocol
    from service.settings import Settings
    from service.startup import check_startup, model_builder, store_for
    from service.stores import StoreError
    from service.stores.datadir import DirLock

    from . import CommandError

    try:
        settings = Settings(**settings_overrides(args))
    except ValidationError as exc:
        raise CommandError(_settings_error(exc)) from None
    check_startup(settings)
    if settings.model_in is not None and settings.state_scheme == "memory":
        # read it once here, so a bad file is one line, not a server that fails to start
        # with a traceback (the memory store reads it again in the app's lifespan)
        Model.load(settings.model_in)
    if settings.data_dir is not None and settings.state_scheme == "memory":
        lock = DirLock(settings.data_dir)  # refused here, not after uvicorn started
        try:
            if not lock.try_acquire():
                raise CommandError(f"--data-dir {settings.data_dir} is in use by another "
                                   "server; one server per data directory")
        except StoreError as exc:
            raise CommandError(str(exc)) from None
        lock.release()
    if settings.state_scheme != "memory":  # the identity check (and seeding) up front
        try:
            # without the data directory: the workers take their slots and logs
            store = store_for(settings.model_copy(update={"data_dir": None}),
                              auto_flush=False)
            try:
                store.open(model_builder(settings), settings.model_in)
            finally:
                asyncio.run(store.close())
        except StoreError as exc:
            raise CommandError(str(exc)) from None
    load_keys(settings)
    logging.getLogger("service").setLevel(settings.log_level.upper())
    options: dict[str, Any] = dict(
        factory=True, host=settings.host, port=settings.port, log_level=settings.log_level,
        access_log=settings.access_log, lifespan="on", server_header=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),
        timeout_keep_alive=settings.keep_alive_timeout, http=LimitedHttpToolsProtocol)
    if settings.workers > 1 and settings.state_scheme == "memory":
        from service.workers.supervisor import serve

        return serve(settings, options)
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

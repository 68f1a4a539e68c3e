"""The service's settings: every ``ctr serve`` flag, each also an environment variable.

Variables are the flag names upper-cased with the ``CTR_`` prefix (``--max-body-bytes`` is
``CTR_MAX_BODY_BYTES``, ``--lambda`` is ``CTR_LAMBDA``); a flag given on the command line
wins over the variable. ``CTR_API_KEYS`` is a comma-separated list. Settings are built by
the caller (``ctr serve``, a test) and handed to ``create_app``; nothing here reads the
environment at import time.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1 << 20

#: settings that are learner hyperparameters (``--alpha`` ... ``--k``), as in learner_args
LEARNER_PARAMS = ("alpha", "beta", "l1", "l2", "lambda_", "gamma", "rho", "eta", "gravity",
                  "theta", "k")
#: the other learner and feature settings, by their ``argparse`` destination
LEARNER_OPTIONS = ("optimizer", "rate", "field_l1", "field_l2", "hash_bits", "interactions",
                   "drop_missing", "ints", "max_row_features", "keep_names")


class Settings(BaseSettings):
    """Everything ``create_app`` and ``ctr serve`` need to know."""

    model_config = SettingsConfigDict(env_prefix="CTR_", populate_by_name=True,
                                      extra="forbid", protected_namespaces=())

    # -- server ------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1)] = 1
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = False
    #: seconds SIGTERM waits for requests in flight before cancelling them (the final
    #: snapshot is written either way); under a 30 s orchestrator grace period
    shutdown_timeout: Annotated[float, Field(gt=0)] = 20.0

    # -- state ------------------------------------------------------------------------------
    state: str = "memory://"
    model_in: Path | None = None
    snapshot_dir: Path | None = None
    #: seconds between periodic snapshots (written only if the model changed); 0: never
    snapshot_every: Annotated[float, Field(ge=0)] = 60.0
    #: the model's name in a shared store (keys ``ctr:<name>:...``)
    model_name: str = "default"
    #: a shared store flushes after this many learned rows (0: after every batch) ...
    sync_every_events: Annotated[int, Field(ge=0)] = 0
    #: ... or this many milliseconds after its last flush (also in the background; 0: off)
    sync_every_ms: Annotated[float, Field(ge=0)] = 0.0
    #: exact-key layout of a new shared model: hashes the coordinates are spread over
    buckets: Annotated[int | None, Field(ge=1)] = None

    # -- requests ---------------------------------------------------------------------------
    max_body_bytes: Annotated[int, Field(ge=1024)] = 16 * MIB
    strict: bool = False

    # -- auth -------------------------------------------------------------------------------
    api_keys: SecretStr | None = None
    api_key_file: Path | None = None
    predict_open: bool = False

    # -- learner and features (None: the default of ``ctr train``) --------------------------
    optimizer: str | None = None
    alpha: float | None = None
    beta: float | None = None
    l1: float | None = None
    l2: float | None = None
    lambda_: Annotated[float | None,
                       Field(validation_alias=AliasChoices("lambda_", "CTR_LAMBDA"))] = None
    gamma: float | None = None
    rho: float | None = None
    eta: float | None = None
    gravity: float | None = None
    theta: float | None = None
    k: float | None = None
    rate: Literal["global", "adaptive"] | None = None
    field_l1: str | None = None
    field_l2: str | None = None
    hash_bits: int | None = None
    interactions: str | None = None
    drop_missing: bool | None = None
    ints: Literal["token", "log"] | None = None
    max_row_features: int | None = None
    keep_names: bool | None = None

    # -- shadow variants and the dashboard ----------------------------------------------------
    #: extra learners on the same stream (``service.variants`` documents the syntax)
    variants: str | None = None
    #: seconds between two samples of the dashboard's history
    stats_every: Annotated[float, Field(ge=0.1, le=3600)] = 2.0
    #: samples the history keeps (900 at 2 s: the last half hour)
    stats_history: Annotated[int, Field(ge=2, le=100_000)] = 900

    @field_validator("state")
    @classmethod
    def _state_url(cls, value: str) -> str:
        if not urlsplit(value).scheme:
            raise ValueError(f"{value!r} is not a state store URL (e.g. memory://)")
        return value

    @field_validator("variants")
    @classmethod
    def _variants(cls, value: str | None) -> str | None:
        from .variants import parse_variants  # imports the optimizers: only when given

        if value is not None:
            parse_variants(value)
        return value

    @model_validator(mode="after")
    def _one_process_memory(self) -> Settings:
        if self.workers > 1 and urlsplit(self.state).scheme == "memory":
            raise ValueError(
                f"--workers {self.workers} with --state memory://: the memory store lives in "
                "one process, so each worker would learn its own model. Use one worker, or a "
                "Redis state store (--state redis://HOST:PORT) shared by all workers")
        return self

    @property
    def state_scheme(self) -> str:
        return urlsplit(self.state).scheme

    def learner_namespace(self) -> argparse.Namespace:
        """The learner and feature settings in the shape ``ctr train``'s flags have, for
        ``learner_args.build_model`` and ``explicit_learner_flags``."""
        ns = argparse.Namespace(
            **{f"opt_{name.rstrip('_')}": getattr(self, name) for name in LEARNER_PARAMS})
        for name in LEARNER_OPTIONS:
            setattr(ns, name, getattr(self, name))
        ns.field_l1 = [self.field_l1] if self.field_l1 else []
        ns.field_l2 = [self.field_l2] if self.field_l2 else []
        # keep_names is not a learner flag for explicit_learner_flags; True unless turned off
        ns.keep_names = self.keep_names is not False
        return ns

"""The service's settings: every ``ctr serve`` flag, each also an environment variable
(the learner and feature ones are declared once, in ``learner_options``).

Variables are the flag names upper-cased with the ``CTR_`` prefix (``--max-body-bytes`` is
``CTR_MAX_BODY_BYTES``, ``--lambda`` is ``CTR_LAMBDA``); a flag given on the command line
wins over the variable. ``CTR_API_KEYS`` is a comma-separated list. Settings are built by
the caller (``ctr serve``, a test) and handed to ``create_app``; nothing here reads the
environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .learner_options import LearnerOptions

MIB = 1 << 20
_JOIN_FLAGS = frozenset({"join_window", "join_policy", "max_pending", "negative_rate"})


def _learner_fields() -> dict[str, Any]:
    """``LearnerOptions``'s fields as settings (``CTR_ALPHA``, ``CTR_LAMBDA``...)."""
    types = LearnerOptions.types()
    out: dict[str, Any] = {}
    for f in LearnerOptions.options():
        env = f.metadata.get("env")
        alias = AliasChoices(f.name, env) if env else None
        out[f.name] = (types[f.name], Field(None, description=f.metadata["help"],
                                             validation_alias=alias))
    return out


if TYPE_CHECKING:
    _LearnerSettings = BaseSettings
else:
    _LearnerSettings = create_model("_LearnerSettings", __base__=BaseSettings,
                                    **_learner_fields())


class Settings(_LearnerSettings):
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
    #: where checkpoints and the write-ahead log live (None: nothing survives the process)
    data_dir: Path | None = None
    #: when the write-ahead log is synced: before each answer, every second, or never
    fsync: Literal["always", "everysec", "no"] = "always"
    #: seconds between periodic checkpoints (written only if the model changed); 0: never
    snapshot_every: Annotated[float, Field(ge=0)] = 60.0
    #: seconds an Idempotency-Key is remembered
    dedupe_window: Annotated[float, Field(gt=0)] = 600.0
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
    #: seconds a request body may take to arrive whole, and one line of a stream (408)
    body_timeout: Annotated[float, Field(gt=0)] = 60.0
    #: seconds the request line and headers may take (then the connection is closed)
    header_timeout: Annotated[float, Field(gt=0)] = 10.0
    #: seconds an idle keep-alive connection is kept open
    keep_alive_timeout: Annotated[float, Field(gt=0)] = 5.0
    #: open connections per worker; more are answered 503 and closed at once
    max_connections: Annotated[int, Field(ge=1)] = 1000

    # -- the attribution join (service.join): memory store and one worker, or Redis -------
    #: seconds after an impression during which a click joins it
    join_window: Annotated[float, Field(gt=0)] = 3600.0
    #: wait: learn each impression once, when its window closes; fnw: fake negatives
    join_policy: Literal["wait", "fnw"] = "wait"
    #: pending impressions kept at most (the oldest close early); 0: no limit
    max_pending: Annotated[int, Field(ge=0)] = 0
    #: keep a negative with this probability (by a hash of its id), weighted 1/r; wait only
    negative_rate: Annotated[float, Field(gt=0, le=1)] = 1.0

    # -- auth -------------------------------------------------------------------------------
    api_keys: SecretStr | None = None
    api_key_file: Path | None = None
    predict_open: bool = False

    # -- learner and features: ``LearnerOptions``'s fields (None: ``ctr train``'s default) --

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
    def _prediction_workers_ftrl(self) -> Settings:
        # --workers N with memory://: one learner process, N prediction workers mapping its
        # model (service.workers), which read FTRL state only (see service/workers/view.py)
        optimizer = self.learner_options().optimizer
        if self.workers > 1 and urlsplit(self.state).scheme == "memory" \
                and optimizer not in (None, "ftrl"):
            raise ValueError(
                f"--workers {self.workers} with --state memory:// runs prediction workers "
                f"over one shared model, which serve FTRL models only (not {optimizer}). "
                "Use one worker, or a Redis state store (--state redis://HOST:PORT) shared "
                "by all workers")
        return self

    @model_validator(mode="after")
    def _join_scope(self) -> Settings:
        given = sorted(_JOIN_FLAGS & self.model_fields_set)
        if given and not self.join_enabled:
            flags = ", ".join("--" + g.replace("_", "-") for g in given)
            raise ValueError(
                f"{flags}: the attribution join runs with --state memory:// and one worker, "
                "or with a Redis state store (not with memory:// and --workers above 1)")
        if self.join_policy == "fnw" and self.negative_rate < 1:
            raise ValueError("--negative-rate applies to --join-policy wait only: fnw's "
                             "weights assume every impression is learned as a negative")
        return self

    @property
    def join_enabled(self) -> bool:
        """Whether this service offers /v1/impressions, /v1/feedback and /v1/join: with the
        memory store and one worker, or a Redis store (``service.join.marks``)."""
        scheme = self.state_scheme
        return (scheme == "memory" and self.workers == 1) or scheme.startswith("redis")

    @property
    def state_scheme(self) -> str:
        return urlsplit(self.state).scheme

    def learner_options(self) -> LearnerOptions:
        """The learner and feature settings alone."""
        return LearnerOptions(**{f.name: getattr(self, f.name)
                                 for f in LearnerOptions.options()})

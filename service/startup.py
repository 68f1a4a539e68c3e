"""What a service starts from: checks of the settings, the store they name, and the recipe
of a fresh model.

A fresh model is built exactly as ``ctr train`` builds one from the same learner and
feature options (``learner_options``), for data in the ``jsonl`` format, so Criteo rows
sent as events get the keys ``ctr train`` gives the TSV.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ftrl_core.bounded import make_bounds
from ftrl_core.model import Model

from .learner_options import BOUNDED_MEMORY_OPTIONS, LearnerOptions, refuse_bounded_flags
from .settings import Settings
from .stores import StateStore, open_store

#: config entries a model resumed from a data directory must agree on with the flags given
IDENTITY_KEYS = ("optimizer", "params", "extra", "features", "admit", "evict_idle",
                 "max_coordinates")


def check_startup(settings: Settings) -> None:
    """Settings that cannot start a service (raised as ValueError with a plain message)."""
    options = settings.learner_options()
    # bad values in one line here, not in the app's lifespan
    make_bounds(options.admit, options.evict_idle, options.max_coordinates)
    if settings.state_scheme != "memory":
        refuse_bounded_flags(options, settings.state)
    elif settings.workers > 1:
        # prediction workers map the learner's table and probe it while it is written: a
        # backward-shift deletion moves records under them
        given = [LearnerOptions.flag(n) for n in BOUNDED_MEMORY_OPTIONS
                 if getattr(options, n) is not None]
        if given:
            raise ValueError(f"{given[0]} does not work with --workers {settings.workers} "
                             "(prediction workers) yet; use one worker")
    if settings.model_in is not None:
        given = settings.learner_options().explicit()
        if given:
            raise ValueError(f"{', '.join(given)}: the learner and features come from "
                             f"--model-in {settings.model_in}; drop these settings")
        if not Path(settings.model_in).is_file():
            raise ValueError(f"--model-in {settings.model_in}: no such model file")


def check_resumed(settings: Settings, model: Model) -> None:
    """A model resumed from a data directory keeps its learner: learner flags given on the
    command line must agree with it (ValueError naming what differs)."""
    options = settings.learner_options()
    if not options.explicit():
        return
    mine = options.build_model("jsonl").config()
    stored = model.config()
    diff = [k for k in IDENTITY_KEYS if mine.get(k) != stored.get(k)]
    if diff:
        raise ValueError(f"--data-dir {settings.data_dir} holds a model whose "
                         f"{', '.join(diff)} differ from the flags given (stored: "
                         f"{ {k: stored.get(k) for k in diff} }); drop the flags to resume "
                         "it, or use another data directory")


def model_builder(settings: Settings) -> Callable[[], Model]:
    """A function that builds the fresh model the settings describe."""
    options = settings.learner_options()
    return lambda: options.build_model("jsonl")


def store_for(settings: Settings, *, auto_flush: bool = True,
              shared_dir: Path | None = None) -> StateStore:
    """The state store the settings name (``shared_dir``: see ``stores.open_store``)."""
    return open_store(settings.state, settings.model_name, data_dir=settings.data_dir,
                      fsync=settings.fsync, sync_every_events=settings.sync_every_events,
                      sync_every_ms=settings.sync_every_ms, buckets=settings.buckets,
                      dedupe_window=settings.dedupe_window, auto_flush=auto_flush,
                      shared_dir=shared_dir)

"""What a service starts from: checks of the settings, and the recipe of a fresh model.

A fresh model is built exactly as ``ctr train`` builds one from the same learner and feature
flags (``cli.learner_args``), for data in the ``jsonl`` format, so Criteo rows sent as
events get the keys ``ctr train`` gives the TSV.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ftrl_core.model import Model

from .cli.learner_args import build_model, explicit_learner_flags
from .settings import Settings

SNAPSHOT_NAME = "model.ctr"


def check_startup(settings: Settings) -> None:
    """Settings that cannot start a service (raised as ValueError with a plain message)."""
    if settings.model_in is not None:
        given = explicit_learner_flags(settings.learner_namespace())
        if given:
            raise ValueError(f"{', '.join(given)}: the learner and features come from "
                             f"--model-in {settings.model_in}; drop these settings")
        if not Path(settings.model_in).is_file():
            raise ValueError(f"--model-in {settings.model_in}: no such model file")
    if settings.snapshot_dir is not None and settings.model_in is None:
        existing = Path(settings.snapshot_dir) / SNAPSHOT_NAME
        if existing.exists():
            raise ValueError(f"{existing} exists and would be overwritten by a fresh model: "
                             f"resume from it with --model-in {existing}, or move it away")


def model_builder(settings: Settings) -> Callable[[], Model]:
    """A function that builds the fresh model the settings describe."""
    namespace = settings.learner_namespace()
    return lambda: build_model(namespace, "jsonl")

"""Consistent copies of the model: checkpoints (model, variants, idempotency keys, taken
between two batches) and downloads; and the thread rule for reads under the learn lock."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TypeVar

from ftrl_core.model import Model

from ..errors import Problem
from ..join import JoinState
from ..stores import StateStore
from ..stores.checkpoints import Checkpoint
from ..threads import run_to_end
from ..variants import Variant
from .idempotency import IdempotencyKeys
from .joining import JOIN_PART
from .recovery import KEYS_PART

T = TypeVar("T")


def no_data_dir() -> Problem:
    return Problem(409, "no-data-dir", "no data directory is configured (--data-dir / "
                   "CTR_DATA_DIR): there is nowhere to write a snapshot")


def copy_model(store: StateStore, model: Model) -> Model:
    """The whole model now: the shared store's (every worker's flushed state) or a copy
    of this one. Under the learn lock, in a worker thread."""
    shared = store.shared_copy(model)
    return copy.deepcopy(model) if shared is None else shared


def capture(store: StateStore, model: Model, variants: list[Variant],
            keys: IdempotencyKeys, join: JoinState | None = None) -> Checkpoint:
    """Everything a restart needs, between two batches (under the learn lock): with the
    join, its pending impressions, clocks and counters."""
    seq = store.checkpoint_position()
    parts = {KEYS_PART: keys.state()}
    if join is not None:
        parts[JOIN_PART] = join.state()
    return Checkpoint(copy_model(store, model), seq,
                      {v.spec.filename: copy.deepcopy(v.model) for v in variants}, parts)


async def locked_thread(fn: Callable[[Model], T], model: Model) -> T:
    """``fn(model)`` in a worker thread, for a caller holding the learn lock (waited for
    to its end even if the caller is cancelled: ``threads.run_to_end``)."""
    return await run_to_end(lambda: fn(model))

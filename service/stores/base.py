"""What a state store is: where a worker's model state lives, kept in step with others.

The learner service learns on an in-process ``Model`` (the hot path never leaves the
process). A store decides where that model comes from and what happens after each learned
batch: the memory store keeps the model alone in this process (snapshots to a file are its
persistence); a shared store (``redis``) may refuse a batch in ``before_learn`` (503),
pushes the additive deltas and refreshes the local coordinates in flushes
(``begin_flush``/``roundtrip``/``finish_flush``) and ``sync``. Every call but ``roundtrip``
is made under the service's learn lock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ftrl_core.batch import Batch
from ftrl_core.fields import FieldRegistry
from ftrl_core.model import Model


class StateStoreError(Exception):
    """A state store that cannot be opened or used (bad URL, unsupported, unreachable)."""


class StoreUnavailable(StateStoreError):
    """The shared store cannot be reached now: the request is refused (503, Retry-After)
    having learned nothing; deltas already computed stay pending."""


class StateStore(Protocol):
    #: the URL the store was opened with (``memory://``), shown by ``GET /v1/model``
    url: str

    def open(self, build: Callable[[], Model], model_in: Path | None) -> Model:
        """The model this worker starts from: the store's state, ``model_in``, or
        ``build()`` (a fresh model from the learner settings)."""
        ...

    @property
    def flush_interval(self) -> float:
        """Seconds between background flushes of idle deltas (0: no background flush)."""
        ...

    def share_fields(self, registry: FieldRegistry, known: int) -> list[str] | None:
        """Make the field ids ``registry`` gave beyond its first ``known`` fields the
        shared ones (a batch registered them and is about to be learned). None when they
        are (``registry`` may have grown by other workers' fields); otherwise the shared
        names from id ``known`` on: the caller renumbers by them and parses again. Raises
        ``StoreUnavailable`` when the store cannot say."""
        ...

    def before_learn(self, model: Model, batch: Batch) -> None:
        """``batch`` is about to be learned by ``model`` (under the learn lock); raises
        ``StoreUnavailable`` to refuse it."""
        ...

    def after_learn(self, model: Model, batch: Batch) -> None:
        """``batch`` was just learned by ``model`` (under the learn lock)."""
        ...

    def sync(self, model: Model) -> None:
        """Make the shared state current with ``model`` (before snapshots and shutdown)."""
        ...

    def shared_copy(self, model: Model) -> Model | None:
        """The whole shared model at one point (every worker's flushed state), for
        snapshots; None when ``model`` is all there is (then a copy of it is taken). Called
        after ``sync`` under the learn lock, in a worker thread."""
        ...

    # A flush in three steps, so that learning goes on while one is on the wire (the
    # learner serialises flushes; see ``LearnerService.flush``):

    def flush_wanted(self) -> bool:
        """Whether deltas should be pushed now (after a learned batch, on the background
        tick every ``flush_interval`` s, before learning while degraded)."""
        ...

    def begin_flush(self, model: Model) -> Any:
        """Prepare a flush (under the learn lock); None: nothing to send."""
        ...

    def roundtrip(self, flush: Any) -> Any:
        """Send it and read the replies (in a worker thread, without the lock); raises
        ``StoreUnavailable`` (the flush is kept and resent later)."""
        ...

    def finish_flush(self, model: Model, flush: Any, replies: Any) -> None:
        """Apply the replies to ``model`` (under the learn lock)."""
        ...

    def status(self) -> dict[str, object]:
        """The store's state for ``/readyz`` and ``/v1/model``."""
        ...

    def close(self) -> None:
        ...

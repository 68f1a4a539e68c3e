"""What a state store is: where a worker's model comes from, how what it learns is made
durable, and how it is kept in step with other workers.

The learner service learns on an in-process ``Model`` (the hot path never leaves the
process); one store class per backend owns everything else: its cache, its flush policy,
its write-ahead log and its errors (``errors``). The learner's calls, in the order of a
training request (all under the learn lock but ``durable``):

1. ``share_fields`` when a batch registered new fields; ``before_learn`` (may refuse the
   batch with ``StoreUnavailable``: nothing is learned);
2. ``append`` the accepted request to the log (a ``DurabilityError`` refuses it, nothing
   learned), then the model learns it;
3. ``after_learn``: a ticket for what was learned;
4. ``durable(ticket)`` without the lock: returns once the batch survives the death of this
   process (the log synced, or, without a data directory, the flush carrying it applied);
   the answer is sent after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from ftrl_core.batch import Batch
from ftrl_core.fields import FieldRegistry
from ftrl_core.model import Model, ModelFileError

from .checkpoints import Checkpoint
from .errors import StoreConfigError
from .wal import Record


@dataclass(frozen=True)
class Claim:
    """What a shared store says of an idempotency key about to be learned: this worker's
    now (``claimed``), learned elsewhere (``done``, with its answer: ``p`` as float32),
    being learned elsewhere (``pending``), or used for another body (``mismatch``)."""

    status: Literal["claimed", "done", "pending", "mismatch"]
    accepted: int = 0
    model_version: int = 0
    p: np.ndarray | None = None
    #: ``claimed``: the flush the claim names (``release`` needs it)
    seq: int = 0


@dataclass
class Opened:
    """What a worker starts from: the model, the checkpoint it came from (None: a fresh or
    shared model), and the log records learned after that checkpoint, to learn again."""

    model: Model
    checkpoint: Checkpoint | None = None
    records: list[Record] = field(default_factory=list)


class StateStore(Protocol):
    #: the URL the store was opened with (``memory://``), shown by ``GET /v1/model``
    url: str
    #: where snapshots and the log live (None: nothing survives the process)
    data_dir: Path | None
    #: whether other processes share the model (then snapshots read it from the store)
    shared: bool

    def open(self, build: Callable[[], Model], model_in: Path | None) -> Opened:
        """The model this worker starts from: the data directory's checkpoint, the shared
        store's state, ``model_in``, or ``build()``."""
        ...

    def start(self, lock: asyncio.Lock, model: Model) -> list[asyncio.Task[None]]:
        """Start the store's background work (timed flushes and retries, health probes,
        log syncs); ``lock`` is the learn lock its flushes take."""
        ...

    def share_fields(self, registry: FieldRegistry, known: int) -> list[str] | None:
        """Make the field ids ``registry`` gave beyond its first ``known`` fields the
        shared ones. None when they are; otherwise the shared names from id ``known`` on:
        the caller renumbers by them and parses again. Raises ``StoreUnavailable``."""
        ...

    def claim(self, key: str, fingerprint: int, ahead: int = 0) -> Claim | None:
        """Claim an ``Idempotency-Key`` across workers before its request is learned
        (under the lock); None: the store shares none (the learner's own table decides).
        ``ahead``: what ``claim_ahead`` returned for this key (0: none)."""
        ...

    async def claim_ahead(self, key: str, fingerprint: int) -> int:
        """Claim ``key`` before the learn lock is taken, off the event loop (a shared
        store's round trip, so that neither the loop nor learning waits for it); a token
        for ``claim`` that spares it the round trip while it is still valid, 0 when there
        is none (then ``claim`` claims under the lock, as without it)."""
        ...

    def record_answer(self, key: str, fingerprint: int, accepted: int, version: int,
                      p: np.ndarray) -> None:
        """A claimed key's answer, for the other workers (sent with the flush carrying the
        request); nothing for a store that shares none."""
        ...

    def release(self, key: str, fingerprint: int, claim: Claim) -> None:
        """Free a key ``claim`` took whose request was refused (nothing of it learned), so
        that its retry goes through on any worker at once; nothing for a store that shares
        none."""
        ...

    def before_learn(self, model: Model, batch: Batch) -> None:
        """``batch`` is about to be learned; raises ``StoreUnavailable`` to refuse it."""
        ...

    def append(self, kind: int, payload: bytes) -> int:
        """Write a record to the log before it is learned; its sequence number (0: no log).
        Raises ``DurabilityError`` having written nothing."""
        ...

    def after_learn(self, model: Model, batch: Batch, seq: int) -> int:
        """``batch`` (logged as ``seq``) was learned; the ticket ``durable`` waits for."""
        ...

    def is_durable(self, ticket: int) -> bool:
        """Whether what the ticket names is durable already (idempotent retries are
        answered only then)."""
        ...

    async def durable(self, ticket: int) -> None:
        """Return once what the ticket names survives this process; raises
        ``StoreUnavailable`` when it cannot be made so now (it stays pending)."""
        ...

    async def sync(self) -> None:
        """Make everything learned so far durable and shared now (before snapshots, at
        shutdown, when a stream consumer acknowledges)."""
        ...

    def checkpoint_position(self) -> int:
        """The log position a checkpoint taken now holds (under the learn lock; the log
        starts a new segment, so the older ones can be dropped once it is written)."""
        ...

    def write_checkpoint(self, checkpoint: Checkpoint) -> Path | None:
        """Write a checkpoint into the data directory and drop the log it covers (in a
        worker thread); None without a data directory."""
        ...

    def shared_copy(self, model: Model) -> Model | None:
        """The whole shared model at one point (every worker's flushed state), for
        snapshots and downloads; None when ``model`` is all there is. In a worker thread,
        after ``sync``."""
        ...

    def status(self) -> dict[str, object]:
        """The store's state for ``/readyz``, ``/v1/model`` and ``/metrics``; ``healthy``
        False makes ``/readyz`` answer 503."""
        ...

    async def close(self) -> None:
        ...


def load_model_in(path: Path) -> Model:
    """The ``--model-in`` file a store starts from; a file that cannot be read is a
    configuration error (one line, no traceback)."""
    try:
        return Model.load(path)
    except ModelFileError as exc:
        raise StoreConfigError(f"--model-in {exc}") from None

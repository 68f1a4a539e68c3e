"""Drive a model over a file: parse in other threads, learn in this one.

Both the parse kernels and the learn kernels release the GIL, so on two cores reading a
chunk overlaps with learning the previous one; the throughput is that of the slower stage
instead of the sum of both. A ``Reader`` is run ``PREFETCH_DEPTH`` batches ahead in one
thread (``prefetch``); a reader that parses in threads of its own (``ParallelReader``, for
formats with fixed fields: ``parse_threads()`` of them) is iterated directly, its batches
arriving in file order.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from .batch import Batch
from .model import Model

_DONE = object()


#: batches read ahead of the learner
PREFETCH_DEPTH = 4
#: output array sets a reader may recycle: those queued, the one being learned, the one
#: being filled, and one spare
RECYCLE = PREFETCH_DEPTH + 3


def put_unless_stopped(q: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put ``item`` in a bounded queue, waiting for room unless ``stop`` is set (a consumer
    that went away never takes it); returns whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def prefetch(batches: Iterable[Batch], depth: int = PREFETCH_DEPTH) -> Iterator[Batch]:
    """Iterate ``batches`` produced by a background thread, ``depth`` batches ahead."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if not put_unless_stopped(q, batch, stop):
                    return
            item: object = _DONE
        except BaseException as exc:  # handed to the consumer, which re-raises it
            item = exc
        put_unless_stopped(q, item, stop)

    thread = threading.Thread(target=produce, name="ctr-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)


class Progress:
    """A one-line progress report on stderr: rows, rows/s, running logloss."""

    def __init__(self, stream: TextIO | None = None, every: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self.start = time.perf_counter()
        self.last = self.start
        self.tty = self.stream.isatty()

    def update(self, rows: int, logloss: float | None, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < (self.every if self.tty else 10 * self.every):
            return
        self.last = now
        rate = rows / max(now - self.start, 1e-9)
        ll = "" if logloss is None else f"  logloss {logloss:.6f}"
        end = "\r" if self.tty and not force else "\n"
        self.stream.write(f"rows {rows:,}  {rate:,.0f} rows/s{ll}{end}")
        self.stream.flush()


@dataclass
class RunResult:
    rows: int
    seconds: float
    features: int  # feature occurrences processed (interactions and bias included)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def write_probabilities(out: TextIO, p: np.ndarray) -> None:
    """One probability per line, with every digit (repr round-trips the float)."""
    if p.size:
        out.write("\n".join(map(repr, p.tolist())))
        out.write("\n")


def parse_threads() -> int:
    """Parse threads for a run: one per core this process may use, up to four. Parsing a
    Criteo row (0.65 us) is faster than learning it (about 1 us with names and metrics),
    so the learner sets the pace either way; on two shared cores two parse threads still
    ended the run 4% sooner than one (2.50-2.64 s against 2.58-2.81 s, seven alternating
    pairs at load 2): a parser that the scheduler stops leaves the other running, and the
    parallel reader reuses its buffers where the sequential one takes new pages."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without affinity
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def run_model(model: Model, batches: Iterable[Batch], *, learn: bool = True,
        predictions: TextIO | None = None, progress: Progress | None = None,
        on_batch: Callable[[Batch, np.ndarray], None] | None = None,
        before_batch: Callable[[Batch], None] | None = None) -> RunResult:
    """Learn (progressively) or predict every batch; optional per-row probabilities.
    ``before_batch`` runs in this thread before each batch is used (a shared state store
    fetches and flushes there); ``on_batch`` after it."""
    start = time.perf_counter()
    rows = 0
    features = 0
    # a reader with parse threads of its own needs no prefetch thread (and must see the
    # request for the next batch only once the last one is learned: it recycles buffers)
    source = batches if getattr(batches, "threaded", False) else prefetch(batches)
    for batch in source:
        if before_batch is not None:
            before_batch(batch)
        if learn:
            p = model.learn(batch)
        else:
            p, _ = model.predict(batch)
        rows += batch.rows
        features += batch.nnz
        if predictions is not None:
            write_probabilities(predictions, p)
        if on_batch is not None:
            on_batch(batch, p)
        if progress is not None:
            progress.update(rows, model.metrics.logloss if learn else None)
    seconds = time.perf_counter() - start
    if progress is not None and rows:
        progress.update(rows, model.metrics.logloss if learn else None, force=True)
    return RunResult(rows, seconds, features)

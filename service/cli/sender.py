"""Send event bodies to a server with a few requests in flight, answers back in file order.

Every training batch carries an Idempotency-Key, kept across its retries (connection
failures, 503, 409; with backoff, honouring Retry-After), so a replay through a server
restart ends with every event learned exactly once.

Used by ``ctr replay`` (``/v1/train``) and ``ctr predict --url`` (``/v1/predict``). Each of
the ``concurrency`` worker threads owns one client with one keep-alive connection; bodies
are converted by a reader thread ahead of them (the converter releases the GIL), and the
answers are handed back in the order of the file, whatever order they arrive in. With one
worker, the server receives the batches, and so learns the rows, in exactly file order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from clients import CTRClient, ValidationError
from clients._wire import new_key
from clients.results import PredictResult, TrainResult
from ftrl_core.readers import BadLine, BadLineError
from ftrl_core.readers.events import EventBatch
from ftrl_core.trainer import prefetch

_STOP = object()
#: attempts of one batch (connection failures, 503, 409), each after a backoff of at most
#: ``MAX_BACKOFF`` s: a replay rides out a server restart of about a minute
RETRIES = 40
MAX_BACKOFF = 2.0


@dataclass
class Answer:
    """One batch as the server took it (fewer events if bad ones were dropped)."""

    batch: EventBatch
    result: TrainResult | PredictResult
    dropped: list[BadLine] = field(default_factory=list)


def _bad_events(err: ValidationError, batch: EventBatch) -> list[tuple[int, BadLine]]:
    """The events a 422 names, as (index in the batch, bad line); empty if it names none."""
    out = []
    for e in err.errors:
        i = e.get("index")
        if isinstance(i, int) and 0 <= i < batch.rows:
            a, b = (int(x) for x in batch.spans[i])
            text = batch.body[a:min(b, a + 80)].decode("utf-8", "backslashreplace")
            out.append((i, BadLine(int(batch.lines[i]), str(e.get("field") or ""),
                                   str(e.get("detail") or "rejected by the server"), text)))
    return out


class Sender:
    """Post batches to ``endpoint`` with ``concurrency`` requests in flight."""

    def __init__(self, url: str, endpoint: Literal["train", "predict"], *,
                 api_key: str | None = None, concurrency: int = 4, timeout: float = 60.0,
                 skip_bad_lines: bool = False, source: str = "",
                 retries: int = RETRIES) -> None:
        if concurrency < 1:
            raise ValueError(f"--concurrency must be >= 1, got {concurrency}")
        self.url, self.endpoint, self.api_key = url, endpoint, api_key
        self.concurrency, self.timeout = int(concurrency), timeout
        self.skip_bad_lines, self.source = skip_bad_lines, source
        self._clients = [CTRClient(url, api_key, timeout=timeout, max_connections=1,
                                   retries=retries, max_backoff=MAX_BACKOFF)
                         for _ in range(self.concurrency)]

    def _post(self, client: CTRClient, batch: EventBatch) -> Answer:
        dropped: list[BadLine] = []
        while True:
            try:
                if self.endpoint == "train":  # one key per body: its retries are its own
                    return Answer(batch, client.train(batch.body, new_key()), dropped)
                return Answer(batch, client.predict(batch.body), dropped)
            except ValidationError as err:
                bad = _bad_events(err, batch)
                if not bad:
                    raise
                if not self.skip_bad_lines:
                    raise BadLineError(self.source, bad[0][1]) from err
                # the server rejected the whole batch and learned none of it: send the rest
                dropped.extend(b for _, b in bad)
                batch = batch.without([i for i, _ in bad])
                if batch.rows == 0:
                    result = (TrainResult([], 0, 0) if self.endpoint == "train"
                              else PredictResult([], [], 0))
                    return Answer(batch, result, dropped)

    def _worker(self, client: CTRClient, work: queue.Queue[object], done: dict[int, object],
                cond: threading.Condition) -> None:
        with client:
            while True:
                item = work.get()
                if item is _STOP:
                    return
                seq, batch = cast(tuple[int, EventBatch], item)
                try:
                    answer: object = self._post(client, batch)
                except BaseException as exc:  # handed to the caller, which re-raises it
                    answer = exc
                with cond:
                    done[seq] = answer
                    cond.notify_all()

    def run(self, batches: Iterable[EventBatch]) -> Iterator[Answer]:
        """Answers in the order of ``batches``; stops at the first failure (re-raised).
        A sender runs once."""
        if not self._clients:
            raise RuntimeError("a Sender runs once")
        work: queue.Queue[object] = queue.Queue()
        done: dict[int, object] = {}
        cond = threading.Condition()
        threads = [threading.Thread(target=self._worker, args=(client, work, done, cond),
                                    name=f"ctr-send-{i}", daemon=True)
                   for i, client in enumerate(self._clients)]
        self._clients = []
        for t in threads:
            t.start()
        window = 2 * self.concurrency
        sent = 0
        nxt = 0
        # the reader thread of the trainer; it only hands objects over
        source = cast(Iterator[EventBatch], prefetch(cast(Iterable[Any], batches)))
        exhausted = False
        try:
            while True:
                while not exhausted and sent - nxt < window:
                    try:
                        work.put((sent, next(source)))
                        sent += 1
                    except StopIteration:
                        exhausted = True
                if nxt == sent:
                    return
                with cond:
                    while nxt not in done:
                        cond.wait()
                    answer = done.pop(nxt)
                nxt += 1
                if isinstance(answer, BaseException):
                    raise answer
                yield answer  # type: ignore[misc]
        finally:
            try:  # on a failure, send nothing more
                while True:
                    work.get_nowait()
            except queue.Empty:
                pass
            for _ in threads:
                work.put(_STOP)
            close = getattr(source, "close", None)
            if close is not None:
                close()
            for t in threads:
                t.join(timeout=self.timeout)

"""A consumer's life: open the state store and the learner service the way ``ctr serve``
does, run the consumer, close without a flush if it failed (``consumer`` says why)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import redis
from redis.exceptions import RedisError

from ftrl_core.stores.errors import StateStoreError as CoreStoreError
from ftrl_core.stores.urls import parse_state_url

from ..learner import LearnerService
from ..settings import Settings
from ..startup import check_startup, model_builder
from ..stores import StateStoreError, open_store
from ..stores.redis import RedisStore
from .consumer import ConsumerError, StreamConsumer
from .options import ConsumerOptions

#: the store's own flush policy: never (the consumer flushes, after recording what the
#: flush will carry)
NEVER = 1 << 62


def check_source(url: str) -> None:
    parsed = parse_state_url(url)
    if parsed.scheme != "redis" or len(parsed.shards) != 1:
        raise ConsumerError(f"--source {url}: one redis://host:port[/db] URL is needed")


async def consume(settings: Settings, options: ConsumerOptions, source_url: str, *,
                  on_flush: Callable[[StreamConsumer], None] | None = None,
                  handle_signals: bool = False) -> dict[str, Any]:
    """Run a consumer until it stops; returns its figures (``StreamConsumer``'s counts, its
    progressive metrics, the group's totals). SIGTERM and SIGINT (with ``handle_signals``)
    stop it after the batch in hand, flushed and acknowledged."""
    try:
        options.check()
        check_startup(settings)
        check_source(source_url)
    except (ValueError, StateStoreError, CoreStoreError) as exc:
        raise ConsumerError(str(exc)) from None
    shared = ConsumerError(f"--state {settings.state}: the consumer acknowledges events once "
                           "they are in a shared store: use --state redis://HOST:PORT")
    if settings.state_scheme == "memory":
        raise shared
    source = redis.Redis.from_url(source_url)
    try:
        store = open_store(settings.state, settings.model_name, sync_every_events=NEVER,
                           buckets=settings.buckets)
    except StateStoreError as exc:
        source.close()
        raise ConsumerError(str(exc)) from None
    if not isinstance(store, RedisStore):
        store.close()
        source.close()
        raise shared
    service = LearnerService(settings, store, model_builder(settings))
    ok = False
    try:
        await service.open()
        await service.warm_up()
        consumer = StreamConsumer(source, service, store.state, options, on_flush)
        with _stop_on_signals(consumer.stop, handle_signals):
            counts = await consumer.run()
        # from the first entry to the last flush: not the wait for a stream still empty
        start = consumer.first_entry
        seconds = 0.0 if start is None else max(consumer.last_flush - start, 0.0)
        result = {"consumer": options.consumer, **vars(counts),
                  **{f"progressive_{k}": v for k, v in consumer.metrics.as_dict().items()},
                  "seconds": seconds,
                  "events_per_second": counts.learned / seconds if seconds > 0 else 0.0,
                  "model_rows": service.model.rows, "group": consumer.group_stats()}
        ok = True
        return result
    except (StateStoreError, CoreStoreError, RedisError) as exc:
        raise ConsumerError(str(exc)) from None
    finally:
        if ok:
            await service.close()
        else:  # no final flush: it could carry a flush id events of a refused batch hold
            store.state.close()
        source.close()


@contextlib.contextmanager
def _stop_on_signals(stop: Callable[[], None], enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

"""A consumer's life: open the state store and the learner service the way ``ctr serve``
does, run the consumer, close without a flush if it failed (``consumer`` says why). The
join consumer's (``joined``): a memory store on a data directory, closed with a checkpoint
whatever happened (the log holds what was applied, with the streams' marks)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from redis.exceptions import RedisError

from ftrl_core.model import Model

from ..learner import LearnerService
from ..settings import Settings
from ..startup import check_startup, model_builder, store_for
from ..stores import StoreError, parse_state_url
from ..stores.redis import RedisStore
from .consumer import ConsumerError, StreamConsumer
from .joined import JoinConsumer, JoinOptions
from .options import ConsumerOptions


def _bounds_counts(model: Model) -> dict[str, int]:
    """With --admit / --evict-idle / --max-coordinates: this consumer's admitted, refused
    and evicted (by its sweeps) counts, and the live coordinates (the shared state's after
    its last sweep, else its cache's)."""
    bounds = model.optimizer.bounds
    if bounds is None:
        return {}
    counts = bounds.counts(model.optimizer.table)
    return {"admitted": counts["admitted"], "refused": counts["refused"],
            "evicted": counts["evicted"], "live_coordinates": counts["live"]}


def check_source(url: str) -> None:
    parsed = parse_state_url(url)
    if parsed.scheme != "redis" or len(parsed.shards) != 1:
        raise ConsumerError(f"--source {url}: one redis://host:port[/db] URL is needed")


def _check(settings: Settings, options: ConsumerOptions | JoinOptions, source_url: str
           ) -> None:
    """The options, the settings and the source, each refused as one ConsumerError line."""
    try:
        options.check()
        check_startup(settings)
        check_source(source_url)
    except (ValueError, StoreError) as exc:
        raise ConsumerError(str(exc)) from None


async def consume(settings: Settings, options: ConsumerOptions, source_url: str, *,
                  on_flush: Callable[[StreamConsumer], None] | None = None,
                  handle_signals: bool = False) -> dict[str, Any]:
    """Run a consumer until it stops; returns its figures (``StreamConsumer``'s counts, its
    progressive metrics, the group's totals). SIGTERM and SIGINT (with ``handle_signals``)
    stop it after the batch in hand, flushed and acknowledged."""
    _check(settings, options, source_url)
    shared = ConsumerError(f"--state {settings.state}: the consumer acknowledges events once "
                           "they are in a shared store: use --state redis://HOST:PORT")
    if settings.state_scheme == "memory":
        raise shared
    source = redis.Redis.from_url(source_url)
    try:
        # the consumer flushes, after recording what the flush will carry: the store never
        # flushes on its own (its policy is the consumer's, ``StreamConsumer.policy``)
        store = store_for(settings.model_copy(update={"data_dir": None}), auto_flush=False)
    except StoreError as exc:
        source.close()
        raise ConsumerError(str(exc)) from None
    if not isinstance(store, RedisStore):
        await store.close()
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
                  "model_rows": service.model.rows, "group": consumer.group_stats(),
                  **_bounds_counts(service.model)}
        ok = True
        return result
    except (StoreError, RedisError) as exc:
        raise ConsumerError(str(exc)) from None
    finally:
        if ok:
            await service.close()
        else:  # no final flush: it could carry a flush id events of a refused batch hold
            await store.close()
        source.close()


async def consume_joined(settings: Settings, options: JoinOptions, source_url: str, *,
                         model_out: Path | None = None, handle_signals: bool = False
                         ) -> dict[str, Any]:
    """Run a join consumer until it stops; returns its figures (``JoinCounts``, the join's
    status, the group's totals). ``model_out``: the model is saved there at the end."""
    _check(settings, options, source_url)
    if settings.state_scheme != "memory" or settings.data_dir is None:
        raise ConsumerError("the join consumer acknowledges entries once they are in the "
                            "write-ahead log: it needs --data-dir, and the memory state "
                            f"store (--state {settings.state})")
    if not settings.join_enabled:
        raise ConsumerError("the attribution join runs with the memory store and one worker")
    source = redis.Redis.from_url(source_url)
    try:
        store = store_for(settings)
    except StoreError as exc:
        source.close()
        raise ConsumerError(str(exc)) from None
    service = LearnerService(settings, store, model_builder(settings))
    tasks: list[asyncio.Task[None]] = []
    try:
        await service.open()
        await service.warm_up()
        if settings.snapshot_every > 0:
            tasks.append(asyncio.create_task(service.snapshot_loop(settings.snapshot_every)))
        consumer = JoinConsumer(source, service, options)
        start = time.perf_counter()
        with _stop_on_signals(consumer.stop, handle_signals):
            counts = await consumer.run()
        if model_out is not None:
            frozen = await service.consistent_copy()
            await asyncio.to_thread(frozen.save, model_out)
        first = consumer.first_entry or start
        seconds = max(consumer.last_ack - first, 0.0) if consumer.last_ack else 0.0
        events = counts.impressions + counts.clicks
        return {"consumer": options.consumer, **vars(counts), "seconds": seconds,
                "events_per_second": events / seconds if seconds > 0 else 0.0,
                "model_rows": service.model.rows, "join": await service.join_status(),
                "group": consumer.group_stats()}
    except (StoreError, RedisError) as exc:
        raise ConsumerError(str(exc)) from None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await service.close()
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

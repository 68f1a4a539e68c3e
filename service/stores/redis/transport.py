"""Talking to the shards: a flush's script calls sent to every shard and their replies
read (in parallel across shards, pipelined per cluster master), with the retries, redirects
(MOVED, ASK) and waits (a paused store, a migrating slot) that keep a flush applied once;
and ordinary commands retried while the failure is transient."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
from redis.exceptions import AskError, MovedError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from ..errors import StoreConfigError, StoreError, StoreUnavailable
from . import replies
from .cluster import MAX_REDIRECTS, WAIT, SlotGroup
from .shard import TRANSIENT, Shard, is_noscript

log = logging.getLogger(__name__)


class Shards(Protocol):
    """What talking to the shards needs to know (``state.RedisState`` is one)."""

    @property
    def shards(self) -> Sequence[Shard] | Sequence[SlotGroup]: ...

    @property
    def retries(self) -> int: ...

    @property
    def pause_timeout(self) -> float: ...

    @property
    def redirects(self) -> dict[str, int]:
        """Cluster replies met by flush calls: MOVED, ASK, and waits."""
        ...

    def script(self) -> str:
        """The flush script, loaded again on a shard that lost it (a restart)."""
        ...


def roundtrip(state: Shards, payloads: dict[int, bytes]) -> dict[int, Any]:
    """Send every shard's call, then read the replies (the shards work in parallel;
    slot groups on one master are pipelined on its connection). A call whose reply is
    lost is resent as is (its flush id makes that safe); one a cluster redirects (MOVED,
    ASK) is resent where the reply says; one refused while a snapshot pauses flushes or
    a slot migrates (TRYAGAIN) is resent after a wait, until ``pause_timeout``."""
    replies: dict[int, Any] = {}
    todo = dict(payloads)
    attempts = rounds = 0
    deadline = time.monotonic() + state.pause_timeout
    while todo:
        sent = []
        failed = waiting = False
        for i, payload in todo.items():
            try:
                state.shards[i].send(payload)
                sent.append(i)
            except TRANSIENT as exc:
                _failed(state, i, exc, attempts)
                failed = True
        for i in sent:
            shard = state.shards[i]
            try:
                reply = shard.read()
            except TRANSIENT as exc:
                _failed(state, i, exc, attempts)
                failed = True
                continue
            except AskError as exc:  # MovedError too (a subclass): resent at once
                if not isinstance(shard, SlotGroup):
                    raise StoreConfigError(f"shard {shard.url}: {exc} (a cluster node: use "
                                     "--state redis+cluster://)") from exc
                state.redirects["moved" if isinstance(exc, MovedError) else "ask"] += 1
                shard.redirected(exc)
                continue
            except WAIT:
                state.redirects["wait"] += 1
                waiting = True
                continue
            except Exception as exc:
                if is_noscript(exc):  # a restarted shard lost its scripts
                    retry(state, shard, lambda s: s.load_script(state.script()))
                    continue
                for j in sent:  # replies left unread would answer the next calls
                    state.shards[j].reset()
                raise StoreUnavailable(f"shard {shard.url}: {exc}") from exc
            if reply[0] == b"paused":
                waiting = True
                continue
            replies[i] = reply
            del todo[i]
        rounds += 1
        attempts += failed
        if todo:
            if attempts > state.retries or time.monotonic() > deadline:
                raise StoreUnavailable(f"flush not applied on shard(s) "
                                 f"{', '.join(state.shards[i].url for i in todo)} after "
                                 f"{rounds} attempts; its deltas stay pending")
            if failed or waiting or rounds > MAX_REDIRECTS:  # redirects: resent at once
                time.sleep(min(0.05 * max(attempts, 1), 1.0))
    return replies


def pipeline(state: Shards, i: int, payload: bytes, n: int) -> list[Any]:
    """Send ``n`` commands packed in ``payload`` to shard (or slot group) ``i`` and read
    their replies, an error reply in its place as the exception (the connection stays in
    step). Nothing is resent: a lost connection is reset and raised as ``StoreUnavailable``,
    what ran of the commands unknown, so this carries only calls safe either way (reads, a
    transaction applied whole or not at all)."""
    target = state.shards[i]
    replies: list[Any] = []
    try:
        target.send(payload)
        for k in range(n):
            try:
                replies.append(target.read() if k == 0 else target.read_next())
            except ResponseError as exc:
                replies.append(exc)
    except TRANSIENT as exc:
        target.reset()
        raise StoreUnavailable(f"shard {target.url}: {exc}") from exc
    return replies


def pipeline_raw(state: Shards, i: int, payload: bytes, n: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pipeline``, its replies read off the socket as bytes (``replies``; a compaction's
    thousands of them): (the bytes, each reply's offset in them, each reply's error items).
    Nothing is resent; a lost connection or a stream out of step is reset and raised as
    ``StoreUnavailable``."""
    target = state.shards[i]
    buf = np.empty(max(1 << 16, 2 * n * 16), dtype=np.uint8)
    end = pos = done = 0
    try:
        target.send(payload)
        sock, ahead = target.raw_socket()
        want = n + ahead
        starts = np.empty(want, dtype=np.int64)
        errors = np.empty(want, dtype=np.int64)
        while done < want:
            if end == buf.size:
                buf = np.concatenate([buf, np.empty(buf.size, dtype=np.uint8)])
            got = sock.recv_into(memoryview(buf)[end:])  # type: ignore[arg-type]
            if not got:
                raise RedisConnectionError("the connection closed mid-reply")
            end += got
            pos, done = replies.scan(buf, pos, end, want, starts, errors, done)
        if pos != end:
            raise RedisConnectionError(f"{end - pos} bytes after the replies expected")
    except TRANSIENT as exc:
        target.reset()
        raise StoreUnavailable(f"shard {target.url}: {exc}") from exc
    return buf[:end], starts[ahead:], errors[ahead:]


def _failed(state: Shards, i: int, exc: BaseException, attempts: int) -> None:
    log.warning("shard %s: %s (attempt %d); retrying", state.shards[i].url, exc, attempts + 1)
    state.shards[i].reset()


def retry(state: Shards, shard: Shard | SlotGroup, fn: Any) -> Any:
    """``fn(shard)``, retried after a transient failure (``retries`` times, the connection
    reset) or a wait reply (until ``pause_timeout``)."""
    attempt = 0
    deadline = time.monotonic() + state.pause_timeout
    while True:
        try:
            return fn(shard)
        except TRANSIENT as exc:
            if attempt == state.retries:
                raise StoreUnavailable(f"shard {shard.url} unreachable: {exc}") from exc
            shard.reset()
            attempt += 1
            time.sleep(min(0.05 * attempt, 1.0))
        except WAIT as exc:  # a slot being migrated, or not served for now
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"shard {shard.url}: {exc}") from exc
            time.sleep(0.05)
        except RedisError as exc:  # refused (out of memory, read-only replica...): not now
            raise StoreUnavailable(f"shard {shard.url}: {exc}") from exc


def call(state: Shards, i: int, method: str, *args: Any, **kw: Any) -> Any:
    """A redis-py command on shard (or slot group) ``i``, following redirects."""
    return retry(state, state.shards[i], lambda s: s.call(method, *args, **kw))


@contextlib.contextmanager
def driver_errors(what: str) -> Iterator[None]:
    """Wrap redis-py's errors (and socket errors) raised by a bulk read or write."""
    try:
        yield
    except StoreError:
        raise
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"{what}: {exc}") from exc

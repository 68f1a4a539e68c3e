"""Is every shard answering? A thread PINGs each shard (each master of a cluster) on a
connection of its own every ``EVERY`` seconds; a shard that does not answer within
``TIMEOUT`` marks the store degraded (``/readyz`` 503, training refused with 503) until it
answers again. The flushes' own connections are not used: a flush may legitimately take
longer than a PING, and a frozen shard (SIGSTOP) must be seen while a flush waits on it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)

EVERY = 0.5
TIMEOUT = 1.0


class ShardHealth:
    def __init__(self, urls: Callable[[], list[str]]) -> None:
        self._urls = urls
        self._clients: dict[str, redis.Redis] = {}
        self.down: dict[str, str] = {}  # url -> why
        self.checked_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def healthy(self) -> bool:
        return not self.down

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ctr-shard-health",
                                        daemon=True)
        self._thread.start()

    def check(self) -> None:
        down = {}
        for url in self._urls():
            client = self._clients.get(url)
            if client is None:
                client = self._clients[url] = redis.Redis.from_url(
                    url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
            try:
                client.ping()
            except (redis.RedisError, OSError) as exc:
                down[url] = f"no answer to PING within {TIMEOUT:g} s ({exc})"
                client.connection_pool.disconnect()
        for url, why in down.items():
            if url not in self.down:
                log.warning("shard %s degraded: %s", url, why)
        for url in self.down:
            if url not in down:
                log.info("shard %s answers again", url)
        self.down = down
        self.checked_at = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(EVERY):
            try:
                self.check()
            except Exception:  # a bad URL was refused at start: this is a bug, keep probing
                log.exception("shard health check failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * TIMEOUT + EVERY)
        for client in self._clients.values():
            client.close()

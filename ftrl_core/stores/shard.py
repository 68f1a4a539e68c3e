"""One Redis shard: a redis-py client for ordinary commands and one raw connection that
sends pre-packed RESP payloads (flush calls) and reads their replies with hiredis."""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import StateStoreError

log = logging.getLogger(__name__)

#: errors after which a call may or may not have run: retried with the same flush id
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


class Shard:
    def __init__(self, url: str, index: int, socket_timeout: float = 30.0) -> None:
        self.url = url
        self.index = index
        try:
            self.client = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                               socket_connect_timeout=socket_timeout)
        except (ValueError, RedisError) as exc:
            raise StateStoreError(f"--state: shard {url}: {exc}") from None
        self._conn: Any = None
        self.sha: str | None = None

    @property
    def conn(self) -> Any:
        if self._conn is None:
            self._conn = self.client.connection_pool.get_connection()
        return self._conn

    def load_script(self, source: str) -> str:
        self.sha = str(self.client.script_load(source))
        return self.sha

    def send(self, payload: bytes) -> None:
        self.conn.send_packed_command([payload], check_health=False)

    def read(self) -> Any:
        return self.conn.read_response()

    def reset(self) -> None:
        """Drop the raw connection (after an error its stream position is unknown)."""
        if self._conn is not None:
            self._conn.disconnect()
            self.client.connection_pool.release(self._conn)
            self._conn = None

    def close(self) -> None:
        self.reset()
        self.client.close()


def is_noscript(exc: Exception) -> bool:
    """A server that lost its scripts (restarted): redis-py raises ``NoScriptError``, whose
    message has lost the NOSCRIPT prefix."""
    return isinstance(exc, NoScriptError) or (
        isinstance(exc, ResponseError) and str(exc).startswith("NOSCRIPT"))

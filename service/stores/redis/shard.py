"""One Redis server: a redis-py client for ordinary commands and one raw connection that
sends pre-packed RESP payloads (flush calls) and reads their replies with hiredis. A
standalone shard is one; so is each master of a cluster (``cluster.ClusterMap``)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import StoreConfigError

log = logging.getLogger(__name__)

#: errors after which a call may or may not have run: retried with the same flush id
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


class Shard:
    def __init__(self, url: str, index: int, socket_timeout: float = 30.0,
                 prefix: str = "") -> None:
        self.url = url
        self.index = index
        self.prefix = prefix  # of the model's keys here (a cluster's slot groups have theirs)
        #: bumped when the raw connection is dropped: a reply still expected on the old one
        #: is lost (slot groups pipelined on one master's connection check it)
        self.epoch = 0
        try:
            self.client = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                               socket_connect_timeout=socket_timeout)
        except (ValueError, RedisError) as exc:
            raise StoreConfigError(f"--state: shard {url}: {exc}") from None
        self._conn: Any = None
        self.sha: str | None = None

    @property
    def conn(self) -> Any:
        if self._conn is None:
            self._conn = self.client.connection_pool.get_connection()
        return self._conn

    @property
    def node(self) -> Shard:
        """The server whose raw connection carries this target's calls: itself."""
        return self

    def call(self, method: str, *args: Any, **kw: Any) -> Any:
        try:
            return getattr(self.client, method)(*args, **kw)
        except (AskError, ClusterCrossSlotError) as exc:  # MOVED is an AskError too
            raise StoreConfigError(f"--state: shard {self.url} is a Redis Cluster node "
                                  f"({exc}): use --state redis+cluster://HOST:PORT") from None

    def load_script(self, source: str) -> str:
        self.sha = str(self.client.script_load(source))
        return self.sha

    def send(self, payload: bytes) -> None:
        self.conn.send_packed_command([payload], check_health=False)

    def read(self) -> Any:
        return self.conn.read_response()

    def read_next(self) -> Any:
        """The reply to the next of several commands sent in one payload."""
        return self.conn.read_response()

    def raw_socket(self) -> tuple[Any, int]:
        """The socket the last ``send`` wrote to, to read its replies as bytes
        (``transport.pipeline_raw``), and how many replies come ahead of the payload's own
        (none here). redis-py's parser holds no bytes of them: the replies of every payload
        are read whole before the next is sent, and a connection that failed is dropped."""
        return self.conn._sock, 0

    def reset(self) -> None:
        """Drop the raw connection (after an error its stream position is unknown)."""
        self.epoch += 1
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

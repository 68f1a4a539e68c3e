"""``--state`` URLs: ``memory://``; ``redis://host:port[/db][,redis://host:port...]`` (N
standalone shards; order matters, each shard records its index); ``rediss://`` (TLS, via
redis-py's SSL options in the query string, e.g. ``?ssl_cert_reqs=none``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import StateStoreError

MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
REDIS_SCHEMES = ("redis", "rediss")


@dataclass(frozen=True)
class StateURL:
    scheme: str  # "memory" or "redis"
    shards: tuple[str, ...]  # one redis-py URL per shard (empty for memory://)


def parse_state_url(url: str) -> StateURL:
    parts = [p.strip() for p in url.split(",") if p.strip()]
    if not parts:
        raise StateStoreError("--state: empty URL")
    schemes = {urlsplit(p).scheme for p in parts}
    if schemes == {"memory"} and len(parts) == 1:
        return StateURL("memory", ())
    if schemes <= set(REDIS_SCHEMES):
        for p in parts:
            u = urlsplit(p)
            if not u.hostname:
                raise StateStoreError(f"--state {url}: {p!r} has no host")
            try:
                u.port  # noqa: B018 - validates the port
            except ValueError:
                raise StateStoreError(f"--state {url}: {p!r} has a bad port") from None
        if len(set(parts)) != len(parts):
            raise StateStoreError(f"--state {url}: a shard is listed twice")
        return StateURL("redis", tuple(parts))
    if "redis+cluster" in schemes:
        raise StateStoreError(f"--state {url}: redis+cluster:// is not supported yet; list "
                              "standalone shards instead (redis://a:6379,redis://b:6379)")
    raise StateStoreError(f"--state {url}: unknown scheme(s) {', '.join(sorted(schemes))} "
                          "(supported: memory://, redis://, rediss://; a comma-separated "
                          "list of redis:// URLs makes shards)")


def check_model_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise StateStoreError(f"--model-name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
    return name

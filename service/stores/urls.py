"""``--state`` URLs:

- ``memory://``: the embedded store (nothing shared);
- ``redis://host:port[/db][,redis://host:port...]``: N standalone shards; order matters,
  each shard records its index; ``rediss://`` for TLS (redis-py's SSL options in the query
  string, e.g. ``?ssl_cert_reqs=none``);
- ``redis+cluster://host:port[,host:port...]``: a Redis Cluster, given by one or more of
  its nodes (any of them: the slot map names the rest; later items may repeat the scheme
  or not). The password, if any, is the first item's (``redis+cluster://:pw@h:p,h2:p``)
  and holds for every node; database 0 only (a cluster has no other). The model is split
  into slot groups routed by the cluster's slot map (see ``cluster``).

A cluster URL and standalone ``redis://`` URLs cannot be mixed: they are different
stores. Parsed, a cluster's ``shards`` are its seed nodes as ``redis://`` URLs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from .errors import StoreConfigError

MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
REDIS_SCHEMES = ("redis", "rediss")
CLUSTER_SCHEME = "redis+cluster"


@dataclass(frozen=True)
class StateURL:
    scheme: str  # "memory", "redis" or "redis+cluster"
    shards: tuple[str, ...]  # one redis-py URL per shard or seed node (empty for memory://)


def parse_state_url(url: str) -> StateURL:
    parts = [p.strip() for p in url.split(",") if p.strip()]
    if not parts:
        raise StoreConfigError("--state: empty URL")
    schemes = {urlsplit(p).scheme for p in parts}
    if CLUSTER_SCHEME in schemes:
        return _parse_cluster(url, parts)
    if schemes == {"memory"} and len(parts) == 1:
        return StateURL("memory", ())
    if schemes <= set(REDIS_SCHEMES):
        for p in parts:
            _check_host_port(url, p, urlsplit(p))
        if len(set(parts)) != len(parts):
            raise StoreConfigError(f"--state {url}: a shard is listed twice")
        return StateURL("redis", tuple(parts))
    raise StoreConfigError(f"--state {url}: unknown scheme(s) {', '.join(sorted(schemes))} "
                          "(supported: memory://, redis://, rediss://, redis+cluster://; a "
                          "comma-separated list of redis:// URLs makes shards)")


def _check_host_port(url: str, part: str, u: SplitResult) -> None:
    if not u.hostname:
        raise StoreConfigError(f"--state {url}: {part!r} has no host")
    try:
        u.port  # noqa: B018 - validates the port
    except ValueError:
        raise StoreConfigError(f"--state {url}: {part!r} has a bad port") from None


def _parse_cluster(url: str, parts: list[str]) -> StateURL:
    first = urlsplit(parts[0])
    seeds: list[str] = []
    for p in parts:
        u = urlsplit(p if "://" in p else f"{CLUSTER_SCHEME}://{p}")
        if u.scheme != CLUSTER_SCHEME or first.scheme != CLUSTER_SCHEME:
            other = u.scheme if u.scheme != CLUSTER_SCHEME else first.scheme
            raise StoreConfigError(
                f"--state {url}: {p!r} mixes {other}:// with redis+cluster://; give a cluster "
                "by its nodes (redis+cluster://h1:p1,h2:p2) or standalone shards by redis:// "
                "URLs, not both")
        _check_host_port(url, p, u)
        if u.path.strip("/") not in ("", "0"):
            raise StoreConfigError(f"--state {url}: {p!r} names database {u.path.strip('/')}; "
                                  "a Redis Cluster has database 0 only")
        netloc = u.netloc
        if "@" not in netloc and "@" in first.netloc:  # the first item's password holds
            netloc = first.netloc.rpartition("@")[0] + "@" + netloc
        seeds.append(urlunsplit(("redis", netloc, "", u.query or first.query, "")))
    if len(set(seeds)) != len(seeds):
        raise StoreConfigError(f"--state {url}: a node is listed twice")
    return StateURL(CLUSTER_SCHEME, tuple(seeds))


def check_model_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise StoreConfigError(f"--model-name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
    return name

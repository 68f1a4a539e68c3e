from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from datagen import write_criteo


@pytest.fixture
def criteo_file(tmp_path: Path) -> Path:
    """2,000 Criteo-like rows (seeded)."""
    return write_criteo(tmp_path / "train.tsv", 2000, seed=7)


# -- real `ctr serve` processes (tests/servers.py) ------------------------------------------

from collections.abc import Callable, Iterator  # noqa: E402

from servers import ServerProcess, start_server  # noqa: E402


@pytest.fixture(scope="session")
def ctr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One ``ctr serve --alpha 0.2`` (memory store, snapshots on) for the whole session; its
    model accumulates whatever the tests send, so exact comparisons use ``fresh_server``."""
    workdir = tmp_path_factory.mktemp("ctr_server")
    server = start_server(workdir, "--alpha", "0.2", "--data-dir", str(workdir / "data"))
    yield server
    server.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers of one's own (``fresh_server("--alpha", "0.2", env={...})``); they are
    stopped after the test."""
    started: list[ServerProcess] = []

    def start(*flags: str, env: dict[str, str] | None = None, **kw: object) -> ServerProcess:
        server = start_server(tmp_path / f"server{len(started)}", *flags, env=env, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- real redis-server processes (tests/redis_servers.py) -----------------------------------

from redis_servers import RedisCluster, RedisServer, start_cluster, start_redis  # noqa: E402


@pytest.fixture
def redis_shards(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Two fresh standalone redis-server shards, stopped after the test."""
    servers = [start_redis(tmp_path / f"redis{i}") for i in range(2)]
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A fresh 3-master Redis Cluster for a test module (its tests use their own model
    names), stopped after it."""
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()

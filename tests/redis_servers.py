"""Real ``redis-server`` processes on free loopback ports (never 6379, never a server
someone else started), and a proxy that can swallow a reply, for the Redis state tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != 6379:
            return port


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_redis(workdir: Path, *extra: str) -> RedisServer:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / f"redis-{port}.log"
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--logfile", str(log), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, proc, log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            if server.client().ping():
                return server
        except redis.ConnectionError:
            time.sleep(0.02)
    server.stop()
    raise RuntimeError(f"redis-server on port {port} not ready")


@dataclass
class ReplyDropper:
    """A TCP proxy in front of a Redis server; ``drop_next_reply()`` makes it swallow the
    next bytes the server sends and close the client's connection (a lost reply: the
    command ran, the client never hears)."""

    target_port: int
    port: int = 0
    drops: int = 0
    _drop: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> ReplyDropper:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def drop_next_reply(self) -> None:
        self._drop.set()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if replies and self._drop.is_set():
                    self._drop.clear()
                    self.drops += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()


# -- a Redis Cluster of standalone-started masters --------------------------------------------

SLOTS = 16384


@dataclass
class RedisCluster:
    """Masters of one Redis Cluster (no replicas), each a ``RedisServer`` started with
    ``--cluster-enabled yes``; slots split in equal ranges in node order."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node_id(self, node: RedisServer) -> str:
        return str(node.client().execute_command("CLUSTER", "MYID").decode())

    def owner(self, slot: int) -> RedisServer:
        """The master that serves ``slot`` now (by the first node's slot map)."""
        for start, end, primary, *_ in self.nodes[0].client().execute_command(
                "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                port = int(primary[1])
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"slot {slot} is not served")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node says ``cluster_state:ok`` and maps every slot to the same
        masters (gossip has converged)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [n.client().execute_command("CLUSTER", "INFO") for n in self.nodes]
            maps = [sorted((s[0], s[1], int(s[2][1])) for s in n.client().execute_command(
                "CLUSTER", "SLOTS")) for n in self.nodes]
            if all(b"cluster_state:ok" in i for i in infos) and \
                    all(m == maps[0] for m in maps) and \
                    sum(e - s + 1 for s, e, _ in maps[0]) == SLOTS:
                return
            time.sleep(0.05)
        raise RuntimeError("the cluster did not reach cluster_state:ok")

    def migrate_keys(self, slot: int, source: RedisServer, target: RedisServer,
                     limit: int | None = None) -> int:
        """MIGRATE the keys of ``slot`` (at most ``limit``) from ``source`` to ``target``,
        after ``start_migration``; returns how many moved."""
        src = source.client()
        moved = 0
        while limit is None or moved < limit:
            count = 100 if limit is None else min(100, limit - moved)
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, count)
            if not keys:
                break
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 10_000,
                                "KEYS", *keys)
            moved += len(keys)
        return moved

    def start_migration(self, slot: int, source: RedisServer, target: RedisServer) -> None:
        target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING",
                                        self.node_id(source))
        source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING",
                                        self.node_id(target))

    def finish_migration(self, slot: int, target: RedisServer) -> None:
        """Give ``slot`` to ``target`` on every node (the target first, as redis-cli does),
        once its keys are moved."""
        tid = self.node_id(target)
        for node in [target, *(n for n in self.nodes if n is not target)]:
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", tid)
        self.wait_ok()

    def move_slot(self, slot: int, target: RedisServer) -> int:
        """Migrate ``slot`` with all its keys to ``target`` (the whole redis-cli recipe)."""
        source = self.owner(slot)
        self.start_migration(slot, source, target)
        moved = self.migrate_keys(slot, source, target)
        self.finish_migration(slot, target)
        return moved

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def start_cluster(workdir: Path, masters: int = 3) -> RedisCluster:
    """``masters`` fresh nodes on free loopback ports (data and bus ports), joined with
    CLUSTER MEET, the slots split with CLUSTER ADDSLOTSRANGE; ready when the cluster is ok.
    Each node keeps its cluster config file in its own directory."""
    nodes: list[RedisServer] = []
    try:
        for i in range(masters):
            d = workdir / f"node{i}"
            nodes.append(start_redis(d, "--cluster-enabled", "yes", "--cluster-config-file",
                                     str(d / "nodes.conf"), "--cluster-port",
                                     str(free_port()), "--cluster-node-timeout", "5000"))
        cluster = RedisCluster(nodes)
        first = nodes[0].client()
        for n in nodes[1:]:
            bus = n.client().config_get("cluster-port")["cluster-port"]
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", n.port, bus)
        for i, n in enumerate(nodes):
            start, end = i * SLOTS // masters, (i + 1) * SLOTS // masters - 1
            n.client().execute_command("CLUSTER", "ADDSLOTSRANGE", start, end)
        cluster.wait_ok()
        return cluster
    except BaseException:
        for n in nodes:
            n.stop()
        raise

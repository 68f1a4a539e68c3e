"""Redis Cluster under the state store: slot groups routed by the cluster's slot map.

A cluster is not N independent shards: a key's server is decided by its hash slot, slots
move between masters, and a server answers a command for a slot it does not serve with a
redirect. The state store keeps its one-script-call-per-target flush by splitting a model
into G **slot groups** (virtual shards, ``CLUSTER_GROUPS`` unless the stored model says
otherwise: the count is part of every group's identity record, so all workers agree):

- group g holds the coordinates the layouts route to shard g of G (bucket % G, chunk % G),
  under the prefix ``ctr:{<name>:<g>}:``. The braces are a hash tag: every key of a group
  (its buckets or chunks, ``config``, ``f:<id>``, ``pause``; group 0 also the counters
  ``t`` and the field list) hashes to one slot, so one script call touches one slot;
- a group's calls go to the master that serves its slot in the slot map (``CLUSTER SLOTS``,
  asked of any known node); groups whose slots one master serves share its connection:
  their calls are pipelined (all sent, then the replies read in order);
- each call declares two keys of its group, its flush-id key and ``pause``, so the server
  checks the slot before the script runs: **MOVED** (the slot has another master) refreshes
  the map and the call is resent there; **ASK** (the slot is being migrated and the
  declared keys are not on the source) sends ``ASKING`` and the call to the named node
  once; **TRYAGAIN** and **CLUSTERDOWN** wait and resend. A script that declares no keys
  would run on whichever node it reaches, and mid-migration write keys on both sides of the
  slot; declaring keys of which one does not exist yet (a new flush id) makes a migrating
  slot answer ASK on its source and TRYAGAIN on its target ("multiple keys during
  rehashing"), so no flush runs on a slot whose keys are split between two masters: it
  waits until the migration ends and then follows MOVED. A resend is safe: the refused call
  never ran, and a call that ran recorded its flush id in its own slot, which moves with it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

from ..errors import StoreError
from .shard import TRANSIENT, Shard

log = logging.getLogger(__name__)

SLOTS = 16384
#: slot groups of a new model: enough to spread over a few masters (each group is one slot,
#: so one master holds it whole), few enough that a flush stays a handful of calls
CLUSTER_GROUPS = 16
#: replies after which a call waits and is sent again (the slot is being migrated, or the
#: cluster has an unserved slot): not failures
WAIT = (TryAgainError, ClusterDownError)
MAX_REDIRECTS = 16
_ASKING = b"*1\r\n$6\r\nASKING\r\n"


def group_prefix(name: str, group: int) -> str:
    return f"ctr:{{{name}:{group}}}:"


class ClusterMap:
    """Which master serves each slot, and one ``Shard`` (client and raw connection) per
    master met; refreshed from ``CLUSTER SLOTS`` when a reply says the map is stale."""

    def __init__(self, seeds: Sequence[str], socket_timeout: float = 30.0) -> None:
        self.socket_timeout = socket_timeout
        first = urlsplit(seeds[0])
        self._auth = first.netloc.rpartition("@")[0]  # nodes the map names: same password
        self._query = first.query
        self.nodes: dict[tuple[str, int], Shard] = {}
        for url in seeds:
            u = urlsplit(url)
            self._add((u.hostname or "127.0.0.1", u.port or 6379), url)
        self.owner: list[Shard | None] = [None] * SLOTS
        self.stale = True
        self.refreshes = 0
        #: the flush script's source, loaded on a master before it is first sent a call
        self.script: str | None = None

    def _add(self, addr: tuple[str, int], url: str | None = None) -> Shard:
        if url is None:
            host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
            netloc = f"{self._auth}@{host}:{addr[1]}" if self._auth else f"{host}:{addr[1]}"
            url = urlunsplit(("redis", netloc, "", self._query, ""))
        node = Shard(url, len(self.nodes), self.socket_timeout)
        self.nodes[addr] = node
        return node

    def node(self, host: str, port: int) -> Shard:
        return self.nodes.get((host, port)) or self._add((host, port))

    def refresh(self) -> None:
        """Read the slot map from the first known node that answers."""
        errors = []
        for (host, _), node in list(self.nodes.items()):
            try:
                reply = node.client.execute_command("CLUSTER", "SLOTS")
            except (*TRANSIENT, RedisError) as exc:
                errors.append(f"{node.url}: {exc}")
                continue
            owner: list[Shard | None] = [None] * SLOTS
            for start, end, primary, *_ in reply:
                # a node that does not know its own address answers an empty host
                where = primary[0].decode() if isinstance(primary[0], bytes) else primary[0]
                master = self.node(where or host, int(primary[1]))
                owner[int(start):int(end) + 1] = [master] * (int(end) - int(start) + 1)
            self.owner = owner
            self.stale = False
            self.refreshes += 1
            return
        raise StoreError("no cluster node answered CLUSTER SLOTS: " + "; ".join(errors))

    def node_for(self, slot: int) -> Shard:
        if self.stale or self.owner[slot] is None:
            try:
                self.refresh()
            except StoreError:
                if self.owner[slot] is None:
                    raise
                # keep the old map: the call to the node it names fails or redirects
        node = self.owner[slot]
        if node is None:
            raise StoreError(f"slot {slot} is not served by any cluster node")
        return node

    def moved(self, exc: AskError) -> None:
        """A MOVED reply: its node serves the slot now. The whole map is read again (a
        resharding moves many slots), then the reply's word wins for its slot (a node that
        answers the refresh may not have heard of the move yet)."""
        node = self.node(exc.host, exc.port)
        try:
            self.refresh()
        except StoreError as err:
            log.warning("slot map refresh after MOVED failed: %s", err)
        self.owner[exc.slot_id] = node

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()


class SlotGroup:
    """One slot group: the ``Shard`` interface ``RedisState`` and ``bulk`` use (index,
    prefix, client, send/read of packed calls), routed to the master serving its slot."""

    def __init__(self, cluster: ClusterMap, name: str, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.prefix = group_prefix(name, index)
        self.slot = key_slot(self.prefix.encode())
        self.sha: str | None = None
        self._ask: Shard | None = None  # the node an ASK named: the next call goes there
        #: where the last call went: (node, the node's connection epoch, ASKING sent first)
        self._sent: tuple[Shard, int, bool] | None = None

    @property
    def node(self) -> Shard:
        return self.cluster.node_for(self.slot)

    @property
    def client(self) -> Any:
        return self.node.client

    @property
    def url(self) -> str:
        node = self.cluster.owner[self.slot]
        where = node.url if node is not None else "(slot map not read)"
        return f"{where} (slot group {self.index}, slot {self.slot})"

    def load_script(self, source: str) -> str:
        self.cluster.script = source
        node = self._sent[0] if self._sent is not None else self.node
        self.sha = node.load_script(source)
        return self.sha

    def send(self, payload: bytes) -> None:
        asking, node = self._ask is not None, self._ask or self.node
        self._ask = None  # ASK is followed once: a later call asks the map again
        if node.sha is None and self.cluster.script is not None:
            node.load_script(self.cluster.script)  # a master this model never used yet
        self._sent = (node, node.epoch, asking)
        node.send(_ASKING + payload if asking else payload)

    def read(self) -> Any:
        assert self._sent is not None
        node, epoch, asking = self._sent
        if node.epoch != epoch:  # another group's failure reset the shared connection
            raise RedisConnectionError(f"{node.url}: connection reset, reply lost")
        if asking:
            node.read()  # ASKING's +OK
        return node.read()

    def read_next(self) -> Any:
        """The reply to the next of several commands sent in one payload (after ``read``
        took the first): from the node the payload went to."""
        assert self._sent is not None
        node, epoch, _ = self._sent
        if node.epoch != epoch:
            raise RedisConnectionError(f"{node.url}: connection reset, reply lost")
        return node.read()

    def raw_socket(self) -> tuple[Any, int]:
        """``Shard.raw_socket`` of the node the payload went to; an ASKING sent first puts
        its reply ahead of the payload's."""
        assert self._sent is not None
        node, epoch, asking = self._sent
        if node.epoch != epoch:
            raise RedisConnectionError(f"{node.url}: connection reset, reply lost")
        sock, ahead = node.raw_socket()
        return sock, ahead + (1 if asking else 0)

    def redirected(self, exc: AskError) -> None:
        """Follow a MOVED (the map is refreshed) or an ASK (the next call only)."""
        if isinstance(exc, MovedError):
            self.cluster.moved(exc)
        else:
            self._ask = self.cluster.node(exc.host, exc.port)

    def call(self, method: str, *args: Any, **kw: Any) -> Any:
        """An ordinary redis-py command on the group's keys, following redirects."""
        for _ in range(MAX_REDIRECTS):
            try:
                if self._ask is None:
                    return getattr(self.client, method)(*args, **kw)
                pipe = self._ask.client.pipeline(transaction=False)
                self._ask = None
                pipe.execute_command("ASKING")
                getattr(pipe, method)(*args, **kw)
                return pipe.execute()[1]
            except AskError as exc:
                self.redirected(exc)
        raise StoreError(f"{self.url}: more than {MAX_REDIRECTS} redirects")

    def reset(self) -> None:
        node = self._sent[0] if self._sent is not None else self.cluster.owner[self.slot]
        if node is not None:
            node.reset()
        self.cluster.stale = True  # a failed master may have been replaced

    def close(self) -> None:
        """Nothing of its own: the cluster map's nodes are closed once by the state."""


"""Whole-model transfers: seeding Redis from a model (``ctr load-state``), reading every
shard's state back into a model (snapshots), and clearing a model's keys.

A snapshot is consistent at flush granularity: it first sets ``<prefix>pause`` on every
shard; a flush script that finds it applies nothing and answers "paused" (the worker keeps
its deltas and retries). Scripts run atomically, so once the flag is set on a shard no flush
is half-applied there, and the SCANs that follow read a state no flush changes. Each worker's
flush is atomic per shard, not across shards (shards are independent servers), so a flush
that reached shard 0 just before the pause and shard 1 just after is in the snapshot on shard
0 only, and applied on shard 1 after it; single-process use (``ctr train``) syncs before it
snapshots and is exact.

In a Redis Cluster a shard is a slot group (``cluster``): its ``pause`` key and keys are
its own (hash-tagged prefix), found by SCAN with that prefix on the master serving its slot;
a slot migrated while it is being read is not followed (reads of a cluster in the middle
of a resharding may miss that group's keys).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ftrl_core.model import Model

from ..errors import StoreError
from . import deltalog, fieldsync
from .transport import driver_errors

if TYPE_CHECKING:
    from .shard import Shard
    from .state import RedisState

PAUSE_MS = 120_000


def model_keys(state: RedisState, shard: int) -> Iterator[bytes]:
    """The model's keys on a shard (a slot group: its keys, on the master serving it)."""
    target = state.shards[shard]
    yield from target.client.scan_iter(match=target.prefix + "*", count=1000)


def clear(state: RedisState) -> int:
    """Delete every key of the model on every shard; returns how many."""
    with driver_errors(state.url):
        n = 0
        for shard in state.shards:
            batch: list[bytes] = []
            for key in model_keys(state, shard.index):
                batch.append(key)
                if len(batch) == 1000:
                    n += int(shard.client.unlink(*batch))
                    batch = []
            if batch:
                n += int(shard.client.unlink(*batch))
        return n


def seed(state: RedisState, model: Model, replace: bool = False) -> int:
    """Write ``model``'s coordinates and counters as the stored state of this model name.
    Refuses when the name already holds state, unless ``replace``."""
    with driver_errors(state.url):
        if state.stored_config() is not None or any(
                next(model_keys(state, s.index), None) is not None for s in state.shards):
            if not replace:
                raise StoreError(f"model {state.name!r} already has state in {state.url}: "
                                      "pass --replace to overwrite it, or another --model-name")
            clear(state)
        counters = model.optimizer.counters.copy()
        state.attach(model)  # claims the name (it reads the shared counters: zero here)
        model.optimizer.counters[:] = counters
        assert state.layout is not None
        records = model.optimizer.table.records()
        keys = np.ascontiguousarray(records[:, 0])
        recs = np.ascontiguousarray(records[:, 1:])
        # replies are counted per server: slot groups on one master share its connection
        pending: dict[Shard, int] = {}
        prefixes = [s.prefix for s in state.shards]
        for shard_index, cmd in state.layout.seed_commands(prefixes, keys, recs):
            node = state.shards[shard_index].node
            node.send(cmd)
            pending[node] = pending.get(node, 0) + 1
            if pending[node] >= 256:
                _drain(node, pending)
        for node in list(pending):
            _drain(node, pending)
        if model.optimizer.bounds is not None and model.optimizer.bounds.evicts:
            # the live count the sweep keeps (ages: stamped by the first sweep, sweep.lua)
            _, where = state.layout.route(keys)
            per_shard = np.bincount(where, minlength=len(state.shards))
            for shard in state.shards:
                state.call(shard.index, "set", shard.prefix + "n", int(per_shard[shard.index]))
        counters = counters[:state.ncounters].astype("<f8")
        state.call(0, "hset", state.prefix + "t", mapping={
            str(i + 1): counters[i:i + 1].tobytes() for i in range(counters.size)})
        state.counter_base = counters.astype(np.float64)
        return int(keys.size)


def _drain(node: Shard, pending: dict[Shard, int]) -> None:
    for _ in range(pending.pop(node, 0)):
        node.read()


def snapshot(state: RedisState) -> Model:
    """A model holding every shard's state (flushes paused meanwhile; see the module doc)."""
    with driver_errors(state.url):
        stored = state.stored_config()
        if stored is None:
            raise StoreError(f"no model {state.name!r} in {state.url}")
        model = Model.from_config(stored["config"])
        if state.model is None:
            state.attach(model)
        else:  # the stored config's fields are those of the model's creation: add the rest
            fieldsync.share(state, model.registry, 0, adopt=True)
        layout = state.layout
        assert layout is not None
        for shard in state.shards:
            state.call(shard.index, "set", shard.prefix + "pause", "1", px=PAUSE_MS)
        try:
            parts_k: list[np.ndarray] = []
            parts_r: list[np.ndarray] = []
            for shard in state.shards:
                if state.logged:  # the buckets with the log's entries folded in
                    keys, recs, _ = deltalog.read_folded(state, shard.index, locked=False)
                    parts_k.append(keys)
                    parts_r.append(recs)
                    continue
                for keys, recs in read_shard(state, shard.index):
                    parts_k.append(keys)
                    parts_r.append(recs)
            raw: dict[Any, Any] = state.call(0, "hgetall", state.prefix + "t")
            evicts = model.optimizer.bounds is not None and model.optimizer.bounds.evicts
            aged = [part for shard in state.shards for part in read_ages(state, shard.index)] \
                if evicts else []
        finally:
            for shard in state.shards:
                state.call(shard.index, "delete", shard.prefix + "pause")
        opt = model.optimizer
        width = opt.stride - 1
        keys = np.concatenate(parts_k) if parts_k else np.empty(0, dtype=np.uint64)
        recs = np.concatenate(parts_r) if parts_r else np.empty((0, width), dtype=np.uint64)
        records = np.empty((keys.size, opt.stride), dtype=np.uint64)
        records[:, 0] = keys
        records[:, 1:] = recs
        counters = np.zeros(opt.counters.size)
        for f, v in raw.items():
            counters[int(f) - 1] = np.frombuffer(v, dtype="<f8")[0]
        loaded: dict[str, np.ndarray] = {"records": records, "counters": counters}
        if evicts:  # the model file keeps the ages: a resumed model evicts as Redis would
            assert opt.bounds is not None
            loaded["ages"] = _ages_of(keys, aged, opt.bounds.clock(int(counters[0])))
        opt.load_state(loaded)
        return model


def read_ages(state: RedisState, i: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(keys, ages) of the coordinates shard ``i`` holds ages for (a model that evicts:
    ``a:<bucket>`` hashes beside the buckets, written by the flush script)."""
    client = state.shards[i].client
    names = list(client.scan_iter(match=state.shards[i].prefix + "a:*", count=1000))
    for start in range(0, len(names), 500):
        pipe = client.pipeline(transaction=False)
        for name in names[start:start + 500]:
            pipe.hgetall(name)
        for value in pipe.execute():
            if value:
                keys = np.frombuffer(b"".join(value.keys()), dtype="<u8").astype(np.uint64)
                ages = np.array([int(v) for v in value.values()], dtype=np.int64)
                yield keys, ages


def _ages_of(keys: np.ndarray, aged: list[tuple[np.ndarray, np.ndarray]], now: int
             ) -> np.ndarray:
    """The age of each of ``keys`` from the (keys, ages) read; ``now`` for a key without
    one (seeded and not swept yet: the sweep would stamp it now, ``sweep.lua``)."""
    out = np.full(keys.size, now, dtype=np.int64)
    if not aged or not keys.size:
        return out
    ak = np.concatenate([k for k, _ in aged])
    av = np.concatenate([a for _, a in aged])
    order = np.argsort(ak)
    ak, av = ak[order], av[order]
    pos = np.minimum(np.searchsorted(ak, keys), ak.size - 1)
    found = ak[pos] == keys
    out[found] = av[pos[found]]
    return out


def read_shard(state: RedisState, i: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(keys, records) of every coordinate stored on shard (or slot group) ``i``."""
    with driver_errors(state.url):
        layout = state.layout
        assert layout is not None
        client = state.shards[i].client
        pattern = layout.scan_pattern(state.shards[i].prefix)
        names: list[bytes] = []

        def fetch(batch: list[bytes]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            pipe = client.pipeline(transaction=False)
            for name in batch:
                getattr(pipe, layout.read_command.lower())(name)
            for name, value in zip(batch, pipe.execute(), strict=True):
                if value:
                    yield layout.parse_key(name, value)

        for name in client.scan_iter(match=pattern, count=1000):
            names.append(name)
            if len(names) == 500:
                yield from fetch(names)
                names = []
        if names:
            yield from fetch(names)


def config_summary(state: RedisState) -> str:
    stored = state.stored_config()
    return "none" if stored is None else json.dumps(stored["store"])

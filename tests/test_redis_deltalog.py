"""The delta log (``service/stores/redis/deltalog.py``) against real redis-server shards:
the merge kernel against the rule written plainly, two workers' state against the log's
entries folded by that plain rule, compaction's lock and position checks, the trim and a
worker that fell behind it, and the log folded away when the workers stop."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import hiredis
import numpy as np
import pytest
from redis_servers import RedisServer
from test_redis_state import batches, build, url

from ftrl_core.deltas import fold_rows, store_records
from ftrl_core.table import StateTable
from service.stores.redis import RedisState, deltalog, snapshot
from service.stores.redis.buckets import BucketLayout
from service.stores.redis.deltalog import DeltaLogLayout
from service.stores.redis.resp import keyed_commands

pytestmark = pytest.mark.redis

F2 = struct.Struct("<ff")


def merge(stored: bytes, base: bytes, cur: bytes) -> bytes:
    """The shared merge rule on one FTRL record (z, n as float32), written plainly: the
    stored record equal to the row's base becomes its current record, otherwise it gains
    current - base in double precision, rounded back to float32."""
    if stored == base:
        return cur
    o, b, c = F2.unpack(stored), F2.unpack(base), F2.unpack(cur)
    return F2.pack(*(float(np.float32(o[j] + (c[j] - b[j]))) for j in range(2)))


def rec(z: float, n: float) -> bytes:
    return F2.pack(z, n)


def test_fold_rows_is_the_merge_rule() -> None:
    """``fold_rows`` against ``merge`` row by row, with rows whose base equals the stored
    record (exact), rows that add, keys first met, and keys learned on here since the last
    flush (``pending``: the base merges, the cached record moves by as much)."""
    rng = np.random.default_rng(3)
    keys = rng.integers(1, 40, size=400).astype(np.uint64)
    stored: dict[int, bytes] = {}
    cache = StateTable(2)
    pending = StateTable(2)
    # keys 1-9 cached; 1-4 learned on here since the last flush (base != cache)
    for k in range(1, 10):
        stored[k] = rec(rng.normal(), rng.random())
    store_records(cache, np.arange(1, 10, dtype=np.uint64),
                  np.frombuffer(b"".join(stored[k] for k in range(1, 10)), dtype=np.uint64))
    learned = {k: rec(rng.normal(), rng.random()) for k in range(1, 5)}
    base_of = {k: stored[k] for k in range(1, 5)}
    store_records(pending, np.arange(1, 5, dtype=np.uint64),
                  np.frombuffer(b"".join(base_of[k] for k in range(1, 5)), dtype=np.uint64))
    store_records(cache, np.arange(1, 5, dtype=np.uint64),
                  np.frombuffer(b"".join(learned[k] for k in range(1, 5)), dtype=np.uint64))
    cached = {**stored, **learned}
    bases, curs = [], []
    for k in keys.tolist():
        # half the rows continue from what the plain reference holds (exact path)
        if rng.random() < 0.5:
            b = base_of[k] if k in base_of else cached.get(k, rec(0, 0))
        else:
            b = rec(rng.normal(), rng.random())
        c = rec(rng.normal(), rng.random())
        bases.append(b)
        curs.append(c)
        if k in base_of:  # pending here: the base merges, the cache moves by as much
            old = base_of[k]
            new = merge(old, b, c)
            base_of[k] = new
            o, nb, ob = F2.unpack(cached[k]), F2.unpack(new), F2.unpack(old)
            cached[k] = F2.pack(*(float(np.float32(o[j] + (nb[j] - ob[j])))
                                  for j in range(2)))
        else:
            cached[k] = merge(cached.get(k, rec(0, 0)), b, c)
    fold_rows(cache, keys, np.frombuffer(b"".join(bases), dtype=np.uint64).reshape(-1, 1),
              np.frombuffer(b"".join(curs), dtype=np.uint64).reshape(-1, 1), np.float32,
              pending)
    got = cache.records()
    assert {int(k): v.tobytes() for k, v in zip(got[:, 0], got[:, 1:], strict=True)} == cached
    got_base = pending.records()
    assert {int(k): v.tobytes() for k, v in zip(got_base[:, 0], got_base[:, 1:],
                                                 strict=True)} == base_of


def log_entries(store: RedisState) -> list[list[tuple[bytes, bytes]]]:
    """Per shard, (flush id, rows) of every entry its log holds, in order."""
    out = []
    for shard in store.shards:
        got = shard.client.xrange(shard.prefix + "log")
        out.append([(e[1][b"f"], e[1][b"d"]) for e in got])
    return out


def fold_plainly(entries: list[list[tuple[bytes, bytes]]]) -> dict[int, bytes]:
    """Every shard's entries folded by ``merge`` from an empty state."""
    state: dict[int, bytes] = {}
    for shard in entries:
        for _, rows in shard:
            for r in range(0, len(rows), 24):
                k = int.from_bytes(rows[r:r + 8], "little")
                state[k] = merge(state.get(k, rec(0, 0)), rows[r + 8:r + 16],
                                 rows[r + 16:r + 24])
    return state


def records_of(model_records: np.ndarray) -> dict[int, bytes]:
    return {int(k): v.tobytes() for k, v in zip(model_records[:, 0], model_records[:, 1:],
                                                 strict=True)}


def two_workers(shards: list[RedisServer], name: str) -> tuple[RedisState, RedisState]:
    a, b = RedisState(url(shards), name), RedisState(url(shards), name)
    a.attach(build())
    b.attach(build())
    assert isinstance(a.layout, DeltaLogLayout) and isinstance(b.layout, DeltaLogLayout)
    return a, b


def learn_turns(a: RedisState, b: RedisState, data: Path, n: int = 6) -> None:
    """Batches learned in turn by a and b (each flushes after its batch)."""
    assert a.model is not None and b.model is not None
    for i, batch in enumerate(batches(a.model, data, n)):
        store = a if i % 2 == 0 else b
        assert store.model is not None
        store.before_learn(store.model, batch)
        store.model.learn(batch)
        store.after_learn(store.model, batch)
        store.sync(store.model)


def test_two_workers_hold_the_log_folded_in_order(
        criteo_file: Path, redis_shards: list[RedisServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers learn in turn; the shared state (a snapshot, before and after the log
    is compacted into the buckets) is the entries folded by the plain rule in the log's
    order, bit for bit; each worker's cache, once it read the other's last entries, is that
    state up to the rounding of the order it merged in."""
    monkeypatch.setattr(deltalog, "COMPACT_EVERY", 1e9)  # compacted below, by hand
    a, b = two_workers(redis_shards, "pair")
    learn_turns(a, b, criteo_file)
    entries = log_entries(a)
    assert all(len(e) == 6 for e in entries)  # one entry per flush on each shard
    want = fold_plainly(entries)
    assert records_of(snapshot(a).optimizer.table.records()) == want
    assert a.compact(force=True) > 0
    # trimmed up to the older cursor (a's: b flushed last)
    assert all(s.client.xlen(s.prefix + "log") == 1 for s in a.shards)
    shared = snapshot(a)
    assert records_of(shared.optimizer.table.records()) == want
    for store in (a, b):
        store.refresh_counters()  # a read: the other's entries since its last flush
        assert store.model is not None
        keys = shared.optimizer.table.keys()
        np.testing.assert_allclose(store.model.optimizer.state_of(keys)["n"],
                                   shared.optimizer.state_of(keys)["n"], rtol=1e-5)
        assert store.model.optimizer.table.size == shared.optimizer.table.size
    assert shared.rows == a.model.rows == b.model.rows  # type: ignore[union-attr]
    a.close()
    b.close()


def test_a_compaction_turn_keeps_up_with_a_long_log(
        criteo_file: Path, redis_shards: list[RedisServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On its timer a worker folds a shard's log again while a compaction found a full
    batch (up to ``COMPACT_ROUNDS`` a turn), so that a log appended to faster than one
    batch a turn is still folded; each compaction folds one batch, the oldest first; the
    state is the same."""
    monkeypatch.setattr(deltalog, "COMPACT_EVERY", 1e9)  # compacted below, by hand
    a, b = two_workers(redis_shards, "rounds")
    learn_turns(a, b, criteo_file, 7)  # 7 entries on each shard
    want = fold_plainly(log_entries(a))
    monkeypatch.setattr(deltalog, "COMPACT_ENTRIES", 2)
    monkeypatch.setattr(deltalog, "COMPACT_ROUNDS", 3)
    monkeypatch.setattr(deltalog, "COMPACT_EVERY", 0.0)

    ids = [[e[0] for e in s.client.xrange(s.prefix + "log")] for s in a.shards]

    def folded_upto() -> list[int]:
        """Entries up to each shard's ``pos``."""
        out = []
        for s, shard_ids in zip(a.shards, ids, strict=True):
            pos = s.client.get(s.prefix + "pos") or deltalog.START
            out.append(sum(not deltalog.id_before(pos, i) for i in shard_ids))
        return out

    assert a.compact() > 0
    assert folded_upto() == [6, 6]  # 3 rounds of 2
    assert a.compact() > 0
    assert folded_upto() == [7, 7]  # a batch of 1: the turn stops
    assert records_of(snapshot(a).optimizer.table.records()) == want
    a.close()
    b.close()


def test_compaction_yields_to_a_lock_holder_and_to_a_moved_position(
        criteo_file: Path, redis_shards: list[RedisServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A compaction does nothing while a reader holds the shard's lock, and its
    transaction is refused once another compaction moved ``pos`` (nothing is folded
    twice), whether it moved before the check or between the check and the EXEC."""
    monkeypatch.setattr(deltalog, "COMPACT_EVERY", 1e9)
    a, b = two_workers(redis_shards, "lock")
    learn_turns(a, b, criteo_file, 2)
    shard = a.shards[0]
    client = shard.client
    client.set(shard.prefix + "lock", b"reader", px=60_000)
    assert deltalog.compact(a, 0) == (0, 0)
    assert client.get(shard.prefix + "pos") is None
    client.delete(shard.prefix + "lock")
    before = snapshot(a).optimizer.table.records()
    layout = a.layout
    assert isinstance(layout, DeltaLogLayout)
    keys = np.array([12345], dtype=np.uint64)
    keys, buckets = layout.by_bucket(keys)
    writes, n = layout.writes(shard.prefix.encode(), keys, buckets,
                              np.ones((1, layout.words), dtype=np.uint64))
    assert deltalog.compact(a, 0).coordinates > 0
    pos = client.get(shard.prefix + "pos")
    assert pos is not None and pos != deltalog.START
    token = b"late"
    client.set(shard.prefix + "lock", token, px=60_000)
    # a compaction that read the log at 0-0: refused at the check
    with a.wire:
        assert not deltalog._watch(a, 0, token, deltalog.START)
    # one whose check passed, and pos moved before its EXEC: Redis drops the transaction
    with a.wire:
        assert deltalog._watch(a, 0, token, pos)
        client.set(shard.prefix + "pos", pos)  # the same value, written: a change to WATCH
        assert not deltalog._commit(a, 0, b"9999999999999-0", writes, n)
    assert client.get(shard.prefix + "pos") == pos
    assert not client.hexists(shard.prefix + "b:" + str(buckets[0]), keys.tobytes())
    client.delete(shard.prefix + "lock")
    assert records_of(snapshot(a).optimizer.table.records()) == records_of(before)
    a.close()
    b.close()


def test_a_worker_gone_past_the_trim_reads_its_state_again(
        criteo_file: Path, redis_shards: list[RedisServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose cursor stopped being renewed (here: at once) no longer holds the trim
    back; its next flush is told it fell behind, and it reads its shards' state again,
    keeping what it learned: its cache then is the shared state."""
    monkeypatch.setattr(deltalog, "COMPACT_EVERY", 1e9)
    monkeypatch.setattr(deltalog, "CURSOR_KEEP_MS", 0)
    a, b = two_workers(redis_shards, "behind")
    learn_turns(a, b, criteo_file, 4)
    # a learns on, alone; b sits idle while a compacts and trims past b's cursor
    assert a.model is not None and b.model is not None
    more = batches(a.model, criteo_file, 6)[4:]
    for batch in more[:1]:
        a.before_learn(a.model, batch)
        a.model.learn(batch)
        a.after_learn(a.model, batch)
        a.sync(a.model)
    assert a.compact(force=True) > 0
    trimmed = [s.client.get(s.prefix + "trim") for s in a.shards]
    assert all(t is not None and deltalog.id_before(b.cursors[s.index], t)
               for s, t in zip(b.shards, trimmed, strict=True))
    batch = more[1]
    b.before_learn(b.model, batch)
    b.model.learn(batch)
    b.after_learn(b.model, batch)
    b.sync(b.model)  # told it is behind: reads the state again, its batch on top
    shared = snapshot(b)
    assert records_of(b.model.optimizer.table.records()) == \
        records_of(shared.optimizer.table.records())
    assert shared.rows == b.model.rows
    a.close()
    b.close()


def test_stopping_workers_fold_the_log_away(criteo_file: Path,
                                            redis_shards: list[RedisServer]) -> None:
    """Once every worker stopped, the buckets hold everything: the logs are empty and no
    cursor is left."""
    a, b = two_workers(redis_shards, "stop")
    learn_turns(a, b, criteo_file, 4)
    want = records_of(snapshot(a).optimizer.table.records())
    a.close()
    b.close()
    for s in redis_shards:
        client = s.client()
        assert client.xlen("ctr:stop:log") == 0
        assert client.hlen("ctr:stop:cur") == 0
    c = RedisState(url(redis_shards), "stop")
    c.attach(build())
    assert records_of(snapshot(c).optimizer.table.records()) == want
    c.close()


def test_a_stored_model_keeps_its_layout(redis_shards: list[RedisServer]) -> None:
    """A model created with the bucketed layout alone (before the delta log) is attached
    with it; a new unbounded model gets the log."""
    a = RedisState(url(redis_shards), "older")
    a.attach(build())
    assert isinstance(a.layout, DeltaLogLayout)
    a.close()
    for i, s in enumerate(redis_shards):
        client = s.client()
        config = json.loads(client.get("ctr:older:config"))
        config["store"]["layout"] = "buckets"
        client.set("ctr:older:config", json.dumps(config, sort_keys=True))
        assert config["shard"] == i
    b = RedisState(url(redis_shards), "older")
    b.attach(build())
    assert type(b.layout) is BucketLayout
    b.close()


def test_a_reader_waits_out_a_lock_its_holder_left(criteo_file: Path,
                                                   redis_shards: list[RedisServer]) -> None:
    """A compaction lock left by a holder that died (killed mid-read, or in the AOF of a
    restarted shard) expires within ``LOCK_MS``: a worker starting waits it out instead of
    failing, and reads the state."""
    a, b = two_workers(redis_shards, "left")
    learn_turns(a, b, criteo_file, 2)
    want = records_of(snapshot(a).optimizer.table.records())
    for shard in a.shards:
        shard.client.set(shard.prefix + "lock", b"dead", px=300)
    c = RedisState(url(redis_shards), "left", pause_timeout=5.0)
    c.attach(build())
    c.load_all()
    assert c.model is not None
    assert records_of(c.model.optimizer.table.records()) == want
    for store in (a, b, c):
        store.close()


def test_a_reply_carries_at_most_64_entries(criteo_file: Path,
                                            redis_shards: list[RedisServer]) -> None:
    """A worker back from a pause gets the entries since in replies of at most 64, its
    cursor moving past each reply's last, until it is current."""
    a, b = two_workers(redis_shards, "count")
    assert a.model is not None and b.model is not None
    b.load_all()  # as a worker starting does: an empty state, the cursors at the start
    batch = batches(a.model, criteo_file, 1)[0]
    for _ in range(70):
        a.before_learn(a.model, batch)
        a.model.learn(batch)
        a.after_learn(a.model, batch)
        a.sync(a.model)
    ids = [[e[0] for e in s.client.xrange(s.prefix + "log")] for s in b.shards]
    assert all(len(x) == 70 for x in ids)
    b.refresh_counters()
    assert [b.cursors[s.index] for s in b.shards] == [x[63] for x in ids]
    b.refresh_counters()
    assert [b.cursors[s.index] for s in b.shards] == [x[-1] for x in ids]
    keys = a.model.optimizer.table.keys()
    np.testing.assert_allclose(b.model.optimizer.state_of(keys)["n"],
                               a.model.optimizer.state_of(keys)["n"], rtol=1e-5)
    a.close()
    b.close()


def test_keyed_commands_are_the_resp_of_one_command_per_bucket() -> None:
    """The compaction's HMGET/HSET packing against the commands built one by one: a run of
    equal buckets is one command (several past ``most`` fields), arguments may hold CR LF
    bytes, and bucket numbers of any width."""
    rng = np.random.default_rng(7)
    groups = np.sort(rng.choice([0, 9, 10, 4_294_967_295], size=40)).astype(np.int64)
    rows = rng.integers(0, 256, size=(40, 24), dtype=np.uint8)
    rows[3, 8:10] = (13, 10)
    payload, n = keyed_commands(b"HSET", b"{m}:b:", groups, rows, (8, 16), 7)
    expected = []
    i = 0
    while i < groups.size:
        j = i
        while j < groups.size and groups[j] == groups[i] and j - i < 7:
            j += 1
        args = [b"HSET", b"{m}:b:%d" % groups[i]]
        for r in range(i, j):
            args += [rows[r, :8].tobytes(), rows[r, 8:].tobytes()]
        expected.append(args)
        i = j
    reader = hiredis.Reader()
    reader.feed(payload)
    got = []
    while (cmd := reader.gets()) is not False:
        got.append(cmd)
    assert n == len(expected) and got == expected


def test_a_worker_starting_has_its_flush_and_compaction_kernels_ready(
        redis_shards: list[RedisServer]) -> None:
    """``attach`` runs the kernels of a flush, of merging its reply and of a compaction
    (loaded from Numba's cache or compiled), so that the first flush or compaction of a
    fresh worker does not stall it: checked in a fresh process, where nothing else ran
    them."""
    code = f"""
from ftrl_core import deltas
from ftrl_core.fields import FieldRegistry
from ftrl_core.model import Model
from ftrl_core.optimizers import FTRLProximal
from ftrl_core.readers import FeatureOptions
from service.stores.redis import RedisState, buckets, resp
state = RedisState({url(redis_shards)!r}, "warm")
state.attach(Model(FTRLProximal(alpha=0.1), FieldRegistry(), FeatureOptions(), "criteo"))
kernels = [deltas._capture, deltas._collect, deltas._refresh, deltas._fold, deltas._store,
           resp.pack_keyed_commands, buckets._route]
print([k.__name__ for k in kernels if not k.signatures])
state.close()
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"

"""Bounded memory (--admit, --evict-idle, --max-coordinates) on a real 3-master Redis
Cluster: the ages, live count and sweep cursor of each slot group live under the group's
hash tag, the sweep runs per group and follows the group's slot when it moves; idle keys
leave the cluster and come back fresh, the cap holds, admission spans two workers, one
sweep call's work is bounded, a snapshot keeps the ages, /metrics counts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from datagen import write_criteo
from redis_servers import RedisCluster
from test_redis_bounded import build, key, learn, rows

from ftrl_core.model import Model
from service.stores.redis import RedisState, seed, snapshot
from service.stores.redis.cluster import CLUSTER_GROUPS, SlotGroup
from service.stores.redis.sweep import BUDGET, SweepReport

pytestmark = pytest.mark.redis


def stored(cluster: RedisCluster, name: str) -> dict[int, bytes]:
    """Every coordinate the cluster holds for model ``name``: key -> packed record."""
    out: dict[int, bytes] = {}
    for node in cluster.nodes:
        r = node.client()
        for bucket in r.scan_iter(match=f"ctr:{{{name}:*}}:b:*", count=1000):
            for f, v in r.hgetall(bucket).items():
                out[int(np.frombuffer(f, dtype="<u8")[0])] = v
    return out


def attach(cluster: RedisCluster, model: Model, name: str, buckets: int = 64) -> RedisState:
    state = RedisState(cluster.url, name, buckets=buckets)
    state.attach(model)
    return state


def sweep(state: RedisState, now: int | None = None, start_pass: bool = False
          ) -> SweepReport:
    now = state.sweep_now() if now is None else now
    report = state.sweep(now, start_pass)
    assert report is not None
    state.after_sweep(report, now)
    return report


def group_of(state: RedisState, k: int) -> SlotGroup:
    assert state.layout is not None
    _, where = state.layout.route(np.array([k], dtype=np.uint64))
    group = state.shards[int(where[0])]
    assert isinstance(group, SlotGroup)
    return group


def test_idle_keys_leave_the_cluster_and_come_back_fresh(redis_cluster: RedisCluster
                                                         ) -> None:
    """--evict-idle 5: the flush stamps ages in the group of each key (same slot as its
    bucket); the sweep, one pass over every group, drops the idle key from the cluster and
    the cache; it is learned again from zero, as by a model that never saw it."""
    name = "idle"
    model = build(idle="5")
    state = attach(redis_cluster, model, name)
    assert len(state.shards) == CLUSTER_GROUPS
    old, new = key(2, 1), key(3, 1)
    learn(model, state, rows([old], [old]))
    learn(model, state, rows(*[[new]] * 10))
    assert {old, new} <= set(stored(redis_cluster, name))
    # the ages and the live count sit in each key's group, on the master serving its slot
    for k in (old, new):
        group = group_of(state, k)
        assert state.layout is not None
        bucket = int(state.layout.route(np.array([k], dtype=np.uint64))[0][0])
        owner = redis_cluster.owner(group.slot)
        field = np.array([k], dtype="<u8").tobytes()
        assert owner.client().hexists(f"{group.prefix}a:{bucket}", field)
        assert int(owner.client().get(group.prefix + "n")) >= 1
    report = sweep(state)
    assert [int(x) for x in report.evicted] == [old]
    assert report.calls >= CLUSTER_GROUPS and report.passes == CLUSTER_GROUPS
    assert set(stored(redis_cluster, name)) == {new}
    assert model.optimizer.table.lookup(np.array([old], dtype=np.uint64))[0] == -1
    bounds = model.optimizer.bounds
    assert bounds.counts(model.optimizer.table)["evicted"] == 1
    assert report.live == 1 == bounds.counts(model.optimizer.table)["live"]
    learn(model, state, rows([old], label=0.0))
    fresh = build()
    fresh.learn(rows([old], label=0.0))
    assert stored(redis_cluster, name)[old] == fresh.optimizer.table.records()[0, 1:].tobytes()
    state.close()


def test_the_cap_holds_on_the_cluster(redis_cluster: RedisCluster) -> None:
    """--max-coordinates 320 over 16 groups (a share of 20 each): sweeps bring the cluster
    back to at most 320 coordinates, dropping mostly the least recently flushed ones."""
    name = "cap"
    model = build(cap=320)
    state = attach(redis_cluster, model, name)
    keys = [key(1, i) for i in range(1, 1201)]
    for i in range(0, 1200, 100):  # 12 flushes: 12 ages, 100 keys each
        learn(model, state, rows(*[[k] for k in keys[i:i + 100]]))
    for _ in range(20):
        report = sweep(state)
        if report.live <= 320:
            break
    left = set(stored(redis_cluster, name))
    assert len(left) == report.live <= 320
    assert model.optimizer.table.size <= 320
    position = {k: i for i, k in enumerate(keys)}
    kept = np.array([position[k] for k in left])
    assert np.mean(kept >= 600) > 0.8
    # each group's live count is its own coordinates
    for group in state.shards:
        r = redis_cluster.owner(group.slot).client()  # type: ignore[union-attr]
        held = sum(r.hlen(b) for b in r.scan_iter(match=group.prefix + "b:*"))
        assert int(r.get(group.prefix + "n") or 0) == held <= 20
    state.close()


def test_admission_across_two_workers_on_the_cluster(redis_cluster: RedisCluster) -> None:
    """bloom:2 with two workers: once on each is refused by both; a's second occurrence
    admits the key; a third worker that never saw it learns it at its first occurrence."""
    name = "admit"
    a_model, b_model, c_model = build("bloom:2"), build("bloom:2"), build("bloom:2")
    a, b = attach(redis_cluster, a_model, name), attach(redis_cluster, b_model, name)
    k = key(1, 7)
    learn(a_model, a, rows([k]))
    learn(b_model, b, rows([k]))
    assert stored(redis_cluster, name) == {}
    learn(a_model, a, rows([k]))
    assert set(stored(redis_cluster, name)) == {k}
    c = attach(redis_cluster, c_model, name)
    learn(c_model, c, rows([k]))
    counts = c_model.optimizer.bounds.counts(c_model.optimizer.table)
    assert counts["refused"] == 0 and counts["admitted"] == 0
    z_n = np.frombuffer(stored(redis_cluster, name)[k], dtype="<f4")
    assert z_n[1] > 0 and c_model.optimizer.table.size == 1
    for s in (a, b, c):
        s.close()


def test_one_sweep_call_is_bounded_on_the_cluster(redis_cluster: RedisCluster) -> None:
    """40,000 idle coordinates over 16 groups on 3 masters swept: a call drops at most the
    budget plus the rest of its last bucket; the longest call as each master's SLOWLOG
    times it and as the client sees it is printed."""
    name = "bound"
    model = build(idle="10")
    state = attach(redis_cluster, model, name, buckets=512)  # ~80 coordinates a bucket
    n_rows, per_row = 80, 500
    for part in range(4):
        batch = rows(*[[key(1 + j % 8, 1 + (part * n_rows + i) * per_row + j)
                        for j in range(per_row)] for i in range(n_rows // 4)])
        learn(model, state, batch)
    total = len(stored(redis_cluster, name))
    assert total == n_rows * per_row
    largest = max(n.client().hlen(k) for n in redis_cluster.nodes
                  for k in n.client().scan_iter(match=f"ctr:{{{name}:*}}:b:*"))
    for n in redis_cluster.nodes:
        r = n.client()
        r.config_set("slowlog-log-slower-than", 500)
        r.config_set("slowlog-max-len", 100_000)
        r.slowlog_reset()
    t0 = time.perf_counter()
    now = state.sweep_now() + 1000
    calls, times, sizes, evicted, sweeps, passes = 0, [], [], 0, 0, 0
    while passes < len(state.shards):
        report = state.sweep(now)
        assert report is not None
        calls, times, sizes = calls + report.calls, times + report.times, sizes + report.sizes
        evicted += report.evicted.size
        passes += report.passes
        sweeps += 1
    seconds = time.perf_counter() - t0
    evals = [e["duration"] for n in redis_cluster.nodes
             for e in n.client().slowlog_get(100_000) if e["command"][:4].lower() == b"eval"]
    for n in redis_cluster.nodes:
        n.client().config_set("slowlog-log-slower-than", 10_000)
    print(f"\ncluster sweep of {total} idle coordinates (16 groups, 3 masters): {calls} calls "
          f"over {sweeps} sweeps in {seconds:.3f} s; per call round trip median "
          f"{np.median(times) * 1e3:.2f} ms, p99 {np.percentile(times, 99) * 1e3:.2f} ms, "
          f"max {max(times) * 1e3:.2f} ms; longest in Redis (SLOWLOG) "
          f"{max(evals, default=500) / 1e3:.2f} ms")
    assert evicted == total and report.live == 0
    assert max(sizes) <= BUDGET + largest  # the work bound; the times are printed only
    state.close()


def test_a_snapshot_keeps_the_ages_on_the_cluster(redis_cluster: RedisCluster) -> None:
    name = "snapages"
    model = build("bloom:2", idle="100")
    state = attach(redis_cluster, model, name)
    a, b = key(1, 1), key(1, 2)
    learn(model, state, rows([a], [a]))  # flushed at step 2
    learn(model, state, rows([b], [b]))  # flushed at step 4
    shared = snapshot(RedisState(redis_cluster.url, name))
    table = shared.optimizer.table
    assert dict(zip(table.keys().tolist(), table.live_ages().tolist(), strict=True)) \
        == {a: 2, b: 4}
    state.close()


def test_the_sweep_follows_a_moved_group_and_waits_out_a_migration(
        redis_cluster: RedisCluster) -> None:
    """The group holding an idle key moves to another master: the sweep follows MOVED.
    Another group's slot is mid-migration (some keys moved): its calls wait (TRYAGAIN)
    instead of running on half the keys, and evict once the migration ends."""
    name = "sweepmove"
    model = build(idle="5")
    state = attach(redis_cluster, model, name)
    first, busy = key(2, 1), key(3, 3)
    value = 2
    while group_of(state, key(2, value)).index == group_of(state, first).index:
        value += 1
    second = key(2, value)
    learn(model, state, rows([first], [second]))
    learn(model, state, rows(*[[busy]] * 10))
    moved, migrating = group_of(state, first), group_of(state, second)
    others = [n for n in redis_cluster.nodes if n is not redis_cluster.owner(moved.slot)]
    assert redis_cluster.move_slot(moved.slot, others[0]) > 0
    source = redis_cluster.owner(migrating.slot)
    target = next(n for n in redis_cluster.nodes if n is not source)
    redis_cluster.start_migration(migrating.slot, source, target)
    assert redis_cluster.migrate_keys(migrating.slot, source, target, limit=2) == 2
    errors: list[BaseException] = []

    def finish() -> None:
        try:
            time.sleep(0.5)
            redis_cluster.migrate_keys(migrating.slot, source, target)
            redis_cluster.finish_migration(migrating.slot, target)
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)

    finisher = threading.Thread(target=finish)
    finisher.start()
    t0 = time.monotonic()
    try:
        report = sweep(state, start_pass=True)
        swept = time.monotonic() - t0
    finally:
        finisher.join(timeout=60)
    assert not errors
    assert swept >= 0.4  # it waited for the migration to end
    # (declaring ``n`` alone, the call ran on the source's half of the slot and missed the
    # idle key already moved to the target)
    assert sorted(int(x) for x in report.evicted) == sorted([first, second])
    assert set(stored(redis_cluster, name)) == {busy}
    assert report.live == 1
    assert redis_cluster.owner(moved.slot) is others[0]
    assert redis_cluster.owner(migrating.slot) is target
    state.close()


def test_a_paused_group_is_not_swept(redis_cluster: RedisCluster) -> None:
    """While a snapshot pauses a group (its ``pause`` key), the sweep leaves it alone (the
    snapshot reads its coordinates and ages at one point in time) and sweeps it after."""
    name = "paused"
    model = build(idle="5")
    state = attach(redis_cluster, model, name)
    old, busy = key(2, 1), key(3, 1)
    learn(model, state, rows([old]))
    learn(model, state, rows(*[[busy]] * 10))
    group = group_of(state, old)
    state.call(group.index, "set", group.prefix + "pause", "1", px=60_000)
    report = sweep(state)
    assert report.paused == 1 and report.evicted.size == 0
    assert old in stored(redis_cluster, name)
    state.call(group.index, "delete", group.prefix + "pause")
    report = sweep(state)
    assert report.paused == 0 and [int(x) for x in report.evicted] == [old]
    state.close()


def test_a_seeded_model_is_counted_per_group_and_aged_from_the_first_sweep(
        redis_cluster: RedisCluster) -> None:
    """``ctr load-state`` onto a cluster: each group's live count is set; the first sweep
    stamps the coordinates without an age, a sweep an idle window later drops them all."""
    name = "seeded"
    model = build(idle="10")
    model.learn(rows(*[[key(1, i)] for i in range(1, 201)]))
    state = RedisState(redis_cluster.url, name, buckets=64)
    assert seed(state, model) == 200
    counts = [int(redis_cluster.owner(g.slot).client().get(g.prefix + "n") or 0)  # type: ignore[union-attr]
              for g in state.shards]
    assert sum(counts) == 200 and sum(c > 0 for c in counts) > 1
    now = state.sweep_now()
    first = state.sweep(now, start_pass=True)
    assert first is not None and first.evicted.size == 0 and first.live == 200
    later = state.sweep(now + 11, start_pass=True)
    assert later is not None and later.evicted.size == 200 and later.live == 0
    assert stored(redis_cluster, name) == {}
    state.close()


def test_ctr_train_on_a_cluster_admits_as_the_memory_store_does(
        tmp_path: Path, redis_cluster: RedisCluster) -> None:
    """``ctr train --state redis+cluster://... --admit bloom:2``: one worker flushing after
    every batch predicts as without Redis, and the cluster holds the admitted coordinates."""
    from test_bounded_cli import _metrics, _train

    data = write_criteo(tmp_path / "wide.tsv", 3000, seed=3, vocab=3000)
    mem, red = tmp_path / "mem.txt", tmp_path / "redis.txt"
    mm, mr = tmp_path / "mem.json", tmp_path / "redis.json"
    flags = ("--admit", "bloom:2", "--evict-idle", "1000000")  # no coordinate goes idle
    assert _train(data, *flags, "--predictions-out", mem, "--metrics-json", mm) == 0
    assert _train(data, *flags, "--predictions-out", red, "--metrics-json", mr, "--state",
                  redis_cluster.url, "--model-name", "cli-bounded",
                  "--model-out", tmp_path / "redis.ctr") == 0
    np.testing.assert_allclose(np.loadtxt(red), np.loadtxt(mem), rtol=0, atol=1e-12)
    a, b = _metrics(mm), _metrics(mr)
    assert (a["admitted"], a["refused"]) == (b["admitted"], b["refused"])
    assert b["refused"] > 0
    assert len(stored(redis_cluster, "cli-bounded")) == a["live_coordinates"]
    saved = Model.load(tmp_path / "redis.ctr").optimizer.state()
    assert saved["ages"].size == saved["records"].shape[0] and saved["ages"].min() > 0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_service_on_a_cluster_counts_the_shared_evictions(
        redis_cluster: RedisCluster) -> None:
    """``ctr serve --state redis+cluster://...`` with --admit and --evict-idle: the sweep
    drops idle coordinates in the cluster; /metrics counts them and the shared live
    coordinates (every group's)."""
    from service_helpers import running_app, some_events
    from test_bounded_service import _samples

    from service.settings import Settings

    settings = Settings(state=redis_cluster.url, model_name="svcbound",  # type: ignore[call-arg]
                        admit="bloom:2", evict_idle="300", _env_file=None)
    async with running_app(settings) as client:
        for seed in range(2):
            r = await client.post("/v1/train", json={"events": some_events(400, seed=seed)})
            assert r.status_code == 200
        store = client.app.state.learner.store  # type: ignore[attr-defined]
        await store.sync()
        passes = 0
        while passes < len(store.state.shards):
            report = await store.sweep_once(start_pass=True)
            assert report is not None
            passes += report.passes
        held = len(stored(redis_cluster, "svcbound"))
        samples = _samples((await client.get("/metrics")).text)
        model = client.app.state.learner._model  # type: ignore[attr-defined]
    evicted = model.optimizer.bounds.counts(model.optimizer.table)["evicted"]
    assert samples["ctr_coordinates_evicted_total"] == evicted > 0
    assert samples["ctr_store_live_coordinates"] == held > 0
    assert samples["ctr_store_sweep_longest_call_seconds"] > 0
    assert samples["ctr_coordinates_refused_total"] > 0


@pytest.mark.anyio
async def test_admission_across_two_service_workers_on_a_cluster(
        redis_cluster: RedisCluster) -> None:
    """Two apps (workers) on one cluster with bloom:2, each sent the same events once: each
    filter counts its own occurrences, so the cluster holds the keys that occur twice in
    the events, as a memory store sent them once; a's second copy admits the rest (as a
    memory store sent them twice); a third worker then finds every key shared: it refuses
    and admits nothing."""
    from service_helpers import running_app, some_events
    from test_bounded_service import _samples

    from service.settings import Settings

    events = {"events": some_events(300, seed=8)}

    def settings(**kw: object) -> Settings:
        return Settings(admit="bloom:2", _env_file=None, **kw)  # type: ignore[arg-type]

    async def live_in_memory(times: int) -> float:
        async with running_app(settings()) as client:
            for _ in range(times):
                assert (await client.post("/v1/train", json=events)).status_code == 200
            return _samples((await client.get("/metrics")).text)["ctr_live_coordinates"]

    once, twice = await live_in_memory(1), await live_in_memory(2)
    assert once < twice
    shared = settings(state=redis_cluster.url, model_name="svcadmit")
    async with running_app(shared) as a, running_app(shared) as b:
        for client in (a, b):
            assert (await client.post("/v1/train", json=events)).status_code == 200
            await client.app.state.learner.store.sync()  # type: ignore[attr-defined]
        assert len(stored(redis_cluster, "svcadmit")) == once
        assert (await a.post("/v1/train", json=events)).status_code == 200
        await a.app.state.learner.store.sync()  # type: ignore[attr-defined]
        assert len(stored(redis_cluster, "svcadmit")) == twice
    async with running_app(shared) as c:
        assert (await c.post("/v1/train", json=events)).status_code == 200
        samples = _samples((await c.get("/metrics")).text)
    assert samples["ctr_coordinates_refused_total"] == 0
    assert samples["ctr_coordinates_admitted_total"] == 0


def test_ctr_consume_on_a_cluster_admits_as_ctr_train_does(tmp_path: Path,
                                                           redis_cluster: RedisCluster
                                                           ) -> None:
    """``ctr consume --state redis+cluster://... --admit bloom:2 --evict-idle``: one consumer
    learns what ``ctr train --admit bloom:2`` learns; the cluster holds the admitted
    coordinates only; the stored model keeps both bounds."""

    from redis_servers import start_redis
    from test_consume import events, learned_as_train_admits, run, xadd


    source = start_redis(tmp_path / "source")
    try:
        items = events(1500, seed=5)
        xadd(source.client(), items)  # type: ignore[arg-type]
        out = tmp_path / "consume.json"
        assert run(source, redis_cluster.url, "--model-name", "consumed", "--alpha", "0.2",
                   "--admit", "bloom:2", "--evict-idle", "100000", "--batch-size", "200",
                   "--sync-every-events", "450", "--claim-idle-ms", "10000",
                   metrics=out) == 0
    finally:
        source.stop()
    want = learned_as_train_admits(tmp_path, items, out)
    assert len(stored(redis_cluster, "consumed")) == want["live_coordinates"]
    config = RedisState(redis_cluster.url, "consumed").stored_config()
    assert config is not None
    assert (config["config"]["admit"], config["config"]["evict_idle"]) == ("bloom:2", "100000")

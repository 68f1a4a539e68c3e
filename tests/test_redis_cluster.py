"""The Redis state store on a real 3-master Redis Cluster: slot groups predict as the memory
store does; slots migrated during training are followed (MOVED, ASK) with nothing lost or
applied twice; identity, load-state, the service; and the ``--state`` URL errors."""

from __future__ import annotations

import itertools
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis_servers import RedisCluster, RedisServer
from test_redis_state import build, check_seed_round_trip, learn

from ftrl_core.model import Model
from ftrl_core.optimizers import OPTIMIZERS
from ftrl_core.readers import open_reader
from service.stores import IdentityError, StoreError
from service.stores.redis import RedisState, snapshot
from service.stores.redis.cluster import CLUSTER_GROUPS
from service.stores.urls import parse_state_url

redis = pytest.mark.redis


@pytest.mark.parametrize(("url", "message"), [
    ("redis+cluster://127.0.0.1:7000,redis://127.0.0.1:7001", "mixes redis:// with"),
    ("redis://127.0.0.1:7001,redis+cluster://127.0.0.1:7000", "mixes redis:// with"),
    ("redis+cluster://", "'redis+cluster://' has no host"),
    ("redis+cluster://:7000", "has no host"),
    ("redis+cluster://127.0.0.1:7000,:7001", "':7001' has no host"),
    ("redis+cluster://127.0.0.1:x", "'redis+cluster://127.0.0.1:x' has a bad port"),
    ("redis+cluster://127.0.0.1:7000,127.0.0.1:99999", "'127.0.0.1:99999' has a bad port"),
    ("redis+cluster://127.0.0.1:7000/2", "database 0 only"),
    ("redis+cluster://127.0.0.1:7000,127.0.0.1:7000", "listed twice"),
    ("redis://127.0.0.1:x", "has a bad port"),
    ("redis://", "has no host"),
    ("nosuch://x", "unknown scheme"),
])
def test_state_url_errors_name_the_value(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=re.escape(message)) as err:
        parse_state_url(url)
    assert url in str(err.value)


def test_cluster_url_seed_nodes() -> None:
    parsed = parse_state_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001,"
                             "redis+cluster://10.0.0.3:7002/0")
    assert parsed.scheme == "redis+cluster"
    assert parsed.shards == ("redis://:pw@10.0.0.1:7000", "redis://:pw@10.0.0.2:7001",
                             "redis://:pw@10.0.0.3:7002")


def masters_with_keys(cluster: RedisCluster, name: str) -> int:
    return sum(bool(n.client().keys(f"ctr:{{{name}:*")) for n in cluster.nodes)


@redis
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_exact_keys_match_memory(name: str, criteo_file: Path,
                                 redis_cluster: RedisCluster) -> None:
    p_mem = learn(build(name), criteo_file, None)
    store = RedisState(redis_cluster.url, f"m-{name}")
    model = store.attach(build(name))
    p_red = learn(model, criteo_file, store)
    np.testing.assert_allclose(p_red, p_mem, rtol=0, atol=1e-12)
    assert store.flushes == 4 and len(store.shards) == CLUSTER_GROUPS
    assert masters_with_keys(redis_cluster, f"m-{name}") == 3  # the groups span the masters
    store.close()


@redis
def test_hashed_chunks_match_memory(criteo_file: Path, redis_cluster: RedisCluster) -> None:
    p_mem = learn(build("ftrl", hash_bits=20), criteo_file, None)
    store = RedisState(redis_cluster.url, "hashed")
    model = store.attach(build("ftrl", hash_bits=20))
    p_red = learn(model, criteo_file, store)
    np.testing.assert_allclose(p_red, p_mem, rtol=0, atol=1e-7)
    store.close()


@redis
def test_identity_and_group_count(redis_cluster: RedisCluster) -> None:
    RedisState(redis_cluster.url, "ident", groups=8).attach(build(alpha=0.2))
    with pytest.raises(IdentityError, match="params differ"):
        RedisState(redis_cluster.url, "ident").attach(build(alpha=0.3))
    with pytest.raises(IdentityError, match="features differ"):
        RedisState(redis_cluster.url, "ident").attach(build(alpha=0.2, hash_bits=18))
    # the stored model's slot-group count wins over this process's default
    again = RedisState(redis_cluster.url, "ident")
    again.attach(build(alpha=0.2))
    assert len(again.shards) == 8
    RedisState(redis_cluster.url, "ident-other").attach(build(alpha=0.3))  # a free name


@redis
def test_a_cluster_node_as_a_standalone_shard_is_refused(redis_cluster: RedisCluster) -> None:
    for node in redis_cluster.nodes:
        with pytest.raises(StoreError, match="redis\\+cluster://"):
            RedisState(node.url, "wrong-scheme").attach(build())


@redis
def test_a_standalone_server_as_a_cluster_is_refused(redis_shards: list[RedisServer]) -> None:
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in redis_shards)
    with pytest.raises(StoreError, match="cluster support disabled"):
        RedisState(url, "not-a-cluster").attach(build())


def learn_with_migration(model: Model, data: Path, store: RedisState,
                         migrate: Any, at: int = 2, batches: int = 5) -> np.ndarray:
    """``learn``, calling ``migrate()`` before batch ``at`` (whose flush carries the deltas
    of the batches before it)."""
    reader = open_reader(data, "criteo", model.registry, model.options, chunk_bytes=60_000)
    out = []
    for i, batch in enumerate(itertools.islice(reader, batches)):
        if i == at:
            migrate()
        store.before_learn(model, batch)
        out.append(model.learn(batch).copy())
        store.after_learn(model, batch)
    store.sync(model)
    return np.concatenate(out)


def other_master(cluster: RedisCluster, slot: int) -> Any:
    owner = cluster.owner(slot)
    return next(n for n in cluster.nodes if n is not owner)


@redis
def test_slots_moved_between_flushes_follow_moved(criteo_file: Path,
                                                  redis_cluster: RedisCluster) -> None:
    """Group 0 (config, counters, field list) and group 1 move to another master between
    two flushes: the next calls meet MOVED, refresh the slot map and are applied once."""
    p_mem = learn(build(), criteo_file, None, batches=5)
    store = RedisState(redis_cluster.url, "moved")
    model = store.attach(build())
    slots = [store.shards[0].slot, store.shards[1].slot]  # type: ignore[union-attr]

    def migrate() -> None:
        for slot in slots:
            assert redis_cluster.move_slot(slot, other_master(redis_cluster, slot)) > 0

    p_red = learn_with_migration(model, criteo_file, store, migrate)
    np.testing.assert_allclose(p_red, p_mem, rtol=0, atol=1e-12)
    assert store.redirects["moved"] >= 1
    snap = snapshot(RedisState(redis_cluster.url, "moved"))
    keys = model.optimizer.table.keys()
    np.testing.assert_array_equal(snap.optimizer.state_of(keys)["n"],
                                  model.optimizer.state_of(keys)["n"])
    assert snap.rows == model.rows


@redis
def test_slot_migrating_during_a_flush_follows_ask(criteo_file: Path,
                                                   redis_cluster: RedisCluster) -> None:
    """Group 0's slot is MIGRATING (its keys already on the target) when a flush is sent:
    the source answers ASK, the target TRYAGAIN (the call's keys are split or new), the
    flush waits; once the slot is handed over, MOVED leads it to the new master."""
    p_mem = learn(build(), criteo_file, None, batches=5)
    store = RedisState(redis_cluster.url, "ask")
    model = store.attach(build())
    slot = store.shards[0].slot  # type: ignore[union-attr]
    errors: list[BaseException] = []

    def finish_after_ask(target: Any) -> None:
        try:
            deadline = time.monotonic() + 60
            while store.redirects["ask"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            redis_cluster.finish_migration(slot, target)
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)

    finisher: list[threading.Thread] = []

    def migrate() -> None:
        source, target = redis_cluster.owner(slot), other_master(redis_cluster, slot)
        redis_cluster.start_migration(slot, source, target)
        assert redis_cluster.migrate_keys(slot, source, target) > 0
        # ordinary commands follow ASK too: the last flush's id and the config moved
        assert store.flush_applied(f"{store.worker}:{store.seq}")
        assert store.stored_config() is not None
        finisher.append(threading.Thread(target=finish_after_ask, args=(target,)))
        finisher[0].start()

    try:
        p_red = learn_with_migration(model, criteo_file, store, migrate)
    finally:
        for t in finisher:
            t.join(timeout=120)
    assert not errors
    np.testing.assert_allclose(p_red, p_mem, rtol=0, atol=1e-12)
    assert store.redirects["ask"] >= 1 and store.redirects["wait"] >= 1
    assert store.redirects["moved"] >= 1
    snap = snapshot(RedisState(redis_cluster.url, "ask"))
    assert snap.rows == model.rows
    keys = model.optimizer.table.keys()
    np.testing.assert_array_equal(snap.optimizer.state_of(keys)["z"],
                                  model.optimizer.state_of(keys)["z"])


@redis
@pytest.mark.parametrize("hash_bits", [0, 18])
def test_load_state_and_snapshot_round_trip(hash_bits: int, criteo_file: Path,
                                            redis_cluster: RedisCluster) -> None:
    check_seed_round_trip(redis_cluster.url, f"seeded-{hash_bits}", hash_bits, criteo_file)


@redis
def test_ctr_train_and_load_state_on_a_cluster(criteo_file: Path, tmp_path: Path,
                                               redis_cluster: RedisCluster) -> None:
    from service.cli import main

    url = redis_cluster.url
    mem, red = tmp_path / "mem.txt", tmp_path / "red.txt"
    assert main(["train", str(criteo_file), "--quiet", "--predictions-out", str(mem),
                 "--model-out", str(tmp_path / "m.ctr")]) == 0
    assert main(["train", str(criteo_file), "--quiet", "--predictions-out", str(red),
                 "--state", url, "--model-name", "cli",
                 "--model-out", str(tmp_path / "snap.ctr")]) == 0
    np.testing.assert_allclose(np.loadtxt(red), np.loadtxt(mem), rtol=0, atol=1e-12)
    a, b = Model.load(tmp_path / "m.ctr"), Model.load(tmp_path / "snap.ctr")
    keys = a.optimizer.table.keys()
    np.testing.assert_array_equal(b.optimizer.weights(keys), a.optimizer.weights(keys))
    assert main(["load-state", str(tmp_path / "m.ctr"), "--state", url,
                 "--model-name", "cli"]) == 2  # already holds state: refused
    assert main(["load-state", str(tmp_path / "m.ctr"), "--state", url,
                 "--model-name", "cli-copy"]) == 0
    assert main(["load-state", "--snapshot-out", str(tmp_path / "back.ctr"), "--state", url,
                 "--model-name", "cli-copy"]) == 0
    back = Model.load(tmp_path / "back.ctr")
    assert back.rows == a.rows
    np.testing.assert_array_equal(back.optimizer.weights(keys), a.optimizer.weights(keys))
    assert main(["load-state", str(tmp_path / "m.ctr"), "--state", url, "--model-name",
                 "cli-copy", "--replace"]) == 0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@redis
@pytest.mark.anyio
async def test_service_learns_and_predicts_on_a_cluster(redis_cluster: RedisCluster) -> None:
    from service_helpers import running_app, some_events
    from test_service_redis import settings, train_all

    events = some_events(2000, seed=5)
    probe = {"events": some_events(50, seed=99)}
    async with running_app(settings()) as client:
        expected = await train_all(client, events)
        expected_probe = (await client.post("/v1/predict", json=probe)).json()["p"]
    state = redis_cluster.url
    async with running_app(settings(state=state, model_name="svc")) as client:
        got = await train_all(client, events)
        got_probe = (await client.post("/v1/predict", json=probe)).json()["p"]
        ready = (await client.get("/readyz")).json()
    assert got == pytest.approx(expected, abs=1e-12, rel=0)
    assert got_probe == pytest.approx(expected_probe, abs=1e-12, rel=0)
    assert ready["status"] == "ok", ready
    # a second app on the same cluster starts from the shared state
    async with running_app(settings(state=state, model_name="svc")) as client:
        again = (await client.post("/v1/predict", json=probe)).json()["p"]
        info = (await client.get("/v1/model")).json()
    assert again == pytest.approx(got_probe, abs=1e-12, rel=0)
    assert info["rows"] == len(events)

"""The Redis state store against real redis-server shards: one process with a flush after
every batch predicts as the memory store does; flush ids; identity; load-state/snapshot."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from redis_servers import RedisServer, ReplyDropper

from ftrl_core.deltas import store_records
from ftrl_core.fields import FieldRegistry
from ftrl_core.model import Model
from ftrl_core.optimizers import OPTIMIZERS
from ftrl_core.readers import FeatureOptions, open_reader
from service.stores import IdentityError
from service.stores.redis import FlushPolicy, RedisState, seed, snapshot

pytestmark = pytest.mark.redis

PARAMS = {"ftrl": {"alpha": 0.2}, "rda": {}, "fobos": {"rate": "global"},
          "tg": {"k": 3.0, "theta": 0.5}}


def build(name: str = "ftrl", hash_bits: int = 0, **params: object) -> Model:
    opt = OPTIMIZERS[name](**{**PARAMS[name], **params})  # type: ignore[arg-type]
    return Model(opt, FieldRegistry(), FeatureOptions(hash_bits=hash_bits), "criteo")


#: a flush after every batch (``ctr train --state``'s default)
EVERY_BATCH = FlushPolicy(durable_locally=False)


def learn(model: Model, data: Path, store: RedisState | None, batches: int = 4,
          skip: int = 0, policy: FlushPolicy = EVERY_BATCH) -> np.ndarray:
    """Learn ``batches`` of ``data`` as ``ctr train --state`` does: the store flushes when
    ``policy`` says, and once at the end."""
    reader = open_reader(data, "criteo", model.registry, model.options, chunk_bytes=60_000)
    out = []
    for batch in itertools.islice(reader, skip, skip + batches):
        if store is not None:
            store.before_learn(model, batch)
        out.append(model.learn(batch).copy())
        if store is not None:
            store.after_learn(model, batch)
            if policy.due(store.rows_pending, store.tracker.pending, 0.0):
                store.sync(model)
    if store is not None:
        store.sync(model)
    return np.concatenate(out)


def url(shards: list[RedisServer]) -> str:
    return ",".join(s.url for s in shards)


def test_tls_shard(criteo_file: Path, tmp_path: Path) -> None:
    """``rediss://``: a shard that speaks TLS only (a self-signed certificate the client
    verifies with ``ssl_ca_certs``) holds the state as a plain one does."""
    import shutil
    import subprocess

    from redis_servers import free_port, start_redis

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl binary to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    port = free_port()
    server = start_redis(tmp_path / "tls", "--tls-port", str(port), "--tls-cert-file",
                         str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
                         str(cert), "--tls-auth-clients", "no")
    try:
        p_mem = learn(build(), criteo_file, None)
        store = RedisState(f"rediss://127.0.0.1:{port}?ssl_ca_certs={cert}", "tls")
        p_tls = learn(store.attach(build()), criteo_file, store)
        np.testing.assert_allclose(p_tls, p_mem, rtol=0, atol=1e-12)
        assert store.flushes == 4
        store.close()
        # the plain port of the same server sees the state the TLS client wrote
        assert server.client().exists("ctr:tls:config") == 1
        with pytest.raises(Exception, match=r"(?i)certificate verify failed"):
            bad = RedisState(f"rediss://127.0.0.1:{port}", "tls", retries=0)
            bad.attach(build())
    finally:
        server.stop()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_exact_keys_match_memory(name: str, criteo_file: Path,
                                 redis_shards: list[RedisServer]) -> None:
    p_mem = learn(build(name), criteo_file, None)
    store = RedisState(url(redis_shards), f"m-{name}")
    model = store.attach(build(name))
    p_red = learn(model, criteo_file, store)
    np.testing.assert_allclose(p_red, p_mem, rtol=0, atol=1e-12)
    assert store.flushes == 4
    assert all(s.client().dbsize() > 1 for s in redis_shards)  # both shards hold state
    store.close()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_hashed_chunks_match_memory(name: str, criteo_file: Path,
                                    redis_shards: list[RedisServer]) -> None:
    p_mem = learn(build(name, hash_bits=18), criteo_file, None)
    store = RedisState(url(redis_shards), f"h-{name}")
    model = store.attach(build(name, hash_bits=18))
    p_red = learn(model, criteo_file, store)
    np.testing.assert_allclose(p_red, p_mem, rtol=0, atol=1e-7)
    store.close()


def test_sync_every_events_and_resume_from_redis(criteo_file: Path,
                                                 redis_shards: list[RedisServer]) -> None:
    """Two processes one after the other (a fresh cache reads what the first flushed)."""
    p_mem = learn(build(), criteo_file, None, batches=6)
    first = RedisState(url(redis_shards), "resume")
    p1 = learn(first.attach(build()), criteo_file, first, batches=3,
               policy=FlushPolicy(every_events=700, durable_locally=False))
    second = RedisState(url(redis_shards), "resume")
    model = second.attach(build())
    assert model.rows == 3 * 0 + first.model.rows  # type: ignore[union-attr]
    p2 = learn(model, criteo_file, second, batches=3, skip=3)
    np.testing.assert_allclose(np.concatenate([p1, p2]), p_mem, rtol=0, atol=1e-12)


def test_retried_flush_is_applied_once(criteo_file: Path,
                                       redis_shards: list[RedisServer]) -> None:
    proxy = ReplyDropper(redis_shards[0].port).start()
    try:
        p_mem = learn(build(), criteo_file, None)
        store = RedisState(f"{proxy.url},{redis_shards[1].url}", "drop")
        model = store.attach(build())
        reader = open_reader(criteo_file, "criteo", model.registry, model.options,
                             chunk_bytes=60_000)
        out = []
        for i, batch in enumerate(itertools.islice(reader, 4)):
            if i == 2:  # the flush of batches 0-1 runs, its reply is lost, it is resent
                proxy.drop_next_reply()
            store.before_learn(model, batch)
            out.append(model.learn(batch).copy())
            store.after_learn(model, batch)
        store.sync(model)
        assert proxy.drops == 1
        np.testing.assert_allclose(np.concatenate(out), p_mem, rtol=0, atol=1e-12)
        snap = snapshot(store)
        keys = model.optimizer.table.keys()
        np.testing.assert_array_equal(snap.optimizer.state_of(keys)["n"],
                                      model.optimizer.state_of(keys)["n"])
        assert snap.rows == model.rows
    finally:
        proxy.stop()


def batches(model: Model, data: Path, n: int) -> list:
    reader = open_reader(data, "criteo", model.registry, model.options, chunk_bytes=60_000)
    return list(itertools.islice(reader, n))


@pytest.mark.parametrize("name", ["ftrl", "fobos"])
def test_learning_while_a_flush_is_in_flight_stays_exact(
        name: str, criteo_file: Path, redis_shards: list[RedisServer]) -> None:
    """The service learns while its flush is on the wire (prepare, learn more, then
    roundtrip and apply): one worker still predicts exactly as the memory store."""
    p_mem = learn(build(name), criteo_file, None, batches=5)
    store = RedisState(url(redis_shards), f"overlap-{name}")
    model = store.attach(build(name))
    out = []
    for i, batch in enumerate(batches(model, criteo_file, 5)):
        store.before_learn(model, batch)
        out.append(model.learn(batch).copy())
        store.after_learn(model, batch)
        if i in (0, 2):
            flight = store.prepare()
            assert flight is not None and store.next_flush_id == flight.flush_id
        if i in (1, 3):  # one batch learned on the same keys while the flush was out
            assert flight is not None
            store.apply(flight, store.roundtrip(flight))
            assert store.in_flight is None
    store.sync(model)
    np.testing.assert_allclose(np.concatenate(out), p_mem, rtol=0, atol=1e-12)
    shared = snapshot(store)
    keys = model.optimizer.table.keys()
    np.testing.assert_array_equal(shared.optimizer.table.lookup(keys) >= 0, True)
    assert shared.rows == model.rows == sum(len(o) for o in out)
    store.close()


@pytest.mark.parametrize("name", ["ftrl", "rda", "fobos"])
def test_flush_merged_under_a_worker_that_went_on_learning(
        name: str, criteo_file: Path, redis_shards: list[RedisServer]) -> None:
    """Worker A prepares a flush, worker B flushes over the same keys, A learns on and only
    then applies its reply: nothing either learned is lost or counted twice. The shared
    state is additive (FTRL's z, n; RDA's G; FOBOS's w, n and clock stamp move by deltas),
    so it must be the sum of every learning step's increments, whichever worker made it,
    and A's cache must end equal to it. (One, two and three columns: the merge script has a
    path for each.)"""
    a_state = RedisState(url(redis_shards), f"merge-{name}")
    b_state = RedisState(url(redis_shards), f"merge-{name}")
    a = a_state.attach(build(name))
    b = b_state.attach(build(name))
    cols = a.optimizer.state_names
    data = batches(build(name), criteo_file, 4)
    total: dict[int, np.ndarray] = {}

    def step(model: Model, state: RedisState, batch) -> None:  # type: ignore[no-untyped-def]
        state.before_learn(model, batch)
        keys = np.unique(batch.keys)
        before = model.optimizer.state_of(keys)
        model.learn(batch)
        state.after_learn(model, batch)
        after = model.optimizer.state_of(keys)
        for j, k in enumerate(keys.tolist()):
            inc = np.array([after[c][j] - before[c][j] for c in cols], dtype=np.float64)
            total[k] = total.get(k, 0.0) + inc

    step(a, a_state, data[0])
    flight = a_state.prepare()
    assert flight is not None
    step(b, b_state, data[1])
    b_state.sync(b)  # B's deltas reach Redis first: A's reply will differ from its own
    step(a, a_state, data[2])  # the same frequent keys (the bias at least), learned on
    a_state.apply(flight, a_state.roundtrip(flight))
    step(a, a_state, data[3])
    a_state.sync(a)
    shared = snapshot(a_state)
    keys = np.array(sorted(total), dtype=np.uint64)
    got = shared.optimizer.state_of(keys)
    want = np.array([total[k] for k in keys.tolist()])
    mine = a.optimizer.state_of(keys)
    touched = a.optimizer.table.lookup(keys) >= 0
    for i, c in enumerate(cols):
        np.testing.assert_allclose(got[c], want[:, i], rtol=1e-5, atol=1e-5, err_msg=c)
        np.testing.assert_array_equal(mine[c][touched], got[c][touched], err_msg=c)
    assert shared.rows == sum(batch.rows for batch in data)
    a_state.close()
    b_state.close()


def test_identity_refused(redis_shards: list[RedisServer]) -> None:
    RedisState(url(redis_shards), "ident").attach(build(alpha=0.2))
    with pytest.raises(IdentityError, match="params differ"):
        RedisState(url(redis_shards), "ident").attach(build(alpha=0.3))
    with pytest.raises(IdentityError, match="shard 0 of 2"):
        RedisState(f"{redis_shards[1].url},{redis_shards[0].url}", "ident").attach(
            build(alpha=0.2))
    RedisState(url(redis_shards), "other").attach(build(alpha=0.3))  # another name is free


def check_seed_round_trip(state_url: str, name: str, hash_bits: int, data: Path) -> None:
    """Seed a store from a trained model, read it back (equal weights), and train on from
    the store: the same predictions as training on from the model itself. Standalone
    shards and a cluster (``test_redis_cluster``) pass the same checks."""
    trained = build("fobos", hash_bits=hash_bits)
    learn(trained, data, None, batches=3)
    assert seed(RedisState(state_url, name), trained) == trained.optimizer.table.size
    snap = snapshot(RedisState(state_url, name))
    assert snap.rows == trained.rows
    keys = trained.optimizer.table.keys()
    atol = 0 if hash_bits == 0 else 2**-32
    np.testing.assert_allclose(snap.optimizer.weights(keys), trained.optimizer.weights(keys),
                               rtol=0, atol=atol)
    # training on from the seeded store equals training on from the model file
    cont_mem = learn(trained, data, None, batches=2, skip=3)
    worker = RedisState(state_url, name)
    model = worker.attach(build("fobos", hash_bits=hash_bits))
    cont_red = learn(model, data, worker, batches=2, skip=3)
    np.testing.assert_allclose(cont_red, cont_mem, rtol=0, atol=1e-12 if hash_bits == 0 else 1e-7)


@pytest.mark.parametrize("hash_bits", [0, 18])
def test_load_state_and_snapshot_round_trip(hash_bits: int, criteo_file: Path,
                                            redis_shards: list[RedisServer]) -> None:
    check_seed_round_trip(url(redis_shards), "seeded", hash_bits, criteo_file)


def test_bytes_per_coordinate(redis_shards: list[RedisServer]) -> None:
    """The exact-key layout with about 100 coordinates per bucket stays under 40 bytes of
    used_memory per coordinate (the issue's target)."""
    model = build()
    n = 50_000
    rng = np.random.default_rng(5)
    keys = rng.integers(1, 2**63, size=n, dtype=np.uint64)
    store_records(model.optimizer.table, keys,
                  rng.random((n, 2), dtype=np.float32).view(np.uint64))
    RedisState(url(redis_shards), "warm").attach(build())  # scripts, connections: not data
    before = sum(s.client().info("memory")["used_memory"] for s in redis_shards)
    seed(RedisState(url(redis_shards), "mem", buckets=max(n // 100, 1)), model)
    after = sum(s.client().info("memory")["used_memory"] for s in redis_shards)
    assert (after - before) / n < 40


def test_ctr_train_state_redis_matches_memory(criteo_file: Path, tmp_path: Path,
                                              redis_shards: list[RedisServer]) -> None:
    from service.cli import main

    mem, red = tmp_path / "mem.txt", tmp_path / "red.txt"
    assert main(["train", str(criteo_file), "--quiet", "--predictions-out", str(mem),
                 "--model-out", str(tmp_path / "m.ctr")]) == 0
    assert main(["train", str(criteo_file), "--quiet", "--predictions-out", str(red),
                 "--state", url(redis_shards), "--model-name", "cli",
                 "--model-out", str(tmp_path / "snap.ctr")]) == 0
    np.testing.assert_allclose(np.loadtxt(red), np.loadtxt(mem), rtol=0, atol=1e-12)
    a, b = Model.load(tmp_path / "m.ctr"), Model.load(tmp_path / "snap.ctr")
    keys = a.optimizer.table.keys()
    np.testing.assert_array_equal(b.optimizer.weights(keys), a.optimizer.weights(keys))
    assert main(["load-state", str(tmp_path / "m.ctr"), "--state", url(redis_shards),
                 "--model-name", "cli"]) == 2  # already holds state: refused
    assert main(["load-state", str(tmp_path / "m.ctr"), "--state", url(redis_shards),
                 "--model-name", "copy"]) == 0


def test_a_staged_flush_is_completed_once(criteo_file: Path,
                                          redis_shards: list[RedisServer]) -> None:
    """A consumer that died in a flush it had staged, having reached shard 1 only: another
    process finds the staged copy, completes it (shard 0 applies it now, shard 1 does not
    apply it again), and the shared state equals the memory store's."""
    from service.stores.redis import staging, transport

    memory = build()
    learn(memory, criteo_file, None, batches=2)
    dead = RedisState(url(redis_shards), "staged")
    model = dead.attach(build())
    learn(model, criteo_file, dead, batches=1)
    (batch,) = batches(model, criteo_file, 2)[1:]
    dead.before_learn(model, batch)
    model.learn(batch)
    dead.after_learn(model, batch)
    flight = dead.prepare()
    assert flight is not None and set(flight.calls) == {0, 1}
    staging.stage(dead, flight)
    transport.roundtrip(dead, {1: flight.calls[1][0]})  # then the process dies
    dead.close()
    other = RedisState(url(redis_shards), "staged")
    other.attach(build())
    assert not other.flush_applied(flight.flush_id)  # shard 0 has not seen it
    assert staging.settled(other, flight.flush_id)  # completed now
    assert staging.settled(other, flight.flush_id)  # and not staged any more
    transport.roundtrip(other, {1: flight.calls[1][0]})  # a resend changes nothing
    shared = snapshot(other)
    keys = memory.optimizer.table.keys()
    for name in memory.optimizer.state_names:
        np.testing.assert_array_equal(shared.optimizer.state_of(keys)[name],
                                      memory.optimizer.state_of(keys)[name], err_msg=name)
    assert shared.rows == memory.rows
    other.close()

"""Nothing acknowledged is lost, nothing is learned twice: real `ctr serve` processes
SIGKILLed at random moments, restarted on their data directory, and retried batches
resent with their Idempotency-Key.

The reference is the plain rule: the model equals ``ctr train`` on every event sent, once,
in order (memory store); the shared row count equals the events acknowledged (Redis)."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from datagen import criteo_lines
from redis_servers import RedisServer, start_redis
from servers import ServerProcess, start_server
from service_helpers import criteo_events, running_app, wait_ready_status

from ftrl_core.model import Model
from ftrl_core.readers.jsonl import JsonlFormat, parse_event_array
from service.cli import main
from service.settings import Settings

BATCH = 200
#: the memory kill test's batches: small, so that each kill lands among many requests
SMALL = 50


def post(client: httpx.Client, events: list[dict[str, Any]], key: str) -> httpx.Response:
    return client.post("/v1/train", json={"events": events},
                       headers={"Idempotency-Key": key})


def reference(tmp_path: Path, lines: list[str]) -> Model:
    """``ctr train`` on the same rows, in order."""
    tsv = tmp_path / "rows.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "reference.ctr"
    assert main(["train", str(tsv), "--alpha", "0.2", "--quiet", "--model-out",
                 str(out)]) == 0
    return Model.load(out)


def predict_with(model: Model, events: list[dict[str, Any]]) -> np.ndarray:
    body = json.dumps({"events": events}).encode()
    batch = parse_event_array(body, JsonlFormat(model.registry, model.options),
                              require_label=False).batch
    return model.predict(batch)[0]


@pytest.mark.slow
def test_memory_store_survives_20_sigkills(tmp_path: Path) -> None:
    """20 SIGKILLs at random moments during a keyed replay (one request in flight, so the
    server learns the rows in file order); after each restart the batch that got no answer
    is resent with its key. At the end every event was learned exactly once: the rows are
    the events sent and the predictions are ``ctr train``'s on the same rows."""
    lines = criteo_lines(600 * SMALL, seed=21)
    events = criteo_events(lines)
    batches = [events[i:i + SMALL] for i in range(0, len(events), SMALL)]
    data = tmp_path / "data"
    rng = random.Random(5)
    acked = 0  # batches answered 2xx
    kills = 0
    server: ServerProcess | None = None
    try:
        while acked < len(batches):
            server = start_server(tmp_path / "serve", "--alpha", "0.2", "--data-dir",
                                  str(data), "--snapshot-every", "0.3")
            killer = None
            # the kill is armed after a random number of answers (so 20 of them fit in the
            # replay however fast the machine is) and lands a random moment later
            arm_at = acked + rng.randint(1, 20) if kills < 20 else len(batches)
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while acked < len(batches):
                    if killer is None and acked >= arm_at:
                        killer = threading.Timer(rng.uniform(0.0, 0.05), server.kill)
                        killer.start()
                    try:
                        r = post(client, batches[acked], f"batch-{acked}")
                    except httpx.TransportError:
                        break  # killed: the batch sent is resent, with its key
                    assert r.status_code == 200, r.text
                    assert r.json()["accepted"] == len(batches[acked])
                    acked += 1
            if killer is not None:
                killer.join()
                server.proc.wait(timeout=10)
                assert server.proc.returncode == -signal.SIGKILL
                kills += 1
        assert server is not None
        if server.proc.poll() is not None:  # the last kill came after the last answer
            server = start_server(tmp_path / "serve", "--alpha", "0.2", "--data-dir",
                                  str(data), "--snapshot-every", "0.3")
        with httpx.Client(base_url=server.url, timeout=30) as client:
            info = client.get("/v1/model").json()
            probe = criteo_events(criteo_lines(300, seed=22))
            got = np.array(client.post("/v1/predict", json={"events": probe}).json()["p"])
        server.stop()
    finally:
        if server is not None:
            server.kill()
    assert kills == 20
    assert info["rows"] == len(events)  # none lost, none twice
    want = predict_with(reference(tmp_path, lines), probe)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


@pytest.mark.anyio
async def test_idempotency_keys_in_one_process(tmp_path: Path) -> None:
    """The rules of the key (``learner.idempotency``) against a plain reference: a repeat
    is answered as the first and learned once, another body under the key is 422, a bad
    key 400; a restart on the data directory still knows the keys."""
    events = criteo_events(criteo_lines(400, seed=3))
    a, b = events[:200], events[200:]
    async with running_app(Settings(alpha=0.2, data_dir=tmp_path)) as client:
        first = await client.post("/v1/train", json={"events": a},
                                  headers={"Idempotency-Key": "k-a"})
        again = await client.post("/v1/train", json={"events": a},
                                  headers={"Idempotency-Key": "k-a"})
        assert first.status_code == again.status_code == 200
        assert "idempotent-replayed" not in first.headers
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["accepted"] == 200
        assert again.json()["model_version"] == first.json()["model_version"] == 200
        np.testing.assert_allclose(again.json()["p"], first.json()["p"], rtol=1e-6)
        other = await client.post("/v1/train", json={"events": b},
                                  headers={"Idempotency-Key": "k-a"})
        assert other.status_code == 422 and other.json()["type"].endswith(
            "/idempotency-key-reused")
        for bad in ("", "x" * 129, "a b", "tab\there"):
            r = await client.post("/v1/train", json={"events": b},
                                  headers={"Idempotency-Key": bad})
            assert r.status_code == 400, bad
            assert r.json()["type"].endswith("/invalid-idempotency-key")
        assert (await client.get("/v1/model")).json()["rows"] == 200
        metrics = (await client.get("/metrics")).text
        assert "ctr_idempotent_replays_total 1.0" in metrics
    async with running_app(Settings(data_dir=tmp_path)) as client:  # a restart
        again = await client.post("/v1/train", json={"events": a},
                                  headers={"Idempotency-Key": "k-a"})
        assert again.headers["idempotent-replayed"] == "true"
        r = await client.post("/v1/train", json={"events": b},
                              headers={"Idempotency-Key": "k-b"})
        assert r.status_code == 200
        assert (await client.get("/v1/model")).json()["rows"] == 400


def test_replay_rides_out_a_server_restart(tmp_path: Path) -> None:
    """``ctr replay`` keys every batch and retries: the server SIGKILLed in the middle and
    restarted, the replay ends with every row learned once."""
    lines = criteo_lines(40 * BATCH, seed=8)
    tsv = tmp_path / "rows.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    data = tmp_path / "data"
    server = start_server(tmp_path / "serve", "--alpha", "0.2", "--data-dir", str(data))
    port = server.port
    result: dict[str, int] = {}

    def replay() -> None:
        result["code"] = main(["replay", str(tsv), "--url", server.url, "--batch-size",
                               str(BATCH), "--concurrency", "2", "--quiet"])

    sender = threading.Thread(target=replay)
    sender.start()
    again = None
    try:
        time.sleep(0.3)
        server.kill()
        again = start_server(tmp_path / "serve", "--alpha", "0.2", "--data-dir", str(data),
                             port=port)
        sender.join(180)
        assert not sender.is_alive() and result["code"] == 0
        with httpx.Client(base_url=again.url, timeout=30) as client:
            assert client.get("/v1/model").json()["rows"] == len(lines)
    finally:
        server.kill()
        if again is not None:
            again.stop()


# -- Redis ------------------------------------------------------------------------------------


def aof_shard(workdir: Path) -> RedisServer:
    return start_redis(workdir, "--appendonly", "yes", "--appendfsync", "always")


def restart_shard(server: RedisServer, workdir: Path) -> RedisServer:
    import subprocess

    from redis_servers import REDIS_SERVER

    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(server.port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--dir", str(workdir),
         "--logfile", str(server.log)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    back = RedisServer(server.port, proc, server.log)
    deadline = time.monotonic() + 30  # a loaded machine restarts slowly
    while True:
        try:
            if back.client().ping():
                return back
        except Exception:
            assert time.monotonic() < deadline, "redis-server did not restart"
            time.sleep(0.05)


def every_worker_rows(url: str, workers: int, seconds: float = 60.0) -> dict[str, int]:
    """Each worker's latest answer of ``/v1/model`` rows (new connections until every
    worker has answered), once no worker holds unflushed rows and all answers agree: a
    worker that answered early may have seen the shared rows before another worker's
    flush of its recovered tail, so only the settled answers are compared."""
    deadline = time.monotonic() + seconds
    seen: dict[str, int] = {}
    while (len(seen) < workers or any(v < 0 for v in seen.values())
           or len(set(seen.values())) > 1):
        assert time.monotonic() < deadline, seen
        with httpx.Client(base_url=url, timeout=10) as client:
            r = client.get("/v1/model")
        assert r.status_code in (200, 503), (r.status_code, r.text)
        if r.status_code == 503:  # that worker is still loading after the restart
            time.sleep(0.05)
            continue
        info = r.json()
        seen[info["worker"]] = info["rows"] if info["unflushed_rows"] == 0 else -1
        time.sleep(0.05)
    return seen


@pytest.mark.slow
@pytest.mark.redis
def test_redis_shard_and_server_killed_under_load(tmp_path: Path) -> None:
    """Two workers, two AOF shards (appendfsync always), keyed batches from two clients
    that retry: shard 2 is SIGKILLed under load and restarted, later the whole server is
    SIGKILLed and restarted. At the end the shared rows equal the events acknowledged (every
    batch is, by then), none counted twice, and every worker reports the same rows."""
    shards = [aof_shard(tmp_path / f"redis{i}") for i in range(2)]
    state = ",".join(s.url for s in shards)
    flags = ["--workers", "2", "--state", state, "--data-dir", str(tmp_path / "data"),
             "--alpha", "0.2"]
    batches = [criteo_events(criteo_lines(BATCH, seed=100 + i)) for i in range(80)]
    todo = list(range(len(batches)))
    lock = threading.Lock()
    acked: list[int] = []
    server = start_server(tmp_path / "serve", *flags)
    port = server.port
    servers = [server]
    stop = threading.Event()
    last: dict[int, str] = {}  # each sender's last answer (what a stuck one is told)

    def client_loop() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            while not stop.is_set():
                with lock:
                    if not todo:
                        return
                    i = todo.pop(0)
                while not stop.is_set():
                    try:
                        r = post(client, batches[i], f"rb-{i}")
                    except httpx.TransportError as exc:
                        last[threading.get_ident()] = f"rb-{i}: {exc!r}"
                        time.sleep(0.1)  # the server is down: the same key again
                        continue
                    last[threading.get_ident()] = f"rb-{i}: {r.status_code} {r.text[:200]}"
                    if r.status_code in (409, 503):
                        time.sleep(float(r.headers.get("retry-after", "1")) / 5)
                        continue
                    assert r.status_code == 200, r.text
                    with lock:
                        acked.append(i)
                    break

    senders = [threading.Thread(target=client_loop) for _ in range(2)]
    for t in senders:
        t.start()
    try:
        while len(acked) < 15:
            time.sleep(0.02)
        shards[1].proc.kill()  # SIGKILL under load
        shards[1].proc.wait()
        time.sleep(1.5)
        shards[1] = restart_shard(shards[1], tmp_path / "redis1")
        while len(acked) < 45:
            time.sleep(0.02)
        servers[-1].kill()  # every worker, at once
        servers.append(start_server(tmp_path / "serve", *flags, port=port))
        for t in senders:
            t.join(240)
        assert not any(t.is_alive() for t in senders), last
        assert sorted(acked) == list(range(len(batches)))
        rows = every_worker_rows(servers[-1].url, 2)
        assert set(rows.values()) == {len(batches) * BATCH}, rows
        stored = shards[0].client().hget("ctr:default:t", "1")
        assert stored is not None and int(np.frombuffer(stored, "<f8")[0]) == 80 * BATCH
    finally:
        stop.set()
        for s in servers:
            s.kill()
        for shard in shards:
            shard.stop()


@pytest.mark.redis
@pytest.mark.anyio
async def test_frozen_shard_is_seen_and_the_worker_recovers_alone(tmp_path: Path) -> None:
    """A SIGSTOPped shard makes /readyz 503 within 2 s (the PING probe), and once it runs
    again the worker recovers and flushes with no traffic at all."""
    shards = [start_redis(tmp_path / f"r{i}") for i in range(2)]
    try:
        state = ",".join(s.url for s in shards)
        async with running_app(Settings(state=state, data_dir=tmp_path / "data")) as client:
            r = await client.post("/v1/train", json={"events": criteo_events(
                criteo_lines(300, seed=1))})
            assert r.status_code == 200
            shards[1].proc.send_signal(signal.SIGSTOP)
            try:
                await wait_ready_status(client, 503, seconds=2.0)
            finally:
                shards[1].proc.send_signal(signal.SIGCONT)
            body = await wait_ready_status(client, 200, seconds=10.0)  # no request but /readyz
            for _ in range(200):
                if body["store"]["rows_pending"] == 0:
                    break
                body = await wait_ready_status(client, 200, seconds=1.0)
            assert body["store"]["rows_pending"] == 0
            assert (await client.get("/v1/model")).json()["rows"] == 300
    finally:
        for s in shards:
            s.proc.send_signal(signal.SIGCONT)
            s.stop()



"""The attribution join across workers of a Redis state store (``service.join.marks``),
against real ``redis-server`` shards and real ``ctr serve`` processes.

Two processes on one ``--state`` and one ``--data-dir`` are two workers (each takes its
own slot), reachable one by one: an impression goes to worker A, its click to worker B.
``--workers 2`` (two processes behind one port) is checked too, by the sums every worker
reports (``cluster`` in ``GET /v1/join``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from redis_servers import RedisServer
from servers import ServerProcess, start_server
from service_helpers import some_events

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WINDOW = 100.0
FLAGS = ["--alpha", "0.2", "--join-window", str(WINDOW)]


def impressions(prefix: str, n: int, ts: float, seed: int) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i}", "ts": ts + i, "features": e["features"]}
            for i, e in enumerate(some_events(n, seed=seed))]


def post(server: ServerProcess, path: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    r = httpx.post(server.url + path, json={"events": events}, timeout=30)
    assert r.status_code == 200, (path, r.status_code, r.text)
    out: dict[str, Any] = r.json()
    return out


def join_of(server: ServerProcess) -> dict[str, Any]:
    r = httpx.get(server.url + "/v1/join", timeout=30)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def wait_join(server: ServerProcess, seconds: float = 30.0, **want: int) -> dict[str, Any]:
    """``/v1/join`` once every counter in ``want`` has its value (the shared tick runs
    every 0.25 s)."""
    deadline = time.monotonic() + seconds
    while True:
        status = join_of(server)
        if all(status[k] == v for k, v in want.items()):
            return status
        assert time.monotonic() < deadline, (want, status)
        time.sleep(0.05)


def settled_rows(server: ServerProcess, seconds: float = 30.0) -> int:
    """The shared model's rows once this worker has nothing unflushed."""
    deadline = time.monotonic() + seconds
    while True:
        info = httpx.get(server.url + "/v1/model", timeout=30).json()
        if info["unflushed_rows"] == 0:
            return int(info["rows"])
        assert time.monotonic() < deadline, info
        time.sleep(0.05)


def state_of(shards: list[RedisServer]) -> str:
    return ",".join(s.url for s in shards)


def probe(server: ServerProcess) -> np.ndarray:
    r = httpx.post(server.url + "/v1/predict", json={"events": some_events(40, seed=77)},
                   timeout=30)
    assert r.status_code == 200, r.text
    return np.array(r.json()["p"])


@pytest.mark.parametrize("policy", ["wait", "fnw"])
def test_a_click_on_another_worker_joins_and_a_late_one_changes_nothing(
        tmp_path: Path, redis_shards: list[RedisServer], policy: str) -> None:
    """Impressions on worker A, clicks on worker B: they join on A; the model equals the
    one-worker memory store's fed the same requests; a click after the window is late
    (counted by A, the owner) and learns nothing."""
    flags = [*FLAGS, "--join-policy", policy, "--state", state_of(redis_shards),
             "--data-dir", str(tmp_path / "data")]
    a = start_server(tmp_path / "a", *flags)
    b = start_server(tmp_path / "b", *flags)
    one = start_server(tmp_path / "one", *FLAGS, "--join-policy", policy)
    try:
        imps = impressions("i", 10, 1000.0, seed=1)
        clicks = [{"id": f"i{i}", "ts": 1050.0} for i in range(5)]
        # i5's click comes at 1200, past its window (1005 + 100): late, and it moves the
        # watermark past every window: all ten close
        closing = [{"id": "i5", "ts": 1200.0}]
        post(a, "/v1/impressions", imps)
        post(one, "/v1/impressions", imps)
        answer = post(b, "/v1/feedback", clicks)
        assert answer["forwarded"] == 5 and answer["joined"] == 0 and answer["unknown"] == 0
        if policy == "fnw":  # the positive copies are learned by A when it reads the marks
            wait_join(a, joined=5, learned_positives=5)
        post(one, "/v1/feedback", clicks)
        assert post(b, "/v1/feedback", closing)["forwarded"] == 1
        post(one, "/v1/feedback", closing)
        status = wait_join(a, expired=10)
        assert status["pending"] == 0 and status["joined"] == 5 and status["late"] == 1
        assert status["marks_matched"] == 6 and status["learned_positives"] == 5
        assert status["learned_negatives"] == 10 if policy == "fnw" else 5
        alone = join_of(one)
        for k in ("joined", "late", "expired", "learned_positives", "learned_negatives"):
            assert status[k] == alone[k], k
        assert join_of(b)["forwarded"] == 6 and join_of(b)["pending"] == 0
        # the shared model is the one-worker model
        rows = settled_rows(a)
        assert rows == alone["learned_positives"] + alone["learned_negatives"]
        np.testing.assert_allclose(probe(a), probe(one), rtol=1e-9)

        # a late click (its impression closed on A) reaching B changes nothing
        before = probe(a)
        assert post(b, "/v1/feedback", [{"id": "i6", "ts": 1101.0}])["forwarded"] == 1
        after = wait_join(a, late=2, marks_matched=7)
        for k in ("joined", "learned_positives", "learned_negatives", "expired"):
            assert after[k] == status[k], k
        assert settled_rows(a) == rows
        np.testing.assert_array_equal(probe(a), before)
        # the sums over the workers: every forwarded click found its owner
        cluster = join_of(b)["cluster"]
        deadline = time.monotonic() + 30
        # (each worker reports every second: wait for both reports to be the latest)
        while (cluster["workers"], cluster["late"], cluster["forwarded"]) != (2, 2, 7):
            assert time.monotonic() < deadline, cluster
            time.sleep(0.2)
            cluster = join_of(b)["cluster"]
        assert cluster["unmatched_clicks"] == 0
        assert cluster["impressions"] == 10 and cluster["expired"] == 10
    finally:
        for s in (a, b, one):
            s.stop()


@pytest.mark.parametrize(("policy", "snapshot_every"),
                         [("wait", "1"), ("fnw", "1"), ("fnw", "0")])
def test_sigkill_with_pending_impressions_loses_none_and_expires_each_once(
        tmp_path: Path, redis_shards: list[RedisServer], policy: str,
        snapshot_every: str) -> None:
    """Worker A holds impressions (some closed and flushed, some in its join snapshot, some
    logged after it, some clicked through B) when it is SIGKILLed; restarted, it holds
    every pending one again, and each is learned exactly once: the shared model's rows are
    the impressions (``fnw``: and a positive copy per click), and the clicks joined are the
    ones sent. ``--snapshot-every 0``: no join snapshot, the log alone (kept whole)."""
    flags = [*FLAGS, "--join-policy", policy, "--state", state_of(redis_shards),
             "--data-dir", str(tmp_path / "data"), "--snapshot-every", snapshot_every]
    a = start_server(tmp_path / "a", *flags)  # slot 0
    b = start_server(tmp_path / "b", *flags)  # slot 1
    try:
        post(a, "/v1/impressions", impressions("p", 10, 1000.0, seed=1))
        post(b, "/v1/feedback", [{"id": f"p{i}", "ts": 1010.0} for i in range(3)])
        # q's times move the watermark past p's windows: p closes, is learned and flushed
        post(a, "/v1/impressions", impressions("q", 10, 1200.0, seed=2))
        wait_join(a, expired=10, joined=3)
        time.sleep(1.5)  # a join snapshot is due at the next flush (--snapshot-every)
        post(a, "/v1/impressions", impressions("r", 10, 1320.0, seed=3))  # closes q
        wait_join(a, expired=20)
        settled_rows(a)  # that flush applied: the snapshot holds r
        snapshot = tmp_path / "data" / "workers" / "0" / "join.npz"
        deadline = time.monotonic() + 30
        while snapshot_every != "0" and not snapshot.exists():
            assert time.monotonic() < deadline, "no join snapshot"
            time.sleep(0.05)
        post(a, "/v1/impressions", impressions("s", 10, 1330.0, seed=4))  # after it
        post(b, "/v1/feedback", [{"id": "r1", "ts": 1330.0}, {"id": "s1", "ts": 1335.0}])
        before = wait_join(a, marks_matched=5, joined=5)
        assert before["pending"] == 20
        assert snapshot.exists() == (snapshot_every != "0")
        a.kill()
        a = start_server(tmp_path / "a", *flags)  # takes slot 0 again
        status = join_of(a)
        for k in ("pending", "impressions", "joined", "expired", "learned_positives",
                  "learned_negatives", "marks_matched"):
            assert status[k] == before[k], (k, status[k], before[k])
        # one more click through B, then a click far ahead closes everything
        post(b, "/v1/feedback", [{"id": "s2", "ts": 1340.0}])
        wait_join(a, joined=6)
        post(b, "/v1/feedback", [{"id": "nobody", "ts": 2000.0}])
        final = wait_join(a, expired=40, pending=0)
        assert final["joined"] == 6 and final["learned_positives"] == 6
        # each impression learned once across the restart (fnw: as a negative when shown)
        rows = 40 if policy == "wait" else 46
        assert final["learned_negatives"] == rows - 6
        assert settled_rows(a) == rows
        assert settled_rows(b) == rows
    finally:
        a.stop()
        b.stop()


def test_workers_2_behind_one_port(tmp_path: Path, redis_shards: list[RedisServer]
                                   ) -> None:
    """``ctr serve --workers 2``: impressions and clicks on new connections, spread over
    both workers; the workers' sums join every click once and expire every impression
    once."""
    server = start_server(tmp_path / "serve", *FLAGS, "--workers", "2", "--state",
                          state_of(redis_shards), "--data-dir", str(tmp_path / "data"))
    try:
        seen: set[str] = set()  # each worker answers once it has loaded
        deadline = time.monotonic() + 90
        while len(seen) < 2:
            assert time.monotonic() < deadline, seen
            r = httpx.get(server.url + "/v1/join", timeout=30)
            if r.status_code == 200:
                seen.add(r.json()["worker"])
            time.sleep(0.05)
        n = 40
        for i in range(0, n, 4):  # a new connection each time: either worker
            post(server, "/v1/impressions", impressions(f"w{i}-", 4, 1000.0 + i, seed=i))
        clicked = [f"w{i}-1" for i in range(0, n, 4)]
        for cid in clicked:
            post(server, "/v1/feedback", [{"id": cid, "ts": 1050.0}])
        post(server, "/v1/feedback", [{"id": "nobody", "ts": 2000.0}])
        deadline = time.monotonic() + 60
        while True:
            cluster = join_of(server)["cluster"]
            # (each worker reports its counters every second: a worker that took no
            # impression can show an older report with its forwarded clicks not yet in it)
            if cluster["workers"] == 2 and cluster["expired"] == n \
                    and cluster["pending"] == 0 and cluster["unmatched_clicks"] == 1:
                break
            assert time.monotonic() < deadline, cluster
            time.sleep(0.2)
        assert cluster["impressions"] == n and cluster["joined"] == len(clicked)
        assert cluster["learned_positives"] == len(clicked)
        assert cluster["learned_negatives"] == n - len(clicked)
        # the far-ahead click for an id nobody holds: the one the owners never matched
        assert cluster["unmatched_clicks"] == 1
    finally:
        server.stop()


"""``ctr serve --workers 2 --state memory://``: prediction workers over the learner's model in
shared memory answer exactly as a one-process service: every request of the lean-path
comparison (good and bad, forwarded or not) gets the same status, headers and body; the
predictions stay exact while the table grows and new fields arrive; /metrics adds up the
workers; SIGTERM writes the final snapshot; a worker that dies is replaced, a learner that
dies stops the service."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from servers import ServerProcess, start_server
from test_service_fastpath import SETTINGS, histogram_counts, http, js, requests

from service.stores import checkpoints

pytestmark = pytest.mark.slow

Start = Callable[..., ServerProcess]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    started: list[ServerProcess] = []

    def go(*flags: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = start_server(tmp_path / f"s{len(started)}", *flags, env=env, wait=False)
        started.append(server)
        return server

    yield go
    for server in started:
        server.stop()


def both(start: Start, *flags: str, env: dict[str, str]) -> tuple[ServerProcess, ServerProcess]:
    """(two prediction workers, one process), same settings, started together."""
    workers = start("--workers", "2", *flags, env=env)
    single = start(*flags, env=env)
    workers.wait_ready(300)
    single.wait_ready(300)
    return workers, single


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_workers_answer_as_one_process(start: Start) -> None:
    workers, single = both(start, env=SETTINGS)
    for name, method, path, body, headers in requests():
        a = http(workers.port, method, path, body, headers)
        b = http(single.port, method, path, body, headers)
        assert a.compared() == b.compared(), name
        if "X-Request-ID" in headers:
            assert a.headers["x-request-id"] == "req-77", name
        else:
            assert re.fullmatch(r"[0-9a-f]{32}", a.headers["x-request-id"]), name
    assert histogram_counts(workers.port) == histogram_counts(single.port)


def unique_events(n: int, start: int, fields: int = 12) -> list[dict[str, object]]:
    """Events whose tokens are all new: the table grows."""
    return [{"label": int((i * 7) % 3 == 0),
             "features": {f"g{j}": f"t{start + i}-{j}" for j in range(fields)}}
            for i in range(start, start + n)]


def test_predictions_follow_growth_and_new_fields(start: Start) -> None:
    env = {"CTR_ALPHA": "0.2", "CTR_STATS_EVERY": "3600"}
    workers, single = both(start, env=env)
    auth = {"Content-Type": "application/json"}
    predicted = 0
    for step in range(6):
        batch = unique_events(800, step * 800)
        if step >= 3:  # fields the workers have never seen, after they started
            for e in batch:
                e["features"][f"late{step}"] = "x"  # type: ignore[index]
        for server in (workers, single):
            r = http(server.port, "POST", "/v1/train", js({"events": batch}), auth)
            assert r.status == 200, r.body
        probe = js({"events": [{"features": e["features"]} for e in batch[::40]]
                    + [{"features": {"late5": "x", "g1": "t1-1"}}]})
        want = http(single.port, "POST", "/v1/predict", probe, auth)
        for _ in range(8):  # new connections: both workers answer some
            got = http(workers.port, "POST", "/v1/predict", probe, auth)
            assert got.status == 200 and got.body == want.body  # bit for bit, same version
            predicted += len(json.loads(got.body)["p"])
    info = json.loads(http(workers.port, "GET", "/v1/model", b"").body)
    assert info["coordinates"] > 50_000 and "late5" in info["fields"]  # grew many times
    metrics = http(workers.port, "GET", "/metrics").body.decode()
    assert f"ctr_predictions_total {float(predicted)}" in metrics
    assert ('ctr_http_request_duration_seconds_count{method="POST",route="/v1/predict",'
            'status="200"} 48.0') in metrics
    assert "ctr_events_learned_total 4800.0" in metrics


def _read(path: Path) -> bytes:
    """A file that may vanish meanwhile (a process just killed and reaped, a directory
    another server is removing): its bytes, or none."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def processes(server: ServerProcess) -> tuple[Path, int, list[int]]:
    """(shared directory, learner pid, prediction worker pids) of a running server: the
    learner writes its pid into the directory's control words."""
    kids = [p for p in children(server.proc.pid)
            if b"spawn_main" in _read(Path(f"/proc/{p}/cmdline"))]
    for directory in Path(tempfile.gettempdir()).glob("ctr-model-*") if not Path(
            "/dev/shm").is_dir() else Path("/dev/shm").glob("ctr-model-*"):
        control = np.frombuffer(_read(directory / "control"), dtype=np.uint64)
        if control.size > 3 and int(control[3]) in kids:
            pid = int(control[3])
            return directory, pid, [p for p in kids if p != pid]
    raise AssertionError(f"no shared directory of {kids}")


def test_sigterm_snapshot_and_deaths(start: Start, tmp_path: Path) -> None:
    snap = tmp_path / "data"
    server = start("--workers", "2", "--data-dir", str(snap), "--snapshot-every", "0",
                   env={"CTR_ALPHA": "0.2"})
    server.wait_ready(300)
    auth = {"Content-Type": "application/json"}
    assert http(server.port, "POST", "/v1/train", js({"events": unique_events(300, 0)}),
                auth).status == 200
    directory, _, readers = processes(server)
    assert len(readers) == 2
    # a prediction worker killed outright is replaced; the service goes on answering
    os.kill(readers[0], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        now = processes(server)[2]
        if len(now) == 2 and readers[0] not in now:
            break
        assert time.monotonic() < deadline, "the worker was not replaced"
        time.sleep(0.2)
    probe = js({"events": [{"features": {"g1": "t1-1"}}]})
    for _ in range(20):
        r = http(server.port, "POST", "/v1/predict", probe, auth)
        assert r.status in (200, 503), r.body  # 503 from the replacement until it is ready
    # SIGTERM: the workers stop, then the learner writes its final checkpoint
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(120) in (0, -signal.SIGTERM), server.log_tail(40)
    saved = checkpoints.load(snap)
    assert saved is not None and saved.model.rows == 300
    assert not directory.exists()


def test_a_learner_that_dies_stops_the_service(start: Start) -> None:
    server = start("--workers", "2", env={"CTR_ALPHA": "0.2"})
    server.wait_ready(300)
    directory, learner, _ = processes(server)
    os.kill(learner, signal.SIGKILL)
    assert server.proc.wait(120) == 1, server.log_tail(40)
    assert "the learner process exited" in server.log_tail(40)
    assert not directory.exists()

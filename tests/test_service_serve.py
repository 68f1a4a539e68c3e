"""``ctr serve`` as a real process: SIGTERM drains the requests in flight and writes the
final snapshot; a restart from it predicts exactly as before."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import some_events

from ftrl_core.model import Model
from service.stores import checkpoints

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


class Server:
    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / f"serve-{self.port}.log").open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), *args],
            stdout=self.log, stderr=subprocess.STDOUT, env=clean_env(), cwd=ROOT)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("not ready in time:\n" + self.output())

    def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.close()


@pytest.mark.slow
def test_sigterm_drains_snapshots_and_restart_resumes(tmp_path: Path,
                                                      servers: list[Server]) -> None:
    snap = tmp_path / "data"
    first = Server(tmp_path, "--data-dir", str(snap), "--snapshot-every", "0",
                   "--alpha", "0.2")
    servers.append(first)
    first.wait_ready()
    events = some_events(2000, seed=4)
    with httpx.Client(base_url=first.url, timeout=60) as client:
        for i in range(0, 1500, 500):
            assert client.post("/v1/train", json={"events": events[i:i + 500]}).status_code == 200
        probe = {"events": [{"features": e["features"]} for e in events[:100]]}
        before = client.post("/v1/predict", json=probe).json()

    # a stream still arriving when SIGTERM comes is finished, and is in the snapshot
    lines = [json.dumps(e).encode() + b"\n" for e in events[1500:]]
    sent_half = threading.Event()
    go_on = threading.Event()

    def body() -> Iterator[bytes]:
        yield b"".join(lines[:250])
        sent_half.set()
        go_on.wait(30)
        yield b"".join(lines[250:])

    result: dict[str, httpx.Response] = {}

    def stream() -> None:
        with httpx.Client(base_url=first.url, timeout=60) as c:
            result["r"] = c.post("/v1/train/stream", content=body(),
                                 headers={"content-type": "application/x-ndjson"})

    sender = threading.Thread(target=stream)
    sender.start()
    assert sent_half.wait(30)
    time.sleep(0.5)
    first.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    go_on.set()
    sender.join(60)
    # uvicorn re-raises the signal once it has shut down cleanly
    assert first.proc.wait(60) in (0, -signal.SIGTERM), first.output()
    assert result["r"].status_code == 200
    assert result["r"].json()["accepted"] == 500
    saved = checkpoints.load(snap)
    assert saved is not None and saved.model.rows == 2000
    assert "checkpoint written" in first.output()

    second = Server(tmp_path, "--data-dir", str(snap))
    servers.append(second)
    second.wait_ready()
    with httpx.Client(base_url=second.url, timeout=60) as client:
        info = client.get("/v1/model").json()
        after = client.post("/v1/predict", json=probe).json()
    assert info["model_version"] == 2000 and info["params"]["alpha"] == 0.2
    # the first server learned 500 more events after `before`: compare with a model
    # that learned exactly what the first server learned, loaded from the snapshot
    from ftrl_core.readers.jsonl import JsonlFormat, parse_event_array

    model = saved.model
    batch = parse_event_array(json.dumps(probe).encode(),
                              JsonlFormat(model.registry, model.options),
                              require_label=False).batch
    p, _ = model.predict(batch)
    assert after["p"] == p.tolist()
    assert after["p"] != before["p"]  # the stream's events were learned
    assert second.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in second.output()


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "2", "--optimizer", "rda"], "serve FTRL models only"),
    (["--state", "redis+cluster://127.0.0.1:7000,redis://127.0.0.1:7001"], "mixes redis://"),
    (["--state", "nosuch://x"], "unknown scheme(s) nosuch"),
    (["--model-in", "/nonexistent/model.ctr"], "no such model file"),
])
def test_refused_settings(args: list[str], message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "service.cli", "serve", *args],
                       capture_output=True, text=True, env=clean_env(), cwd=ROOT, timeout=60)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_env_settings_refused_with_model_in(tmp_path: Path) -> None:
    Model.from_config(
        {"optimizer": "ftrl", "params": {}, "field_l1": {}, "field_l2": {},
         "features": {}, "fields": {"names": ["bias"]}, "format": "jsonl"}
    ).save(tmp_path / "m.ctr")
    env = {**clean_env(), "CTR_ALPHA": "0.3"}
    r = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--model-in",
                        str(tmp_path / "m.ctr")], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "--alpha" in r.stderr and "--model-in" in r.stderr, r.stderr


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.cli import build_parser
    from service.cli.serve import settings_overrides
    from service.settings import Settings

    monkeypatch.setenv("CTR_PORT", "9001")
    monkeypatch.setenv("CTR_MAX_BODY_BYTES", "65536")
    monkeypatch.setenv("CTR_LAMBDA", "0.25")
    monkeypatch.setenv("CTR_OPTIMIZER", "rda")
    monkeypatch.setenv("CTR_STRICT", "true")
    monkeypatch.setenv("CTR_API_KEYS", "a,b")
    args = build_parser().parse_args(["serve", "--port", "9002", "--gamma", "2",
                                      "--field-l1", "C1=0.5", "--field-l1", "C2=1"])
    s = Settings(**settings_overrides(args))
    assert (s.port, s.max_body_bytes, s.lambda_, s.optimizer, s.strict) == \
        (9002, 65536, 0.25, "rda", True)
    assert s.gamma == 2 and s.field_l1 == "C1=0.5,C2=1"
    assert s.api_keys is not None and s.api_keys.get_secret_value() == "a,b"
    assert "a,b" not in repr(s)
    opts = s.learner_options()
    assert (opts.lambda_, opts.gamma, opts.optimizer) == (0.25, 2, "rda")

"""Real ``ctr serve`` processes on free loopback ports, for the client and replay tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without the caller's CTR_ settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    env.update(extra or {})
    return env


@dataclass
class ServerProcess:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ctr serve exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ctr serve not ready after {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the server and every worker process it started (its session)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(workdir: Path, *flags: str, env: dict[str, str] | None = None,
                 port: int | None = None, wait: bool = True,
                 app_server: bool = False) -> ServerProcess:
    """``ctr serve --host 127.0.0.1 --port P FLAGS`` with its log in ``workdir``; with
    ``app_server``, ``tests/app_server.py P FLAGS`` instead (settings from ``env``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = workdir / f"serve-{port}.log"
    while log.exists():  # a restart on the same port keeps the earlier logs
        log = log.with_name(log.stem + "+" + log.suffix)
    cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port",
           str(port), *flags]
    if app_server:
        cmd = [sys.executable, str(ROOT / "tests" / "app_server.py"), str(port), *flags]
    with open(log, "wb") as fh:
        # a session of its own: ``kill`` reaches its worker processes, and nothing else
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=server_env(env), start_new_session=True)
    server = ServerProcess(f"http://127.0.0.1:{port}", port, proc, log)
    if wait:
        server.wait_ready()
    return server

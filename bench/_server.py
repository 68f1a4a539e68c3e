"""A ``ctr serve`` subprocess on a free loopback port, for the HTTP bench scripts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a live process and of its live descendants (worker processes)."""
    total = 0.0
    try:
        total = cpu_seconds(pid)
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # gone meanwhile
        return total
    return total + sum(tree_cpu_seconds(int(c)) for c in children)


class Server:
    """``with Server("--alpha", "0.2") as s: s.url``: started, ready, then stopped.
    ``reference="bare"`` (or ``"fastapi"``) serves a reference app of ``_ref_apps.py``
    instead of ``ctr serve``, with ``workers`` processes."""

    def __init__(self, *flags: str, ready_timeout: float = 120.0,
                 reference: str | None = None, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="ctr-serve-", suffix=".log")[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
        cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), *flags]
        if reference is not None:
            cmd = [sys.executable, str(ROOT / "bench" / "_ref_apps.py"), reference,
                   str(self.port), str(workers)]
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env=env)
        self._wait(ready_timeout)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"ctr serve exited ({self.proc.returncode}):\n"
                                 f"{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"ctr serve not ready after {timeout} s")

    def cpu_seconds(self) -> float:
        """CPU time of the server, its worker processes included."""
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

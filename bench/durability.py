"""What durability costs, and whether it holds: ingest with each `--fsync` policy, restart
time with a long log, and events lost or learned twice over kill cycles.

    python bench/durability.py /tmp/syn1m.tsv [--rows 1000000] [--repeats 3]
        [--restart-rows 1000000] [--cycles 20] [--parts ingest,restart,memory,redis]

1. `ingest`: `ctr replay DATA --batch-size 1000 --concurrency 4` into `ctr serve` (1 worker,
   memory store) with no data directory, then `--data-dir` with `--fsync always`,
   `everysec` and `no`, interleaved `--repeats` times; events/s of each (median and range)
   and its ratio to no data directory. Target: `always` >= 150,000 events/s. The run is
   the whole of syn1m by default: the first few hundred thousand rows into a fresh model
   are its growth phase (most keys new, the table doubling), which a short run measures
   mostly (300,000 rows: `always` about 150,000 events/s against 226,000 without a log,
   the same ratio).
2. `restart`: a server with `--data-dir --snapshot-every 0` learns `--restart-rows` rows (all
   of them stay in the log), is SIGKILLed, and is started again: seconds from the new
   process to `/readyz` 200 (start-up, the log read and learned again), and the model
   version it comes back at.
3. `memory`: `--cycles` SIGKILLs at random moments during a keyed replay (batches of 200,
   2 clients that retry with the same key); at the end, events acknowledged, learned, lost
   and learned twice (target: 0 and 0).
4. `redis`: the same with `--workers 2` on two AOF shards (`appendfsync always`); each cycle
   SIGKILLs, at random, one worker (uvicorn starts another), one shard (restarted 1 s
   later) or the whole server (restarted); at the end the shared rows, and each worker's.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import contextlib

from _common import first_rows, replay_json
from _server import ROOT, free_port
from redis_servers import REDIS_SERVER, RedisServer, start_redis

from ftrl_core.readers.eventsource import open_event_reader

LEARNER = ("--alpha", "0.2")


class Serve:
    """A `ctr serve` in a session of its own (SIGKILL reaches its workers)."""

    def __init__(self, *flags: str, port: int | None = None, log: Path) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
        cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), *flags]
        self.started = time.perf_counter()
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env=env, start_new_session=True)
        self.log = log

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Seconds from the process start to /readyz 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"ctr serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise SystemExit("ctr serve not ready")

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def workers(self) -> list[int]:
        """Pids of the worker processes uvicorn started."""
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                out.append(int(stat.parent.name))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


# -- 1. ingest ---------------------------------------------------------------------------------


def ingest(data: Path, rows: int, repeats: int, tmp: Path) -> None:
    limit, _ = first_rows(data, rows, tmp)
    modes: dict[str, list[str]] = {"no data dir": []}
    for policy in ("always", "everysec", "no"):
        modes[f"--fsync {policy}"] = ["--data-dir", "", "--fsync", policy]
    rates: dict[str, list[float]] = {m: [] for m in modes}
    for rep in range(repeats):
        for name, flags in modes.items():
            flags = [str(tmp / f"d-{rep}-{name[-6:].strip()}") if f == "" else f
                     for f in flags]
            server = Serve(*LEARNER, *flags, log=tmp / "ingest.log")
            try:
                server.wait_ready()
                m = replay_json(server.url, data, tmp / "m.json", "--batch-size", "1000",
                                "--concurrency", "4", *limit)
            finally:
                server.stop()
            rates[name].append(m["events_per_second"])
    base = statistics.median(rates["no data dir"])
    print(f"ingest, 1 worker, batches of 1,000, concurrency 4, {rows:,} rows, "
          f"{repeats} interleaved repeats:")
    for name, r in rates.items():
        med = statistics.median(r)
        note = ""
        if name == "--fsync always":
            note = f"  (target >= 150,000: {'ok' if med >= 150_000 else 'MISS'})"
        print(f"  {name:<16} {med:>9,.0f} events/s (range {min(r):,.0f}-{max(r):,.0f}), "
              f"{med / base:.2f}x of no data dir{note}")


# -- 2. restart time ---------------------------------------------------------------------------


def restart(data: Path, rows: int, tmp: Path) -> None:
    limit, _ = first_rows(data, rows, tmp)
    d = tmp / "restart-data"
    log = tmp / "restart.log"
    server = Serve(*LEARNER, "--data-dir", str(d), "--snapshot-every", "0", log=log)
    server.wait_ready()
    m = replay_json(server.url, data, tmp / "r.json", "--batch-size", "1000",
                    "--concurrency", "4", *limit)
    server.kill()
    wal = sum(p.stat().st_size for p in (d / "wal").glob("*.log"))
    again = Serve(*LEARNER, "--data-dir", str(d), log=log)
    seconds = again.wait_ready()
    version = httpx.get(again.url + "/v1/model", timeout=30).json()["model_version"]
    again.stop()
    print(f"restart: {m['rows']:,} events in the log ({wal / 1e6:,.0f} MB, no checkpoint "
          f"since the first), SIGKILL, start again: /readyz 200 after {seconds:.1f} s, "
          f"model version {version:,} ({'all of them' if version == m['rows'] else 'LOST'})")


# -- 3, 4. kill cycles -------------------------------------------------------------------------


def keyed_batches(data: Path, n: int) -> list[bytes]:
    reader = open_event_reader(str(data), "auto", 200, labels=True, skip_bad_lines=False,
                               limit=n)
    return [bytes(b.body) for b in reader]


class Senders:
    """Clients sending every batch once, each with its key, retrying it (connection errors,
    503, 409) until it is answered 200; counts the events acknowledged."""

    def __init__(self, url: str, batches: list[bytes], clients: int = 2) -> None:
        self.url, self.batches = url, batches
        self.todo = list(range(len(batches)))
        self.acked = 0
        self.events = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while True:
                with self.lock:
                    if not self.todo:
                        return
                    i = self.todo.pop(0)
                while True:
                    try:
                        r = client.post("/v1/train", content=self.batches[i], headers={
                            "content-type": "application/json", "idempotency-key": f"k{i}"})
                    except httpx.TransportError:
                        time.sleep(0.05)
                        continue
                    if r.status_code in (409, 503):
                        time.sleep(0.1)
                        continue
                    if r.status_code != 200:
                        raise SystemExit(f"batch {i}: {r.status_code} {r.text}")
                    with self.lock:
                        self.acked += 1
                        self.events += int(r.json()["accepted"])
                    break

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join()


def memory_cycles(data: Path, cycles: int, tmp: Path) -> None:
    batches = keyed_batches(data, 400_000)
    total = sum(b.count(b'"label"') for b in batches)
    d = tmp / "mem-data"
    log = tmp / "mem.log"
    rng = random.Random(1)
    server = Serve(*LEARNER, "--data-dir", str(d), "--snapshot-every", "1", log=log)
    port = server.port
    server.wait_ready()
    senders = Senders(server.url, batches)
    senders.start()
    for _ in range(cycles):
        time.sleep(rng.uniform(0.2, 1.0))
        server.kill()
        server = Serve(*LEARNER, "--data-dir", str(d), "--snapshot-every", "1", port=port,
                       log=log)
        server.wait_ready()
    senders.join()
    rows = httpx.get(server.url + "/v1/model", timeout=30).json()["rows"]
    server.stop()
    print(f"memory store, {cycles} SIGKILLs during a keyed replay of {total:,} events: "
          f"{senders.events:,} acknowledged, {rows:,} learned: lost "
          f"{max(senders.events - rows, 0):,}, learned twice {max(rows - total, 0):,} "
          f"(target 0 and 0: {'ok' if rows == total == senders.events else 'MISS'})")


def aof_shard(workdir: Path, port: int | None = None) -> RedisServer:
    if port is None:
        return start_redis(workdir, "--appendonly", "yes", "--appendfsync", "always")
    log = workdir / f"redis-{port}.log"
    proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                             "--dir", str(workdir), "--logfile", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, proc, log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if server.client().ping():
                return server
        except Exception:
            time.sleep(0.05)
    raise SystemExit("redis-server did not restart")


def redis_cycles(data: Path, cycles: int, tmp: Path) -> None:
    batches = keyed_batches(data, 200_000)
    total = sum(b.count(b'"label"') for b in batches)
    shards = [aof_shard(tmp / f"aof{i}") for i in range(2)]
    state = ",".join(s.url for s in shards)
    flags = [*LEARNER, "--workers", "2", "--state", state, "--data-dir", str(tmp / "r-data")]
    log = tmp / "redis.log"
    rng = random.Random(2)
    kinds: dict[str, int] = {"worker": 0, "shard": 0, "server": 0}
    server = Serve(*flags, log=log)
    port = server.port
    try:
        server.wait_ready()
        senders = Senders(server.url, batches)
        senders.start()
        for _ in range(cycles):
            time.sleep(rng.uniform(0.3, 1.2))
            kind = rng.choice(list(kinds))
            kinds[kind] += 1
            if kind == "worker":
                pids = server.workers()
                if pids:
                    os.kill(rng.choice(pids), signal.SIGKILL)  # uvicorn starts another
            elif kind == "shard":
                i = rng.randrange(2)
                shards[i].proc.kill()
                shards[i].proc.wait()
                time.sleep(1.0)
                shards[i] = aof_shard(tmp / f"aof{i}", shards[i].port)
            else:
                server.kill()
                server = Serve(*flags, port=port, log=log)
                server.wait_ready()
        senders.join()
        seen: dict[str, int] = {}
        deadline = time.monotonic() + 120
        while (len(seen) < 2 or any(v < 0 for v in seen.values())) \
                and time.monotonic() < deadline:
            try:
                info: dict[str, Any] = httpx.get(server.url + "/v1/model", timeout=30).json()
            except httpx.TransportError:  # a worker killed last is being replaced
                time.sleep(0.1)
                continue
            seen[info["worker"]] = info["rows"] if info["unflushed_rows"] == 0 else -1
            time.sleep(0.1)
    finally:
        server.kill()
        for s in shards:
            s.stop()
    rows = sorted(set(seen.values()))
    shared = rows[0] if len(rows) == 1 else -1
    ok = shared == total == senders.events
    print(f"redis, 2 workers, 2 AOF shards (appendfsync always), {cycles} kills ("
          + ", ".join(f"{v} {k}" for k, v in kinds.items())
          + f") during a keyed replay of {total:,} events: {senders.events:,} acknowledged, "
          f"shared rows per worker {rows}: lost {max(senders.events - max(rows), 0):,}, "
          f"learned twice {max(max(rows) - total, 0):,} (target 0 and 0: "
          f"{'ok' if ok else 'MISS'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--restart-rows", type=int, default=1_000_000)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--parts", default="ingest,restart,memory,redis")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        if "ingest" in parts:
            ingest(a.data, a.rows, a.repeats, tmp)
        if "restart" in parts:
            restart(a.data, a.restart_rows, tmp)
        if "memory" in parts:
            memory_cycles(a.data, a.cycles, tmp)
        if "redis" in parts:
            redis_cycles(a.data, a.cycles, tmp)
        sys.stdout.flush()


if __name__ == "__main__":
    main()

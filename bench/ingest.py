"""Training ingest over HTTP: `ctr replay` against `ctr serve` (1 worker, memory store).

    python bench/ingest.py /tmp/syn1m.tsv [--rows 1000000] [--batch-size 1000]
                           [--concurrency 4]

1. A fresh `ctr serve --alpha 0.2`; `ctr replay DATA --concurrency C` as a subprocess (the
   load generator shares the machine's cores with the server). Prints events/s (target
   >= 150,000), the progressive logloss, and the CPU seconds each side used.
2. A second fresh server, `ctr replay --concurrency 1` (rows learned in exactly file order),
   against `ctr train DATA --alpha 0.2` on the same rows: the progressive loglosses must be
   equal (target: to 1e-9); prints the difference.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ctr, first_rows, replay_json
from _server import Server

LEARNER = ("--alpha", "0.2")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def replay(url: str, data: Path, out: Path, *flags: str) -> tuple[dict, float]:
    before = children_cpu()
    return replay_json(url, data, out, *flags), children_cpu() - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=4)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        limit, same_rows = first_rows(a.data, a.rows, tmp)
        size = ["--batch-size", str(a.batch_size)]

        with Server(*LEARNER) as server:
            cpu0 = server.cpu_seconds()
            start = time.perf_counter()
            m, client_cpu = replay(server.url, a.data, tmp / "m.json", *size, *limit,
                                   "--concurrency", str(a.concurrency))
            wall = time.perf_counter() - start
            server_cpu = server.cpu_seconds() - cpu0
        target = "ok" if m["events_per_second"] >= 150_000 else "MISS"
        print(f"ingest: {m['rows']:,} rows, batch {a.batch_size}, concurrency {a.concurrency}: "
              f"{m['events_per_second']:,.0f} events/s (target >= 150,000: {target}); "
              f"progressive logloss {m['logloss']:.6f}, auc {m['auc']:.5f}")
        print(f"  cpu: server {server_cpu:.2f} s, load generator {client_cpu:.2f} s "
              f"(process incl. start-up; replay's clock {m['seconds']:.2f} s, "
              f"subprocess wall {wall:.2f} s)")

        with Server(*LEARNER) as server:
            http, _ = replay(server.url, same_rows, tmp / "one.json", *size,
                             "--concurrency", "1")
        res = subprocess.run(ctr("train", str(same_rows), *LEARNER, "--quiet",
                                 "--metrics-json", str(tmp / "train.json")),
                             capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"ctr train failed:\n{res.stderr}")
        local = json.loads((tmp / "train.json").read_text())
        diff = http["logloss"] - local["logloss"]
        ok = "ok" if abs(diff) <= 1e-9 and http["rows"] == local["rows"] else "MISS"
        print(f"exactness: {http['rows']:,} rows, concurrency 1: HTTP logloss "
              f"{http['logloss']:.12f}, ctr train {local['logloss']:.12f}, difference "
              f"{diff:.3e} (target |d| <= 1e-9: {ok}); auc difference "
              f"{http['auc'] - local['auc']:.3e}; HTTP at concurrency 1: "
              f"{http['events_per_second']:,.0f} events/s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

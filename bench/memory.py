"""State memory per live coordinate (FTRL), on a stream with 20M+ distinct features.

    python bench/memory.py [--rows 600000] [--keep /tmp/wide.tsv]

Writes a Criteo-format file whose 39 columns hold random 32-bit tokens (so nearly every
feature is new: rows x 39 distinct keys), trains FTRL over it in a fresh `ctr train`
process, and prints the live coordinates, the state table's bytes per live coordinate, the
feature-name store's bytes, and the process's peak RSS (with and without names).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def write_wide(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    width = 1 + 39 * 9 + 1
    with open(path, "wb") as fh:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            m = np.empty((n, width), dtype=np.uint8)
            m[:, 0] = 48 + (rng.random(n) < 0.2)
            tokens = rng.integers(0, 2**32, size=(n, 39), dtype=np.uint64)
            ints = rng.integers(10**7, 10**8, size=(n, 13), dtype=np.int64)
            for c in range(39):
                o = 1 + c * 9
                m[:, o] = 9
                for d in range(8):
                    if c < 13:  # integer columns hold 8-digit integers
                        m[:, o + 1 + d] = 48 + (ints[:, c] // 10 ** (7 - d)) % 10
                    else:
                        m[:, o + 1 + d] = HEX[(tokens[:, c] >> np.uint64(28 - 4 * d))
                                              & np.uint64(15)]
            m[:, -1] = 10
            fh.write(m.tobytes())


def measure(path: Path, out: Path, *flags: str) -> dict[str, float]:
    metrics = out / "m.json"
    cmd = [sys.executable, "-c",
           "import resource, sys; from service.cli import main; rc = main(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
           "sys.exit(rc)",
           "train", str(path), "--quiet", "--format", "criteo", "--metrics-json", str(metrics),
           *flags]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(res.stderr)
    m = json.loads(metrics.read_text())
    m["peak_rss_mb"] = int(res.stderr.strip().splitlines()[-1]) / 1024.0
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=600_000)
    ap.add_argument("--keep", type=Path, help="write/reuse the generated file here")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = a.keep or Path(tmp) / "wide.tsv"
        if not path.exists():
            write_wide(path, a.rows)
        tiny = Path(tmp) / "tiny.tsv"
        write_wide(tiny, 10)
        base = measure(tiny, Path(tmp))["peak_rss_mb"]
        print(f"baseline process (10 rows): peak RSS {base:,.0f} MB")
        for label, flags in (("ftrl, names off", ("--no-names",)), ("ftrl, names on", ())):
            m = measure(path, Path(tmp), *flags)
            print(f"{label}: {m['coordinates']:,} live coordinates, table "
                  f"{m['table_bytes'] / 2**20:,.0f} MiB = {m['bytes_per_coordinate']:.1f} B per "
                  f"coordinate (target <= 32), names {m['names_bytes'] / 2**20:,.0f} MiB, "
                  f"peak RSS {m['peak_rss_mb']:,.0f} MB, {m['rows_per_second']:,.0f} rows/s",
                  flush=True)


if __name__ == "__main__":
    main()

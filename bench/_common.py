"""Helpers shared by the bench scripts: running commands, timing them, reading VW's line."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_SHARED = HERE.parent.parent / "shared"


def ctr(*args: str, env: dict[str, str] | None = None) -> list[str]:
    """The command line of ``ctr`` with this interpreter (no PATH assumptions)."""
    return [sys.executable, "-m", "service.cli", *args]


def timed(cmd: list[str], **kw: Any) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")
    return wall, res


def peak_rss_children_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def run_ctr_train(data: str, *flags: str, out_dir: Path) -> dict[str, Any]:
    """``ctr train`` as a fresh process; returns its metrics plus the process wall time."""
    metrics = out_dir / "ctr_metrics.json"
    wall, _ = timed(ctr("train", data, "--quiet", "--metrics-json", str(metrics), *flags))
    m: dict[str, Any] = json.loads(metrics.read_text())
    m["wall_seconds"] = wall
    m["wall_rows_per_second"] = m["rows"] / wall
    return m


VW_LINE = re.compile(r"rows=(\d+) wall_s=([\d.]+) rows_per_s=(\d+) logloss=([\d.]+)")


def run_vw(shared: Path, data: str, alpha: float = 0.2, l1: float = 1.0,
           keep_empty: bool = False) -> dict[str, float]:
    """The bench kit's ``vw_ftrl.sh`` (its wall time excludes the text conversion)."""
    script = shared / "bench" / "vw_ftrl.sh"
    cmd = ["bash", str(script), data, str(alpha), str(l1)]
    if keep_empty:
        cmd.append("--keep-empty")
    env = {**os.environ, "PYTHON": sys.executable}
    _, res = timed(cmd, env=env)
    m = VW_LINE.search(res.stdout)
    if not m:
        raise SystemExit(f"unexpected vw_ftrl.sh output: {res.stdout!r} {res.stderr!r}")
    return {"rows": int(m.group(1)), "wall_seconds": float(m.group(2)),
            "rows_per_second": float(m.group(3)), "logloss": float(m.group(4))}


def count_lines(path: Path, stop_after: int) -> int:
    """Lines in ``path`` (stops counting past ``stop_after``)."""
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            n += chunk.count(b"\n")
            if n > stop_after:
                break
    return n


def head(path: Path, rows: int, out: Path) -> Path:
    with open(path, "rb") as src, open(out, "wb") as dst:
        for i, line in enumerate(src):
            if i >= rows:
                break
            dst.write(line)
    return out


def first_rows(data: Path, rows: int, tmp: Path) -> tuple[list[str], Path]:
    """(``--limit`` flags for `ctr replay`, a file of the same rows for `ctr train`): the
    first ``rows`` rows of ``data``, or all of it when it is shorter."""
    if count_lines(data, rows) > rows:
        return ["--limit", str(rows)], head(data, rows, tmp / f"head{data.suffix}")
    return [], data


def replay_json(url: str, data: Path, out: Path, *flags: str) -> dict[str, Any]:
    """`ctr replay DATA --url URL` as a subprocess; its metrics (``--metrics-json``)."""
    res = subprocess.run(ctr("replay", str(data), "--url", url, "--quiet", "--metrics-json",
                             str(out), *flags), capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"ctr replay failed:\n{res.stderr}")
    return dict(json.loads(out.read_text()))

"""Compile every Numba kernel of the installed package into ``NUMBA_CACHE_DIR``.

    NUMBA_CACHE_DIR=/opt/numba-cache /opt/venv/bin/python warm_numba_cache.py [--redis-server PATH]

The image runs this at build time so that a container starts with compiled kernels: `ctr
serve` is ready in about a second instead of after a minute of compilation, and so is each
of its workers. Numba keys a cache entry by the directory of the kernel's source file, its
content and the CPU, so this must run with the very installation the container runs (same
venv path, same files): it refuses a package imported from anywhere else, such as a source
checkout on ``sys.path``.

Kernels are compiled lazily, one specialisation per argument types, so the script drives the
real code paths rather than calling kernels one by one: `ctr train` on small generated files
of every format with every learner (the float32 and float64 state tables are different
specialisations), hashed and exact keys, `predict`, `inspect`; the HTTP routes of the app
(its lifespan warm-up included) with every learner; the replay converter; and, when a
``redis-server`` binary is given, the same against a Redis store (the flush kernels and
``load-state``). It then lists the package's kernels that were never compiled (inline
helpers excepted) and, with ``--strict``, fails if there are any.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import io
import json
import os
import pkgutil
import random
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: (optimizer, extra flags): every learner, and both rates of the two that have them
LEARNERS: list[tuple[str, list[str]]] = [
    ("ftrl", []), ("rda", []), ("fobos", ["--rate", "adaptive"]),
    ("fobos", ["--rate", "global"]), ("tg", ["--rate", "adaptive"]),
    ("tg", ["--rate", "global"]),
]
INTS, CATS = 13, 26


def check_installation() -> None:
    """Numba caches by source path: warming a source checkout would warm the wrong paths."""
    if not os.environ.get("NUMBA_CACHE_DIR"):
        raise SystemExit("set NUMBA_CACHE_DIR to the directory the container will use")
    import ftrl_core

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(ftrl_core.__file__).resolve()
    if site not in where.parents:
        raise SystemExit(f"ftrl_core is imported from {where}, not from {site}: run this "
                         "outside the source tree, with the interpreter of the installed venv")


# -- small inputs of every format ------------------------------------------------------------

def criteo_lines(n: int, rng: random.Random) -> list[str]:
    lines = []
    for _ in range(n):
        ints = ["" if rng.random() < 0.2 else str(rng.randint(-2, 300)) for _ in range(INTS)]
        cats = ["" if rng.random() < 0.1 else f"{rng.randint(0, 40):08x}" for _ in range(CATS)]
        lines.append("\t".join([str(int(rng.random() < 0.25)), *ints, *cats]))
    return lines


def write_inputs(tmp: Path, rows: int = 3000) -> dict[str, Path]:
    rng = random.Random(1)
    criteo = criteo_lines(rows, rng)
    paths = {fmt: tmp / name for fmt, name in
             [("criteo", "d.tsv"), ("avazu", "d.csv"), ("vw", "d.vw"), ("jsonl", "d.jsonl")]}
    paths["criteo"].write_text("\n".join(criteo) + "\n")
    header = "id,click,hour,C1,banner_pos,site_id,device_type"
    paths["avazu"].write_text(header + "\n" + "".join(
        f"{i},{int(rng.random() < 0.2)},14102100,{rng.randint(1000, 1010)},{rng.randint(0, 1)},"
        f"s{rng.randint(0, 30)},{'' if rng.random() < 0.1 else rng.randint(0, 4)}\n"
        for i in range(rows)))
    paths["vw"].write_text("".join(
        f"{rng.choice(['1', '-1'])} {rng.random() + 0.5:.2f} |a x{rng.randint(0, 30)} "
        f"y{rng.randint(0, 30)} |b z:{rng.random():.3f} w{rng.randint(0, 9)}\n"
        for _ in range(rows)))
    paths["jsonl"].write_text("".join(
        json.dumps({"label": int(rng.random() < 0.3),
                    "features": {"site": f"s{rng.randint(0, 50)}", "price": rng.random(),
                                 "tags": [f"t{rng.randint(0, 9)}", f"t{rng.randint(0, 9)}"],
                                 "missing": "" if rng.random() < 0.5 else None},
                    "weight": 1.0}) + "\n"
        for _ in range(rows)))
    return paths


# -- the command line -------------------------------------------------------------------------

def ctr(*argv: str) -> None:
    from service.cli import main

    with contextlib.redirect_stdout(io.StringIO()):  # `ctr predict` prints a line a row
        status = main([*argv])
    if status != 0:
        raise SystemExit(f"ctr {' '.join(argv)}: exit status {status}")


def warm_cli(paths: dict[str, Path], tmp: Path) -> None:
    model = str(tmp / "m.ctr")
    data = str(paths["criteo"])
    for optimizer, flags in LEARNERS:
        ctr("train", data, "--optimizer", optimizer, *flags, "--quiet", "--model-out", model,
            "--metrics-json", str(tmp / "m.json"), "--predictions-out", str(tmp / "p.txt"))
        ctr("train", data, "--optimizer", optimizer, *flags, "--quiet", "--hash-bits", "18",
            "--interactions", "C1:C2", "--ints", "log", "--drop-missing", "--no-names")
        ctr("train", data, "--model-in", model, "--quiet", "--model-out", model)
        ctr("predict", "--model", model, data)
        # bounded memory: the admission gate, the ages, the sweep, the sampled eviction
        # (a check point every 1,024 rows), the idle records hidden from predictions
        bounded = str(tmp / "bounded.ctr")
        ctr("train", data, "--optimizer", optimizer, *flags, "--quiet", "--admit", "bloom:2",
            "--evict-idle", "500", "--max-coordinates", "2000", "--model-out", bounded)
        ctr("predict", "--model", bounded, data)
        ctr("inspect", model, "--top", "5")
        ctr("inspect", model, "--json")
    for fmt in ("avazu", "vw", "jsonl"):
        ctr("train", str(paths[fmt]), "--quiet", "--model-out", model)
        ctr("predict", "--model", model, str(paths[fmt]))
        ctr("train", str(paths[fmt]), "--quiet", "--hash-bits", "18")
    import numpy as np

    from ftrl_core.batch import Batch
    from ftrl_core.optimizers import FTRLProximal
    from ftrl_core.readers.eventsource import open_event_reader, warm_up

    # helpers of tools and tests, cheap enough to have ready too
    Batch.from_arrays(np.array([0, 2]), np.array([5, 5], np.uint64), np.array([1.0, 2.0]))
    FTRLProximal().state_of(np.array([5], np.uint64))
    warm_up()  # the converter `ctr replay` and `ctr predict --url` send bodies with
    for fmt in ("criteo", "avazu", "jsonl"):  # (VW lines with real values are no events)
        for labels in (True, False):
            for _ in open_event_reader(str(paths[fmt]), fmt, batch_size=500, labels=labels):
                pass


# -- the service ------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def _running_app(settings: Any) -> Any:
    import httpx

    from service.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        deadline = time.monotonic() + 900  # the lifespan's warm-up compiles, when cold
        while not app.state.learner.ready:
            if time.monotonic() > deadline:
                raise SystemExit("the app never became ready")
            await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://warm") as client:
            yield client


async def _serve_once(settings: Any, events: list[dict[str, Any]]) -> None:
    async with _running_app(settings) as client:
        (await client.post("/v1/train", json={"events": events[:250]})).raise_for_status()
        # a second worker on the same model: with a shared store it starts by loading what
        # the first one stored, then both learn
        async with _running_app(settings) as twin:
            for i, start in enumerate(range(250, len(events), 250)):
                r = await (twin, client)[i % 2].post(
                    "/v1/train", json={"events": events[start:start + 250]})
                r.raise_for_status()
            r = await client.post("/v1/predict", json={"events": events[:100]})
            r.raise_for_status()
            body = "".join(json.dumps(e) + "\n" for e in events[:500]) + "{bad\n"
            r = await client.post("/v1/train/stream", content=body,
                                  headers={"content-type": "application/x-ndjson"})
            r.raise_for_status()
            for route in ("/v1/model", "/v1/model/features?top=5", "/v1/stats",
                          "/v1/variants", "/metrics", "/readyz"):
                (await client.get(route)).raise_for_status()


def warm_service(paths: dict[str, Path], state: str = "memory://") -> None:
    from service.settings import Settings

    names = [f"I{j + 1}" for j in range(INTS)] + [f"C{j + 1}" for j in range(CATS)]
    events = []
    for line in paths["criteo"].read_text().splitlines()[:1500]:
        cols = line.split("\t")
        events.append({"label": int(cols[0]), "features": dict(zip(names, cols[1:],
                                                                   strict=True))})
    for i, (optimizer, flags) in enumerate(LEARNERS):
        rate: Any = flags[1] if flags else None
        settings = Settings(_env_file=None, state=state, optimizer=optimizer,  # type: ignore[call-arg]
                            rate=rate, model_name=f"warm-{i}", snapshot_every=0,
                            variants="ftrl:l1=5;name=strong" if i == 0 else None)
        asyncio.run(_serve_once(settings, events))


# -- a Redis store ---------------------------------------------------------------------------

@contextlib.contextmanager
def redis_server(binary: str, tmp: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def warm_redis(paths: dict[str, Path], tmp: Path, url: str) -> None:
    data = str(paths["criteo"])
    model = str(tmp / "m.ctr")
    for i, (optimizer, flags) in enumerate(LEARNERS):
        for layout in ([], ["--hash-bits", "18"]):
            name = f"warm-cli-{i}-{len(layout)}"
            for _ in range(2):  # the second run starts by loading the stored model
                ctr("train", data, "--optimizer", optimizer, *flags, *layout, "--quiet",
                    "--state", url, "--model-name", name, "--sync-every-events", "700",
                    "--model-out", model)
            ctr("load-state", "--snapshot-out", model, "--state", url, "--model-name", name)
            ctr("load-state", model, "--state", url, "--model-name", name + "-seeded")
    warm_service(paths, state=url)


# -- what is left ----------------------------------------------------------------------------

def uncompiled_kernels() -> list[str]:
    """Kernels of the package with no compiled specialisation (inline helpers excepted:
    they are compiled into their callers)."""
    from numba.core.registry import CPUDispatcher

    import ftrl_core
    import service

    left = []
    for pkg in (ftrl_core, service):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if info.name.endswith(".__main__"):  # importing it would run the command
                continue
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if (isinstance(obj, CPUDispatcher) and obj.__module__ == info.name
                        and obj.targetoptions.get("inline", "never") == "never"
                        and not obj.signatures):
                    left.append(f"{info.name}.{name}")
    return sorted(left)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis-server", default=shutil.which("redis-server"),
                    help="a redis-server binary, to warm the Redis store's kernels too "
                         "(default: the one on PATH, if any)")
    ap.add_argument("--strict", action="store_true",
                    help="fail if a kernel of the package was never compiled")
    a = ap.parse_args()
    check_installation()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        paths = write_inputs(tmp)
        warm_cli(paths, tmp)
        warm_service(paths)
        if a.redis_server:
            with redis_server(a.redis_server, tmp) as url:
                warm_redis(paths, tmp, url)
        else:
            print("no redis-server: the Redis store's kernels compile at first use",
                  file=sys.stderr)
    left = uncompiled_kernels()
    print(f"Numba cache warmed in {time.perf_counter() - start:.0f} s "
          f"({os.environ['NUMBA_CACHE_DIR']}); kernels never compiled: "
          f"{', '.join(left) if left else 'none'}")
    if left and a.strict:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

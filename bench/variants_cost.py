"""What shadow variants cost: events/s of the learner service with 0 and with 3 variants.

    python bench/variants_cost.py [/tmp/syn1m.tsv] [--rows 200000] [--batch-size 1000]
                                  [--variants "rda:lambda=1e-4,fobos:lambda=1e-4,ftrl:l1=5"]
                                  [--repeat 3]

Criteo TSV rows are turned into ``{"events": [...]}`` JSON bodies once; then, in process
(no HTTP: the figure is what the variants add to the learn path, which HTTP only dilutes),
a fresh learner service (memory store, ``--alpha 0.2``) learns every body through the same
call ``POST /v1/train`` makes (``LearnerService.train``: parse, hash, learn, variants), with
no variant and with ``--variants``. Prints events/s of each (best of ``--repeat``), the
ratio, and each learner's progressive logloss and nnz at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.learner import LearnerService  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.startup import model_builder  # noqa: E402
from service.stores import MemoryStore  # noqa: E402

DEFAULT_DATA = Path("/tmp/syn1m.tsv")
DEFAULT_VARIANTS = "rda:lambda=1e-4,fobos:lambda=1e-4,ftrl:l1=5"
FIELDS = [f"I{j + 1}" for j in range(13)] + [f"C{j + 1}" for j in range(26)]


def bodies(path: Path, rows: int, batch: int) -> list[bytes]:
    out, events = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for i, line in enumerate(fh):
            if i >= rows:
                break
            cols = line.rstrip("\n").split("\t")
            events.append({"label": int(cols[0]),
                           "features": dict(zip(FIELDS, cols[1:], strict=False))})
            if len(events) == batch:
                out.append(json.dumps({"events": events}).encode())
                events = []
    if events:
        out.append(json.dumps({"events": events}).encode())
    return out


async def run(variants: str | None, prepared: list[bytes]) -> tuple[float, list[dict]]:
    settings = Settings(_env_file=None, alpha=0.2, variants=variants)  # type: ignore[call-arg]
    learner = LearnerService(settings, MemoryStore(), model_builder(settings))
    await learner.open()
    await learner.warm_up()
    start = time.perf_counter()
    for body in prepared:
        await learner.train(body)
    wall = time.perf_counter() - start
    stats = await learner.all_stats()
    await learner.close()
    return learner.events_learned / wall, [s.summary() for s in stats]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    prepared = bodies(args.data, args.rows, args.batch_size)
    n = sum(body.count(b'"label"') for body in prepared)
    print(f"{n} events in {len(prepared)} bodies of {args.batch_size} from {args.data}")
    results = {}
    for label, variants in (("0 variants", None), ("3 variants", args.variants)):
        best, summary = 0.0, []
        for _ in range(args.repeat):
            rate, summary = asyncio.run(run(variants, prepared))
            best = max(best, rate)
        results[label] = best
        print(f"{label:>10}: {best:>10,.0f} events/s")
        for s in summary:
            print(f"            {s['name']:<24} logloss {s['logloss']:.5f}  nnz {s['nnz']:>9,}")
    ratio = results["3 variants"] / results["0 variants"]
    print(f"with 3 variants: {ratio:.2f}x the events/s of the primary alone")


if __name__ == "__main__":
    main()

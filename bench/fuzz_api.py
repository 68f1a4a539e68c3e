"""Fuzz the HTTP API from its OpenAPI schema with schemathesis (in process, over ASGI).

    python bench/fuzz_api.py [--examples 300] [--seed 0]

Valid and invalid requests for every operation (``--examples`` per operation and mode; the
operations without input give one or a few each); every answer must be no 5xx and conform to
the schema (documented status, content type, headers, body). Prints the request count (target
>= 2,000), the counts by status and operation, and every distinct failure. Exit status 1 if
there was a 5xx or a non-conforming answer.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from fuzzing import build_app, fuzz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = fuzz(build_app(Path(tmp)), a.examples, seed=a.seed)
    print(f"schemathesis: {report.requests:,} requests in {report.seconds:.0f} s "
          f"(target >= 2,000: {'ok' if report.requests >= 2000 else 'MISS'}); "
          f"5xx: {report.server_errors}; non-conforming answers: {len(report.failures)} "
          "distinct")
    print("  by status: " + ", ".join(f"{s}: {n:,}" for s, n in sorted(report.by_status.items())))
    for op, n in sorted(report.by_operation.items()):
        print(f"  {op:<28} {n:>6,}")
    if report.skipped:
        print("  not generated (no input to make invalid): " + "; ".join(report.skipped))
    for failure in report.failures:
        print(f"FAIL {failure}")
    return 1 if report.server_errors or report.failures else 0


if __name__ == "__main__":
    sys.exit(main())

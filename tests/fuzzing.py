"""Property-based fuzzing of the HTTP API from its OpenAPI schema (schemathesis), in process.

Requests generated from the schema (valid ones, and invalid ones: wrong types, missing
members, bad content) go to the FastAPI app over ASGI. Each answer must not be a 5xx, and
must conform to the schema: a documented status code, the documented content type, headers
and body. Failures are collected rather than raised, so one run reports everything it found
(``tests/test_fuzz_api.py`` runs a short form, ``bench/fuzz_api.py`` a long one).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


@dataclass
class FuzzReport:
    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.by_status.items() if s >= 500)


_registered: list[bool] = []


def _register_ndjson() -> None:
    """Teach schemathesis to send the stream route's body (NDJSON) once per process."""
    if _registered:
        return

    @schemathesis.serializer("application/x-ndjson")
    def ndjson(ctx: Any, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode("utf-8", "surrogatepass")
        items = value if isinstance(value, list) else [value]
        return b"".join(json.dumps(v).encode() + b"\n" for v in items)

    _registered.append(True)


def build_app(workdir: Path) -> Any:
    from service.app import create_app
    from service.settings import Settings

    return create_app(Settings(alpha=0.2, data_dir=workdir / "data",
                               snapshot_every=0, max_body_bytes=1 << 20))


def wait_ready(app: Any, timeout: float = 120.0) -> None:
    """Start the app's lifespan (shared with schemathesis' client) and wait for /readyz."""
    deadline = time.monotonic() + timeout
    with asgi.get_client(app) as client:
        while client.get("http://testserver/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the app did not get ready")
            time.sleep(0.05)


def fuzz(app: Any, examples_per_operation: int, seed: int = 0,
         modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE,
                                              GenerationMode.NEGATIVE)) -> FuzzReport:
    """Up to ``examples_per_operation`` requests per operation and mode."""
    _register_ndjson()
    wait_ready(app)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    report = FuzzReport()
    start = time.perf_counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in modes:
            _fuzz_operation(operation, mode, examples_per_operation, seed, report)
    report.seconds = time.perf_counter() - start
    return report


def _fuzz_operation(operation: Any, mode: GenerationMode, n: int, seed: int,
                    report: FuzzReport) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @hypothesis.seed(seed)
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call()
        report.requests += 1
        report.by_status[response.status_code] += 1
        report.by_operation[label] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # collected, one line each
            text = f"{label} [{mode.value}] {response.status_code}: {_summary(exc)}"
            if len(report.failures) < 50 and text not in report.failures:
                report.failures.append(text)

    try:
        run()
    except hypothesis.errors.Unsatisfiable:  # nothing to negate in an operation without input
        report.skipped.append(f"{label} [{mode.value}]")


def _summary(exc: BaseException) -> str:
    """The failure's first lines (schemathesis appends a long curl reproduction)."""
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " | ".join(lines[:8])[:500]

"""Schemathesis against the app's own OpenAPI schema, in process over ASGI (a short run; the
long one is ``bench/fuzz_api.py``): no 5xx, and every response as the schema documents."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzzing import FuzzReport, build_app, fuzz

EXAMPLES_PER_OPERATION = 15


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> FuzzReport:
    app = build_app(Path(tmp_path_factory.mktemp("fuzz")))
    return fuzz(app, EXAMPLES_PER_OPERATION, seed=1)


def test_fuzz_covers_every_operation(report: FuzzReport) -> None:
    for op in ("POST /v1/train", "POST /v1/predict", "POST /v1/train/stream", "GET /v1/model",
               "GET /v1/model/features", "POST /v1/model/snapshot", "GET /v1/model/download",
               "GET /healthz", "GET /readyz", "GET /metrics", "POST /v1/impressions",
               "POST /v1/feedback", "GET /v1/join"):
        assert report.by_operation[op] > 0, op
    assert report.requests >= 100
    assert any(400 <= s < 500 for s in report.by_status)  # invalid input was generated


def test_fuzz_no_server_errors(report: FuzzReport) -> None:
    assert report.server_errors == 0, report.failures


def test_fuzz_responses_conform_to_the_schema(report: FuzzReport) -> None:
    assert not report.failures, "\n".join(report.failures)

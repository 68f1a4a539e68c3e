"""A uvicorn server of ``service.app.create_app`` for tests/test_service_fastpath.py, with
the options ``ctr serve`` gives uvicorn and the settings of the CTR_* variables:

    python tests/app_server.py PORT [--fastapi-only] [--failing-predictions]

``--fastapi-only`` builds the app without its lean path (the reference the lean path is
compared with); ``--failing-predictions`` makes every prediction raise an unexpected error
(for the 500 problem), in this test process only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.app import create_app
from service.connections import LimitedHttpToolsProtocol
from service.learner import LearnerService
from service.settings import Settings


def _failing_predict(self: LearnerService, body: bytes | bytearray) -> None:
    raise RuntimeError("secret internals of a failed prediction")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--fastapi-only", action="store_true")
    ap.add_argument("--failing-predictions", action="store_true")
    a = ap.parse_args()
    if a.failing_predictions:
        LearnerService.predict = _failing_predict  # type: ignore[assignment,method-assign]
    app = create_app(Settings(), lean=not a.fastapi_only)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="info", access_log=False,
                lifespan="on", server_header=False, http=LimitedHttpToolsProtocol)


if __name__ == "__main__":
    main()

"""Bearer API keys.

Keys come from ``CTR_API_KEYS`` (comma-separated) and ``--api-key-file`` (one per line,
blank lines and ``#`` comments skipped). With no key configured everything is open. With
keys, every ``/v1/`` route needs ``Authorization: Bearer <key>``: a missing or malformed
header is 401 (with ``WWW-Authenticate: Bearer``), an unknown key is 403. ``/v1/predict``
stays open with ``CTR_PREDICT_OPEN=true``. ``/healthz``, ``/readyz``, ``/metrics`` (counts
and aggregates only, for scrapers) and the OpenAPI documents are always open; the model
reads (``/v1/model``, its features, its download) are not, since they show what was learned.

The dashboard: the page ``/dashboard`` and its scripts are always open (they carry no
data). Its feed ``/v1/stats`` and ``/v1/variants`` hold aggregates only (counts, norms,
metrics, per-field totals; no weight, no feature value), so they follow the predict rule:
open with ``CTR_PREDICT_OPEN=true`` (whoever may query the model may see how it scores),
otherwise they need a key, which the page asks for and sends as a Bearer token.

The given key is compared with every configured key with ``hmac.compare_digest`` and the
results are combined without short-circuit, so the time taken does not tell which key, or
which prefix, matched. Keys are never logged or echoed.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from starlette.requests import Request

from .errors import Problem
from .settings import Settings

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ctr"'}


def load_keys(settings: Settings) -> tuple[bytes, ...]:
    keys: list[str] = []
    if settings.api_keys is not None:
        keys += settings.api_keys.get_secret_value().split(",")
    if settings.api_key_file is not None:
        try:
            text = Path(settings.api_key_file).read_text()
        except OSError as exc:
            raise ValueError(f"--api-key-file {settings.api_key_file}: {exc.strerror}") from None
        keys += [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    cleaned = tuple(k.strip().encode() for k in keys if k.strip())
    if (settings.api_keys is not None or settings.api_key_file is not None) and not cleaned:
        raise ValueError("API keys were configured (CTR_API_KEYS / --api-key-file) "
                         "but none is non-empty")
    return cleaned


class ApiKeys:
    """The configured keys; ``check`` raises a 401/403 problem or returns."""

    def __init__(self, keys: tuple[bytes, ...], predict_open: bool) -> None:
        self._keys = keys
        self.predict_open = predict_open

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, request: Request) -> None:
        if self._keys:
            self.check_header(request.headers.get("authorization"))

    def check_header(self, header: str | None) -> None:
        """Check an Authorization header value (None: no header)."""
        if not self._keys:
            return
        if header is None:
            raise Problem(401, "missing-credentials",
                          "this route needs an API key: send 'Authorization: Bearer <key>'",
                          headers=_CHALLENGE)
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Problem(401, "missing-credentials",
                          "the Authorization header must be 'Bearer <key>'",
                          headers=_CHALLENGE)
        given = token.encode()
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(given, key)
        if not ok:
            raise Problem(403, "invalid-credentials", "the API key is not valid")

"""Property test: nested, huge and odd JSON (and bytes that are not JSON at all) sent to every
route. Whatever arrives, the answer is never a 5xx, and a body that is rejected changes
nothing in the model (a stream changes it only by the lines it reports accepted)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import anyio.from_thread
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import running_app

from service.settings import Settings

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


class SyncClient:
    """The in-process app (lifespan running) behind a blocking portal, for hypothesis."""

    def __init__(self, portal: Any, client: httpx.AsyncClient) -> None:
        self.portal, self.client = portal, client
        self.app = client.app  # type: ignore[attr-defined]

    def post(self, *args: Any, **kwargs: Any) -> httpx.Response:
        return self.portal.call(functools.partial(self.client.post, *args, **kwargs))

    def get(self, *args: Any, **kwargs: Any) -> httpx.Response:
        return self.portal.call(functools.partial(self.client.get, *args, **kwargs))


@pytest.fixture(scope="module")
def client() -> Iterator[SyncClient]:
    settings_ = Settings(max_body_bytes=256 << 10, max_row_features=64)
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(running_app(settings_)) as c,
    ):
        yield SyncClient(portal, c)


def fingerprint(client: SyncClient) -> tuple[Any, ...]:
    svc = client.app.state.learner  # type: ignore[attr-defined]
    model = svc._model
    return (
        model.rows,
        tuple(model.registry.names),
        svc.events_learned,
        hashlib.sha256(model.optimizer.table.records().tobytes()).hexdigest(),
    )


# -- what to send -------------------------------------------------------------------------

ODD_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            " ",
            "\u0000",
            "\u0007",
            "\u0085",
            "\ud800",
            "\ufeff",
            "é",
            "(overflow)",
            "bias",
            "label",
            "features",
            "a:b",
            "😀",
            "\\",
            '"',
        ]
    ),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=3), st.integers(200, 3000)),
)
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 1.0, 1e308, 5e-324, 1e9, 1e9 + 1, 1e6]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, ODD_TEXT)
JSONISH = st.recursive(
    SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(ODD_TEXT, kids, max_size=4)),
    max_leaves=12,
)


class Deep(str):
    """A value nested ``depth`` levels deep, spliced in as text (Python's json and the
    test's own printing would recurse as deep as the value): a string placeholder."""

    text: str

    @classmethod
    def make(cls, depth: int, inner: Any, in_dicts: bool) -> Deep:
        open_, close = ('{"k": ', "}") if in_dicts else ("[", "]")
        out = cls(f"@deep{depth}{'d' if in_dicts else 'l'}@")
        out.text = open_ * depth + json.dumps(inner) + close * depth
        return out


def splice(text: str, doc: Any) -> str:
    """Replace the quoted placeholders of the ``Deep`` values of ``doc`` by their text."""
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, Deep):
            text = text.replace(json.dumps(str(x)), x.text)
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return text


# around the compiled scanner's limit (1024) and msgspec's (Python's recursion limit)
DEEP = st.builds(
    Deep.make, st.sampled_from([900, 1000, 1023, 1024, 1025, 1100, 3000]), SCALARS,
    st.booleans()
)
VALUES = st.one_of(DEEP, JSONISH, DEEP, ODD_TEXT, NUMBERS)
EVENTS = st.one_of(
    st.fixed_dictionaries(
        {
            "label": st.one_of(st.sampled_from([0, 1]), VALUES),
            "features": st.one_of(
                st.dictionaries(ODD_TEXT, VALUES, min_size=1, max_size=6), VALUES
            ),
        },
        optional={"weight": VALUES, "id": VALUES, "z": VALUES},
    ),
    VALUES,
)


@st.composite
def raw_bytes(draw: st.DrawFn, doc: Any) -> bytes:
    """``doc`` as JSON text (NaN and Infinity as Python writes them, lone surrogates as
    they come), then perhaps damaged: cut, spliced with garbage, gzip-compressed."""
    text = splice(json.dumps(doc, ensure_ascii=draw(st.booleans())), doc)
    raw = text.encode("utf-8", "surrogatepass")
    how = draw(st.sampled_from(["as is", "as is", "cut", "garbage", "bytes"]))
    if how == "cut" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif how == "garbage":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    elif how == "bytes":
        raw = draw(st.binary(max_size=300))
    return raw


BODY_DOCS = st.one_of(
    st.fixed_dictionaries({"events": st.lists(EVENTS, max_size=5)}),
    st.fixed_dictionaries({"events": VALUES}),
    VALUES,
)


def send(client: SyncClient, route: str, raw: bytes, gz: bool, ndjson: bool) -> Any:
    headers = {"content-type": "application/x-ndjson" if ndjson else "application/json"}
    if gz:
        headers["content-encoding"] = "gzip"
        raw = gzip.compress(raw)
    return client.post(route, content=raw, headers=headers)


@SETTINGS
@given(data=st.data())
def test_json_routes_never_fail_and_rejected_bodies_change_nothing(
    client: SyncClient, data: st.DataObject
) -> None:
    route = data.draw(st.sampled_from(["/v1/train", "/v1/predict"]))
    raw = data.draw(raw_bytes(data.draw(BODY_DOCS)))
    before = fingerprint(client)
    r = send(client, route, raw, data.draw(st.booleans()), ndjson=False)
    assert r.status_code < 500, (route, raw[:200], r.text[:500])
    if route == "/v1/predict" or r.status_code != 200:
        assert fingerprint(client) == before
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/problem+json"


@SETTINGS
@given(data=st.data())
def test_streams_never_fail_and_report_what_they_learned(
    client: SyncClient, data: st.DataObject
) -> None:
    lines = [data.draw(raw_bytes(data.draw(EVENTS))) for _ in range(data.draw(st.integers(1, 6)))]
    raw = b"\n".join(lines) + data.draw(st.sampled_from([b"", b"\n", b"\r\n"]))
    before = fingerprint(client)
    r = send(client, "/v1/train/stream", raw, data.draw(st.booleans()), ndjson=True)
    assert r.status_code < 500, (raw[:200], r.text[:500])
    body = r.json()
    if not body.get("accepted"):
        assert fingerprint(client) == before
    else:
        assert fingerprint(client)[0] == before[0] + body["accepted"]


GETS = [
    "/v1/model",
    "/v1/model/features",
    "/v1/stats",
    "/v1/variants",
    "/healthz",
    "/readyz",
    "/metrics",
    "/dashboard",
    "/v1/model/download",
    "/nope",
    "/v1/train",
]


@SETTINGS
@given(
    route=st.sampled_from(GETS),
    query=st.dictionaries(
        st.sampled_from(["top", "since", "x", ""]),
        # (a URL cannot carry a lone surrogate, nor be this long: the client refuses them)
        st.one_of(ODD_TEXT, st.integers().map(str)).filter(
            lambda t: len(t) < 1000 and not any(0xD800 <= ord(c) <= 0xDFFF for c in t)),
        max_size=2,
    ),
)
def test_read_routes_never_fail(client: SyncClient, route: str, query: dict[str, str]) -> None:
    before = fingerprint(client)
    r = client.get(route, params=query)
    assert r.status_code < 500, (route, query, r.text[:300])
    assert fingerprint(client) == before

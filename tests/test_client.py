"""The Python clients against a real ``ctr serve``: round trips, typed errors from real
problem responses, and the retry rule (against a server that starts late, and a scripted
HTTP server for 503s and dropped connections)."""

from __future__ import annotations

import asyncio
import http.server
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import msgspec
import pytest
from servers import ServerProcess, free_port, start_server

from clients import (
    AsyncCTRClient,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    CTRClient,
    CTRConnectionError,
    CTRError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from ftrl_core.model import Model
from ftrl_core.readers.jsonl import parse_event_array


def events(n: int, seed: int = 0, label: bool = True) -> list[dict]:
    out = []
    for i in range(n):
        ev: dict = {"features": {"site": f"s{(i * 7 + seed) % 13}", "price": (i % 5) / 4,
                                 "tags": [f"t{i % 3}", f"t{(i + seed) % 4}"], "c9": ""}}
        if label:
            ev["label"] = int((i + seed) % 3 == 0)
        out.append(ev)
    return out


@pytest.fixture
def client(ctr_server: ServerProcess) -> Iterator[CTRClient]:
    with CTRClient(ctr_server.url) as c:
        yield c


# -- round trips ----------------------------------------------------------------------------


def test_train_predict_round_trip(client: CTRClient) -> None:
    before = client.model()["model_version"]
    r = client.train(events(50))
    assert r.accepted == 50 and len(r.p) == 50
    assert all(0.0 < p < 1.0 for p in r.p)
    assert r.model_version >= before + 50
    pr = client.predict(events(7, label=False))
    assert len(pr.p) == len(pr.uncertainty) == 7
    assert pr.model_version >= r.model_version
    # a pre-encoded body is sent as it is
    again = client.predict(b'{"events":[{"features":{"site":"s0"}}]}')
    assert len(again.p) == 1


def test_floats_travel_at_full_precision(fresh_server: Callable[..., ServerProcess],
                                         tmp_path: Path) -> None:
    server = fresh_server("--alpha", "0.2")
    with CTRClient(server.url) as c:
        c.train(events(200, seed=3))
        p = c.predict(events(20, seed=5, label=False)).p
        c.download_model(tmp_path / "m.ctr")
    model = Model.load(tmp_path / "m.ctr")
    fmt = model.make_format("jsonl")
    body = msgspec.json.encode({"events": events(20, seed=5, label=False)})
    local, _ = model.predict(parse_event_array(body, fmt, require_label=False).batch)
    assert p == local.tolist()  # bit for bit


def test_model_features_snapshot_download(client: CTRClient, tmp_path: Path) -> None:
    client.train(events(100, seed=1))
    m = client.model()
    for key in ("optimizer", "params", "rows", "nnz", "coordinates", "l1_norm", "logloss",
                "auc", "model_version", "state_store"):
        assert key in m
    assert m["optimizer"] == "ftrl" and m["params"]["alpha"] == 0.2
    top = client.top_features(5)
    assert 0 < len(top) <= 5
    assert {"field", "value", "weight"} <= set(top[0])
    assert abs(top[0]["weight"]) >= abs(top[-1]["weight"])
    snap = client.snapshot()
    assert isinstance(snap, dict)
    got = client.download_model(tmp_path / "model.ctr")
    assert got.bytes == (tmp_path / "model.ctr").stat().st_size > 0
    model = Model.load(tmp_path / "model.ctr")
    assert model.rows >= 100
    assert got.model_version == model.rows  # from the X-Model-Version header
    assert not list(tmp_path.glob(".model.ctr.*"))  # no temporary file left


def test_stream_chunked_upload(client: CTRClient) -> None:
    def lines() -> Iterator[object]:  # a generator: sent as it is produced
        for i, ev in enumerate(events(3000, seed=2)):
            if i == 10:
                yield b'{"label": 7, "features": {"a": "b"}}'
            elif i == 20:
                yield "not json"
            else:
                yield ev

    r = client.stream(lines())
    assert (r.accepted, r.rejected) == (2998, 2)
    assert [(e.line, e.field) for e in r.errors] == [(11, "label"), (21, "")]
    assert r.logloss is not None and 0 < r.logloss < 1
    assert r.model_version > 0


def test_async_client(ctr_server: ServerProcess, tmp_path: Path) -> None:
    async def go() -> None:
        async with AsyncCTRClient(ctr_server.url) as c:
            assert await c.ready()
            results = await asyncio.gather(*(c.train(events(10, seed=s)) for s in range(4)))
            assert [r.accepted for r in results] == [10] * 4
            assert len((await c.predict(events(3, label=False))).p) == 3
            assert "nnz" in await c.model()
            assert await c.top_features(2)

            async def agen():
                for ev in events(100):
                    yield ev

            assert (await c.stream(agen())).accepted == 100
            assert (await c.stream(events(5))).accepted == 5
            version = (await c.model())["model_version"]
            got = await c.download_model(tmp_path / "a.ctr")
            assert got.model_version == version > 0  # the X-Model-Version header
            with pytest.raises(ValidationError):
                await c.train([{"label": 1, "features": {}}])

    asyncio.run(go())
    assert (tmp_path / "a.ctr").stat().st_size > 0


# -- typed exceptions from real problems ------------------------------------------------------


def test_validation_error_carries_the_problem(client: CTRClient) -> None:
    rows = client.model()["rows"]
    bad = events(5)
    bad[3]["label"] = 2
    with pytest.raises(ValidationError) as err:
        client.train(bad)
    e = err.value
    assert e.status == 422 and e.title and e.type and "event" in e.detail
    assert e.errors[0]["index"] == 3 and e.errors[0]["field"] == "label"
    assert isinstance(e.body, dict) and e.body["status"] == 422
    assert client.model()["rows"] == rows  # nothing of the batch was learned
    with pytest.raises(ValueError, match="feature 'price'"):
        client.train([{"label": 1, "features": {"price": math.nan}}])


def test_error_classes(client: CTRClient) -> None:
    with pytest.raises(BadRequestError) as e400:
        client.train(b'{"events": [')
    assert e400.value.status == 400
    with pytest.raises(NotFoundError):
        client._request("GET", "/v1/nothing")
    with pytest.raises(MethodNotAllowedError):
        client._request("DELETE", "/v1/train")
    with pytest.raises(UnsupportedMediaTypeError):
        client._request("POST", "/v1/train", content=b"{}", content_type="text/plain")


def test_too_large_and_auth(fresh_server: Callable[..., ServerProcess]) -> None:
    server = fresh_server("--max-body-bytes", "20000", env={"CTR_API_KEYS": "k1,k2"})
    with CTRClient(server.url) as anon, CTRClient(server.url, api_key="nope") as wrong, \
            CTRClient(server.url, api_key="k2") as good:
        with pytest.raises(AuthenticationError) as e401:
            anon.train(events(2))
        assert e401.value.status == 401
        with pytest.raises(PermissionDeniedError) as e403:
            wrong.model()
        assert e403.value.status == 403 and "nope" not in str(e403.value)
        assert good.train(events(2)).accepted == 2
        with pytest.raises(PayloadTooLargeError) as e413:
            good.train(events(500))
        assert e413.value.status == 413
        with pytest.raises(ConflictError):  # no --data-dir
            good.snapshot()
        assert anon.health() == {"status": "ok"} and anon.ready()
    r = httpx.post(server.url + "/v1/train", json={"events": []})
    assert r.status_code == 401 and r.headers["www-authenticate"].lower().startswith("bearer")
    assert r.headers["content-type"].startswith("application/problem+json")


# -- retries --------------------------------------------------------------------------------


def test_retries_until_a_late_server_is_up(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    holder: list[ServerProcess] = []
    timer = threading.Timer(0.5, lambda: holder.append(
        start_server(tmp_path, "--alpha", "0.2", port=port, wait=False)))
    timer.start()
    try:
        with CTRClient(url, retries=12, backoff=0.1) as c:
            start = time.monotonic()
            r = c.train(events(3))  # refused (nothing sent) and 503s are safe to retry
            assert r.accepted == 3
            assert time.monotonic() - start > 0.4
    finally:
        timer.join()
        for s in holder:
            s.stop()


def test_no_server_raises_connection_error() -> None:
    with CTRClient(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01) as c:
        with pytest.raises(CTRConnectionError) as err:
            c.predict(events(1, label=False))
        assert err.value.status is None and not err.value.sent
        with pytest.raises(CTRConnectionError):
            c.wait_ready(timeout=0.2)


class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers from a script shared by the test: ("status", headers, body) or "drop"."""

    script: ClassVar[list[object]] = []
    seen: ClassVar[list[str]] = []
    keys: ClassVar[list[str | None]] = []  # the Idempotency-Key of each request

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        Scripted.seen.append(self.path)
        Scripted.keys.append(self.headers.get("idempotency-key"))
        step = Scripted.script.pop(0) if Scripted.script else (200, {}, b"{}")
        if step == "drop":  # read the request, then close without a word
            self.close_connection = True
            self.connection.shutdown(2)
            return
        status, headers, body = step  # type: ignore[misc]
        self.send_response(status)
        for k, v in {"content-type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Scripted.script, Scripted.seen, Scripted.keys = [], [], []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


UNAVAILABLE = (503, {"retry-after": "0.3", "content-type": "application/problem+json"},
               b'{"type":"about:blank","title":"Service Unavailable","status":503,'
               b'"detail":"warming up"}')
TRAINED = (200, {}, b'{"p":[0.25],"accepted":1,"model_version":9}')


def test_retry_on_503_honours_retry_after(scripted: str) -> None:
    Scripted.script = [UNAVAILABLE, UNAVAILABLE, TRAINED]
    with CTRClient(scripted, retries=3, backoff=0.001) as c:
        start = time.monotonic()
        assert c.train(events(1)).p == [0.25]
        assert time.monotonic() - start >= 0.6
    assert len(Scripted.seen) == 3


def test_503_gives_up_with_typed_error(scripted: str) -> None:
    Scripted.script = [UNAVAILABLE] * 3
    with CTRClient(scripted, retries=1, backoff=0.001) as c, \
            pytest.raises(ServiceUnavailableError) as err:
        c.predict(events(1, label=False))
    assert err.value.retry_after == 0.3 and err.value.detail == "warming up"
    assert len(Scripted.seen) == 2


def test_never_retries_4xx(scripted: str) -> None:
    invalid = (422, {}, b'{"title":"Invalid events","status":422,"errors":'
                        b'[{"index":0,"field":"label","detail":"bad"}]}')
    Scripted.script = [invalid, TRAINED]
    with CTRClient(scripted, retries=3, backoff=0.001) as c, pytest.raises(ValidationError):
        c.train(events(1))
    assert len(Scripted.seen) == 1


def test_train_is_retried_with_its_key(scripted: str) -> None:
    """A batch the server may have received (the connection dropped after sending) is
    sent again with the same Idempotency-Key, and so is one answered 409 (its first
    attempt not yet durable): the server learns it once. Each batch has its own key."""
    conflict = (409, {"retry-after": "0"}, b'{"title":"Idempotency-Key in use",'
                                           b'"status":409}')
    Scripted.script = ["drop", conflict, TRAINED, TRAINED]
    with CTRClient(scripted, retries=3, backoff=0.001) as c:
        assert c.train(events(1)).p == [0.25]
        assert c.train(events(1), idempotency_key="mine").p == [0.25]
    first = Scripted.keys[0]
    assert first and Scripted.keys[:3] == [first] * 3
    assert Scripted.keys[3] == "mine"


def test_stream_is_not_retried_once_sent(scripted: str) -> None:
    Scripted.script = ["drop", (200, {}, b'{"accepted":1,"rejected":0,"errors":[]}')]
    with CTRClient(scripted, retries=3, backoff=0.001) as c:
        with pytest.raises(CTRConnectionError) as err:
            c.stream(iter(events(1)))  # no key: the server may have learned it
        assert err.value.sent
        assert len(Scripted.seen) == 1
        Scripted.script = ["drop", (200, {}, b'{"p":[0.5],"uncertainty":[0.1]}')]
        assert c.predict(events(1, label=False)).p == [0.5]  # prediction is safe to repeat
    assert len(Scripted.seen) == 3


def test_errors_pickle_with_their_fields() -> None:
    import pickle

    e = ValidationError(422, "Invalid", "bad", "t", [{"index": 1}], {"x": 1})
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is ValidationError and back.errors == [{"index": 1}]
    assert str(back) == str(e)
    assert isinstance(ServiceUnavailableError(503, retry_after=1.0), CTRError)

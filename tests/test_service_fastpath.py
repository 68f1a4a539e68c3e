"""The lean path (service/fastpath.py) answers exactly as FastAPI does: the same requests,
good and bad, sent over raw HTTP to a real `ctr serve` and to a real server of the same app
without its lean path, get the same status, headers and bodies; /metrics counts them alike;
an unexpected failure is the same 500 problem with the request id."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import ServerProcess, start_server
from service_helpers import some_events

KEYS = "key-one,key-two"
GOOD = "Bearer key-two"
SETTINGS = {"CTR_API_KEYS": KEYS, "CTR_MAX_BODY_BYTES": "65536", "CTR_MAX_ROW_FEATURES": "60",
            "CTR_STRICT": "true", "CTR_ALPHA": "0.2", "CTR_STATS_EVERY": "3600"}
#: the response headers compared (the date differs; the request id is compared apart)
COMPARED = ("content-type", "content-length", "www-authenticate", "retry-after", "connection",
            "allow", "location")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def compared(self) -> tuple[int, dict[str, str], bytes]:
        """Status, the compared headers (a redirect's own port left out) and body."""
        headers = {k: re.sub(r"^http://127\.0\.0\.1:\d+/", "/", v)
                   for k, v in self.headers.items() if k in COMPARED}
        return self.status, headers, self.body


def http(port: int, method: str, path: str, body: bytes | list[bytes] = b"",
         headers: dict[str, str] | None = None) -> Reply:
    """One request on its own connection, byte for byte as given (a list of chunks is sent
    with chunked transfer encoding), and its reply as the server wrote it."""
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if isinstance(body, list):
        head.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in body) + b"0\r\n\r\n"
    else:
        if body or method == "POST":
            head.append(f"Content-Length: {len(body)}")
        payload = body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before the headers: {data!r}"
            data += chunk
        raw_head, _, rest = data.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields.setdefault(name.strip().lower(), value.strip())
        length = int(fields.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-body"
            rest += chunk
    return Reply(status, fields, rest[:length])


def js(value: object) -> bytes:
    return json.dumps(value).encode()


def requests() -> Iterator[tuple[str, str, str, bytes | list[bytes], dict[str, str]]]:
    """(name, method, path, body, headers): good and bad requests of every kind, in an order
    that trains both servers alike."""
    events = some_events(400, seed=11)
    auth = {"Authorization": GOOD, "Content-Type": "application/json"}
    for i in range(0, 300, 100):
        yield f"train {i}", "POST", "/v1/train", js({"events": events[i:i + 100]}), auth
    probe = [{"features": e["features"]} for e in events[300:350]]
    yield "predict 1", "POST", "/v1/predict", js({"events": probe[:1]}), auth
    yield "predict 50", "POST", "/v1/predict", js({"events": probe}), auth
    yield "predict labels ignored", "POST", "/v1/predict", js({"events": events[300:305]}), auth
    yield "predict unknown fields", "POST", "/v1/predict", js(
        {"events": [{"features": {"zz": "q", "C1": "x", "n": 2.5, "t": ["a", "a", ""]}}]}), auth
    yield "predict empty", "POST", "/v1/predict", js({"events": []}), auth
    yield "predict +json media type", "POST", "/v1/predict", js({"events": probe[:2]}), {
        "Authorization": GOOD, "Content-Type": "application/vnd.ctr+json; charset=utf-8"}
    yield "predict chunked", "POST", "/v1/predict", [b'{"events": [', js(probe[0])[:40],
                                                     js(probe[0])[40:] + b"]}"], auth
    yield "predict request id", "POST", "/v1/predict", js({"events": probe[:1]}), {
        **auth, "X-Request-ID": "req-77"}
    bad_label = [dict(e) for e in events[350:355]]
    bad_label[3] = {**bad_label[3], "label": 5}
    yield "train bad label", "POST", "/v1/train", js({"events": bad_label}), auth
    yield "train missing label", "POST", "/v1/train", js({"events": probe[:2]}), auth
    yield "train unknown key (strict)", "POST", "/v1/train", js(
        {"events": [{"label": 1, "features": {"a": "b"}, "extra": 1}]}), auth
    yield "predict malformed", "POST", "/v1/predict", b'{"events": [{"features": {"a": }]}', auth
    yield "predict truncated", "POST", "/v1/predict", b'{"events": [', auth
    yield "predict NaN", "POST", "/v1/predict", b'{"events": [{"features": {"a": NaN}}]}', auth
    yield "predict events not a list", "POST", "/v1/predict", js({"events": 5}), auth
    yield "predict no events key", "POST", "/v1/predict", js({"evnts": []}), auth
    yield "predict empty features", "POST", "/v1/predict", js({"events": [{"features": {}}]}), auth
    yield "predict too many features", "POST", "/v1/predict", js(
        {"events": [{"features": {f"f{j}": "x" for j in range(80)}}]}), auth
    yield "predict value too large", "POST", "/v1/predict", js(
        {"events": [{"features": {"a": 1e300}}]}), auth
    yield "predict wrong type", "POST", "/v1/predict", js(
        {"events": [{"features": {"a": {}}}]}), auth
    yield "predict invalid utf-8", "POST", "/v1/predict", (
        b'{"events": [{"features": {"a": "\xff"}}]}'), auth
    yield "train text/plain", "POST", "/v1/train", js({"events": []}), {
        "Authorization": GOOD, "Content-Type": "text/plain"}
    yield "predict no media type", "POST", "/v1/predict", js({"events": []}), {
        "Authorization": GOOD}
    yield "predict no key", "POST", "/v1/predict", js({"events": []}), {
        "Content-Type": "application/json"}
    yield "train wrong key", "POST", "/v1/train", js({"events": []}), {
        "Authorization": "Bearer key-three", "Content-Type": "application/json"}
    yield "train basic auth", "POST", "/v1/train", js({"events": []}), {
        "Authorization": "Basic a2V5LW9uZQ==", "Content-Type": "application/json"}
    yield "train empty bearer", "POST", "/v1/train", js({"events": []}), {
        "Authorization": "Bearer ", "Content-Type": "application/json"}
    big = js({"events": events[:200]})
    assert len(big) > 65536
    yield "train too large", "POST", "/v1/train", big, auth
    yield "train too large, chunked", "POST", "/v1/train", [big[:40000], big[40000:]], auth
    yield "predict GET", "GET", "/v1/predict", b"", auth
    yield "predict trailing slash", "POST", "/v1/predict/", js({"events": []}), auth
    yield "train after all that", "POST", "/v1/train", js({"events": events[355:400]}), auth
    yield "predict after", "POST", "/v1/predict", js({"events": probe}), auth


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Callable[..., tuple[ServerProcess, ServerProcess]]]:
    started: list[ServerProcess] = []

    def start(env: dict[str, str], *flags: str, ctr_serve: bool = True
              ) -> tuple[ServerProcess, ServerProcess]:
        """(lean, FastAPI only), started together; the lean one is `ctr serve`."""
        lean = (start_server(tmp_path / "lean", env=env, wait=False) if ctr_serve else
                start_server(tmp_path / "lean", *flags, env=env, wait=False, app_server=True))
        plain = start_server(tmp_path / "plain", "--fastapi-only", *flags, env=env,
                             wait=False, app_server=True)
        started.extend((lean, plain))
        lean.wait_ready()
        plain.wait_ready()
        return lean, plain

    yield start
    for server in started:
        server.stop()


def histogram_counts(port: int) -> dict[str, float]:
    text = http(port, "GET", "/metrics").body.decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'(ctr_http_request_duration_seconds_count\{[^}]*route="/v1/[^}]*\}'
                     r'|ctr_predictions_total|ctr_events_learned_total'
                     r'|ctr_events_rejected_total) (\S+)$', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def test_lean_path_answers_as_fastapi(pair: Callable[..., tuple[ServerProcess, ServerProcess]]
                                      ) -> None:
    lean, plain = pair(SETTINGS)
    seen = set()
    for name, method, path, body, headers in requests():
        a = http(lean.port, method, path, body, headers)
        b = http(plain.port, method, path, body, headers)
        assert a.compared() == b.compared(), name
        seen.add(a.status)
        assert a.headers["x-request-id"] and b.headers["x-request-id"], name
        if "X-Request-ID" in headers:
            assert a.headers["x-request-id"] == b.headers["x-request-id"] == "req-77"
        if a.status >= 400 and a.status != 405:
            assert a.headers["content-type"] == "application/problem+json", name
    # every kind of answer was compared, not only successes
    assert {200, 307, 400, 401, 403, 405, 413, 415, 422} <= seen
    counts = histogram_counts(lean.port)
    assert counts == histogram_counts(plain.port)
    assert counts['ctr_http_request_duration_seconds_count{method="POST",route="/v1/predict",'
                  'status="200"}'] >= 8
    assert counts["ctr_events_learned_total"] == 345


def test_predict_open_and_not_ready_alike(
        pair: Callable[..., tuple[ServerProcess, ServerProcess]]) -> None:
    lean, plain = pair({**SETTINGS, "CTR_PREDICT_OPEN": "true"})
    open_predict = js({"events": [{"features": {"a": "b"}}]})
    for method, path, body, headers in (
            ("POST", "/v1/predict", open_predict, {"Content-Type": "application/json"}),
            ("POST", "/v1/train", js({"events": []}), {"Content-Type": "application/json"}),
            ("POST", "/v1/predict", open_predict, {"Authorization": "Bearer nope",
                                                   "Content-Type": "application/json"})):
        a = http(lean.port, method, path, body, headers)
        b = http(plain.port, method, path, body, headers)
        assert a.compared() == b.compared()
        assert a.status == (401 if path == "/v1/train" else 200)


def test_unexpected_failure_is_the_same_500(
        pair: Callable[..., tuple[ServerProcess, ServerProcess]]) -> None:
    lean, plain = pair({"CTR_ALPHA": "0.2"}, "--failing-predictions", ctr_serve=False)
    body = js({"events": [{"features": {"a": "b"}}]})
    for headers in ({"X-Request-ID": "req-500"}, {}):
        replies = [http(s.port, "POST", "/v1/predict", body,
                        {"Content-Type": "application/json", **headers})
                   for s in (lean, plain)]
        problems = []
        for r in replies:
            assert r.status == 500 and r.headers["content-type"] == "application/problem+json"
            problem = json.loads(r.body)
            assert problem["request_id"] == r.headers["x-request-id"]
            assert re.fullmatch(r"req-500|[0-9a-f]{32}", problem["request_id"])
            assert b"secret" not in r.body and b"Traceback" not in r.body
            problems.append({**problem, "request_id": None})
        assert problems[0] == problems[1]
        assert replies[0].compared()[:2] == replies[1].compared()[:2]
    for server in (lean, plain):
        assert "req-500" in server.log_tail(200)  # the traceback is logged with the id
    assert histogram_counts(lean.port) == histogram_counts(plain.port)

"""The attribution join (service/join): impressions now, clicks later.

The models the service learns are compared, to rtol 1e-12, with a model built the same way
and fed the same rows directly, in the order an independent reference of the join rules
(below: sort by close time, then arrival) says they close, with the weights the policies
say."""

from __future__ import annotations

import json
import math
import random
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from join_stream import joining
from servers import start_server
from service_helpers import running_app, some_events

from clients import AsyncCTRClient, CTRClient
from ftrl_core.model import Model
from ftrl_core.readers.jsonl import JsonlFormat, parse_event_array
from ftrl_core.spans import Rows
from service.cli import main
from service.errors import Problem
from service.join import JoinState
from service.join.bodies import MAX_AHEAD_SECONDS
from service.join.ids import coin, id_key
from service.join.policies import fnw_weights
from service.learner_options import LearnerOptions
from service.settings import Settings
from service.startup import model_builder

pytestmark = pytest.mark.anyio

WINDOW = 100.0


def settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, alpha=0.2, **kw)  # type: ignore[call-arg]


def body(events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"events": events}).encode()


def impressions(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` impressions with ids and times that do not arrive in time order."""
    rng = random.Random(seed)
    out = []
    for i, e in enumerate(some_events(n, seed=seed)):
        out.append({"id": f"imp-{seed}-{i}", "ts": 1000.0 + 3 * i + rng.uniform(-20, 20),
                    "features": e["features"]})
    return out


class Reference:
    """A model built as the service builds it, learning rows directly."""

    def __init__(self, s: Settings, every: list[dict[str, Any]]) -> None:
        self.model: Model = model_builder(s)()
        self.fmt = JsonlFormat(self.model.registry, self.model.options)
        # fields numbered in arrival order, as the service's parse of the impressions does
        parse_event_array(body(every), self.fmt, require_label=False, ignore_label=True)

    def batch(self, events: list[dict[str, Any]], labels: list[float],
              weights: list[float] | None = None) -> Any:
        rows = [{"features": e["features"], "label": y,
                 "weight": 1.0 if weights is None else weights[i]}
                for i, (e, y) in enumerate(zip(events, labels, strict=True))]
        result = parse_event_array(body(rows), self.fmt, require_label=True)
        assert not result.errors
        return result.batch

    def learn(self, events: list[dict[str, Any]], labels: list[float],
              weights: list[float] | None = None) -> None:
        if events:
            self.model.learn(self.batch(events, labels, weights))

    def predict(self, events: list[dict[str, Any]]) -> np.ndarray:
        return self.model.predict(self.batch(events, [0.0] * len(events)))[0]


def closing_order(requests: list[tuple[str, list[dict[str, Any]]]], window: float
                  ) -> tuple[list[dict[str, Any]], list[float], dict[str, str]]:
    """The join's rules written plainly (event time only): the impressions that close, in
    order, with their labels; and what each click became."""
    pending: dict[str, tuple[float, int, dict[str, Any]]] = {}
    clicked: set[str] = set()
    closed: set[str] = set()
    order: list[dict[str, Any]] = []
    labels: list[float] = []
    became: dict[str, str] = {}
    watermark = -math.inf
    seq = 0

    def advance(t: float) -> None:
        nonlocal watermark
        watermark = max(watermark, t)
        due = sorted((c, s, i) for i, (c, s, _) in pending.items() if c < watermark)
        for _, _, i in due:
            order.append(pending.pop(i)[2])
            labels.append(1.0 if i in clicked else 0.0)
            closed.add(i)

    for kind, events in requests:
        for e in events:
            advance(e["ts"])
            if kind in ("imp", "plog"):
                pending[e["id"]] = (e["ts"] + window, seq, e)
                seq += 1
            elif e["id"] in pending:
                clicked.add(e["id"])
                became[e["id"]] = "joined"
            else:
                became[e["id"]] = "late" if e["id"] in closed else "unknown"
    return order, labels, became


def traffic(seed: int) -> tuple[list[tuple[str, list[dict[str, Any]]]],
                                list[dict[str, Any]]]:
    """Requests of impressions and clicks (some late, one unknown), in time order."""
    rng = random.Random(seed)
    imps = impressions(120, seed)
    requests: list[tuple[str, list[dict[str, Any]]]] = []
    for start in range(0, len(imps), 20):
        chunk = imps[start:start + 20]
        requests.append(("imp", chunk))
        last = start + 20 >= len(imps)  # short delays: the last impressions stay pending
        delays = [5.0] if last else [5.0, 60.0, 150.0]
        clicks = [{"id": e["id"], "ts": e["ts"] + rng.choice(delays)}
                  for e in chunk if rng.random() < 0.3]
        clicks.sort(key=lambda c: c["ts"])
        unknown = {"id": "never-shown", "ts": clicks[-1]["ts"] if clicks else 0.0}
        requests.append(("click", [*clicks, unknown]))
    return requests, imps


async def post_all(client: httpx.AsyncClient,
                   requests: list[tuple[str, list[dict[str, Any]]]]) -> None:
    for kind, events in requests:
        path = "/v1/impressions" if kind == "imp" else "/v1/feedback"
        r = await client.post(path, content=body(events),
                              headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text


def probe_events() -> list[dict[str, Any]]:
    return [{"features": e["features"]} for e in some_events(50, seed=99)]


async def service_p(client: httpx.AsyncClient) -> np.ndarray:
    r = await client.post("/v1/predict", json={"events": probe_events()})
    assert r.status_code == 200, r.text
    return np.array(r.json()["p"])


# -- fnw's weights -------------------------------------------------------------------------


def test_fnw_weights_match_the_paper() -> None:
    """Ktena et al. 2019: positives weigh 1 + p, negatives (1 - p)(1 + p)."""
    p = np.linspace(0.0, 1.0, 41)
    for label in (0, 1):
        got = fnw_weights(p, np.full(p.size, label))
        want = [(1 + q) if label else (1 - q) * (1 + q) for q in p.tolist()]
        np.testing.assert_allclose(got, want, rtol=0, atol=0)


def test_fnw_weights_unbias_the_logistic_gradient() -> None:
    """Under the biased distribution b(1|x) = p/(1+p), b(0|x) = 1/(1+p), the weighted
    logistic gradient (f - y) has the expectation of the unbiased one, f - p."""
    rng = np.random.default_rng(3)
    p = rng.uniform(0.001, 0.999, 200)
    f = rng.uniform(0.001, 0.999, 200)
    b1, b0 = p / (1 + p), 1 / (1 + p)
    biased = b1 * fnw_weights(p, np.ones(200)) * (f - 1) + b0 * fnw_weights(
        p, np.zeros(200)) * f
    np.testing.assert_allclose(biased, f - p, rtol=1e-12, atol=1e-15)
    # and without the weights it is biased
    assert np.max(np.abs(b1 * (f - 1) + b0 * f - (f - p))) > 0.05


# -- wait: exactly the joined labels, in closing order -------------------------------------


async def test_wait_learns_the_joined_labels_in_closing_order() -> None:
    s = settings(join_window=WINDOW)
    requests, imps = traffic(seed=1)
    order, labels, became = closing_order(requests, WINDOW)
    assert 0 < len(order) < len(imps) and 0 < sum(labels) < len(labels)
    assert "late" in became.values() and "joined" in became.values()
    async with running_app(s) as client:
        await post_all(client, requests)
        status = (await client.get("/v1/join")).json()
        got = await service_p(client)
        version = (await client.get("/v1/model")).json()["model_version"]
    ref = Reference(s, imps)
    ref.learn(order, labels)
    assert version == len(order) == ref.model.rows
    np.testing.assert_allclose(got, ref.predict(probe_events()), rtol=1e-12, atol=0)
    values = list(became.values())
    assert status["pending"] == len(imps) - len(order)
    assert status["joined"] == values.count("joined")
    assert status["late"] == values.count("late")
    assert status["expired"] == len(order)
    assert status["learned_positives"] == sum(labels)
    assert status["bytes_per_pending"] > 20 * 39  # 39 features of 20 bytes, and overhead
    assert sum(status["click_delay_seconds"]["counts"]) == status["joined"]


async def test_a_late_click_changes_nothing() -> None:
    s = settings(join_window=WINDOW)
    imps = impressions(10, seed=2)
    later = {"id": "push", "ts": 5000.0, "features": imps[0]["features"]}
    async with running_app(s) as client:
        await post_all(client, [("imp", imps), ("imp", [later])])  # all 10 closed
        before = await service_p(client)
        r = await client.post("/v1/feedback", json={"events": [
            {"id": imps[3]["id"], "ts": 5001.0}]})
        assert r.status_code == 200 and r.json()["late"] == 1 and r.json()["joined"] == 0
        assert np.array_equal(await service_p(client), before)
        status = (await client.get("/v1/join")).json()
    assert status["late"] == 1 and status["learned_positives"] == 0


async def test_label_zero_closes_at_once() -> None:
    s = settings(join_window=1e6)
    imps = impressions(4, seed=3)
    async with running_app(s) as client:
        await post_all(client, [("imp", imps)])
        r = await client.post("/v1/feedback", json={"events": [
            {"id": imps[2]["id"], "label": 0}]})
        assert r.json()["closed"] == 1
        got = await service_p(client)
        status = (await client.get("/v1/join")).json()
    ref = Reference(s, imps)
    ref.learn([imps[2]], [0.0])
    np.testing.assert_allclose(got, ref.predict(probe_events()), rtol=1e-12, atol=0)
    assert status["pending"] == 3 and status["closed_by_label"] == 1


async def test_max_pending_closes_the_oldest_first() -> None:
    s = settings(join_window=1e6, max_pending=3)
    imps = impressions(5, seed=4)
    imps[0]["ts"], imps[1]["ts"] = 2000.0, 1500.0  # arrival order, not time order, decides
    async with running_app(s) as client:
        await post_all(client, [("imp", imps[:1]), ("imp", imps[1:])])
        r = await client.post("/v1/feedback", json={"events": [
            {"id": e["id"], "ts": 2500.0} for e in imps]})
        assert r.json()["late"] == 2 and r.json()["joined"] == 3
        got = await service_p(client)
        status = (await client.get("/v1/join")).json()
    assert status["closed_early"] == 2 and status["pending"] == 3
    ref = Reference(s, imps)
    ref.learn(imps[:2], [0.0, 0.0])
    np.testing.assert_allclose(got, ref.predict(probe_events()), rtol=1e-12, atol=0)


async def test_negative_subsampling_keeps_by_id_hash_with_weight() -> None:
    rate = 0.4
    s = settings(join_window=WINDOW, negative_rate=rate)
    imps = impressions(60, seed=5)
    push = {"id": "push", "ts": 1e6, "features": imps[0]["features"]}
    async with running_app(s) as client:
        await post_all(client, [("imp", imps), ("imp", [push])])
        got = await service_p(client)
        status = (await client.get("/v1/join")).json()
    order = sorted(imps, key=lambda e: e["ts"])  # no clicks: all negatives, by close time
    kept = [e for e in order if coin(id_key(e["id"])) < rate]
    assert 0 < len(kept) < len(order)
    assert status["learned_negatives"] == len(kept)
    assert status["negatives_dropped"] == len(order) - len(kept)
    ref = Reference(s, imps)
    ref.learn(kept, [0.0] * len(kept), [1 / rate] * len(kept))
    np.testing.assert_allclose(got, ref.predict(probe_events()), rtol=1e-12, atol=0)


# -- fnw: negatives at once, weighted positives on clicks ------------------------------------


async def test_fnw_learns_weighted_negatives_now_and_positives_on_clicks() -> None:
    s = settings(join_window=WINDOW, join_policy="fnw")
    requests, imps = traffic(seed=6)
    ref = Reference(s, imps)
    async with running_app(s) as client:
        for kind, events in requests:
            if kind == "imp":
                r = await client.post("/v1/impressions", content=body(events),
                                      headers={"content-type": "application/json"})
                p = ref.predict(events)
                np.testing.assert_allclose(r.json()["p"], p, rtol=1e-12, atol=0)
                ref.learn(events, [0.0] * len(events), fnw_weights(p, np.zeros(p.size)))
                continue
            # the clicks joined: those whose impression is pending at the click's time
            _, _, became = closing_order(requests[:requests.index((kind, events)) + 1],
                                         WINDOW)
            joined = [next(e for e in imps if e["id"] == c["id"]) for c in events
                      if became.get(c["id"]) == "joined"]
            r = await client.post("/v1/feedback", content=body(events),
                                  headers={"content-type": "application/json"})
            assert r.json()["joined"] == len(joined)
            if joined:
                p = ref.predict(joined)
                ref.learn(joined, [1.0] * len(joined), fnw_weights(p, np.ones(p.size)))
        got = await service_p(client)
    np.testing.assert_allclose(got, ref.predict(probe_events()), rtol=1e-12, atol=0)


# -- the boundary --------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "event", "field", "value"), [
    ("/v1/impressions", {"features": {"a": "x"}}, "id", None),
    ("/v1/impressions", {"id": "x" * 129, "features": {"a": "x"}}, "id", '"' + "x" * 50),
    ("/v1/impressions", {"id": "i", "ts": "noon", "features": {"a": "x"}}, "ts", '"noon"'),
    ("/v1/impressions", {"id": "i", "ts": -5, "features": {"a": "x"}}, "ts", "-5"),
    ("/v1/feedback", {"ts": 1.0}, "id", None),
    ("/v1/feedback", {"id": "i", "label": 2}, "label", "2"),
    ("/v1/feedback", {"id": "i", "label": True}, "label", "true"),
    ("/v1/feedback", {"id": "i", "ts": [1]}, "ts", "[1]"),
])
async def test_bad_input_is_a_422_naming_field_and_value(path: str, event: dict[str, Any],
                                                        field: str, value: str | None
                                                        ) -> None:
    async with running_app(settings()) as client:
        r = await client.post(path, json={"events": [{"id": "ok", "features": {"a": "y"}},
                                                     event]})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        err = r.json()["errors"][0]
        assert err["index"] == 1 and err["field"] == field
        if value is None:
            assert "value" not in err
        else:
            assert err["value"].startswith(value)
        status = (await client.get("/v1/join")).json()
    assert status["impressions"] == 0 and status["unknown"] == 0  # nothing was done


def test_join_flags_are_refused_with_memory_and_workers() -> None:
    Settings(_env_file=None, state="redis://127.0.0.1:6379", workers=2, join_window=5.0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="memory:// and one worker"):
        Settings(_env_file=None, workers=2, join_policy="fnw")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="wait only"):
        Settings(_env_file=None, join_policy="fnw", negative_rate=0.5)  # type: ignore[call-arg]


# -- durability ----------------------------------------------------------------------------


def test_sigkill_with_impressions_pending_loses_none(tmp_path: Path) -> None:
    """A real ``ctr serve`` on a data directory, SIGKILLed with impressions pending (some
    in the checkpoint, some only in the log): after the restart the join is where it was,
    and closing everything learns exactly the reference's rows, labels and order."""
    requests, imps = traffic(seed=7)
    # the last impressions come through /v1/predict with "log": true (logged as such)
    assert requests[-2][0] == "imp"
    requests[-2] = ("plog", requests[-2][1])
    push = ("imp", [{"id": "push", "ts": 1e6, "features": imps[0]["features"]}])
    half = len(requests) // 2
    flags = ["--alpha", "0.2", "--data-dir", str(tmp_path / "data"), "--join-window",
             str(WINDOW), "--snapshot-every", "0"]
    server = start_server(tmp_path / "serve", *flags)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            post_sync(client, requests[:half])
            assert client.post("/v1/model/snapshot").status_code == 200
            post_sync(client, requests[half:])
            keyed = client.post("/v1/feedback", json={"events": [{"id": "nobody"}]},
                                headers={"Idempotency-Key": "fb-1"})
            assert keyed.json()["unknown"] == 1
            before = client.get("/v1/join").json()
            probe = client.post("/v1/predict", json={"events": probe_events()}).json()["p"]
        assert before["pending"] > 0
        server.kill()
        assert server.proc.returncode == -signal.SIGKILL
        server = start_server(tmp_path / "serve", *flags)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            after = client.get("/v1/join").json()
            again = client.post("/v1/predict", json={"events": probe_events()}).json()["p"]
            retry = client.post("/v1/feedback", json={"events": [{"id": "nobody"}]},
                                headers={"Idempotency-Key": "fb-1"})
            assert retry.headers["idempotent-replayed"] == "true"
            assert retry.json() == keyed.json()
            assert client.get("/v1/join").json()["unknown"] == before["unknown"]
            post_sync(client, [push])
            closed = client.get("/v1/join").json()
            got = client.post("/v1/predict", json={"events": probe_events()}).json()["p"]
        server.stop()
    finally:
        server.kill()
    assert {k: v for k, v in after.items() if k != "arrival_clock"} == \
        {k: v for k, v in before.items() if k != "arrival_clock"}
    assert again == probe
    order, labels, _ = closing_order([*requests, push], WINDOW)
    assert closed["pending"] == 1 and closed["expired"] == len(order) == len(imps)
    ref = Reference(settings(join_window=WINDOW), imps)
    ref.learn(order, labels)
    np.testing.assert_allclose(got, ref.predict(probe_events()), rtol=1e-12, atol=0)


def post_sync(client: httpx.Client, requests: list[tuple[str, list[dict[str, Any]]]]) -> None:
    for kind, events in requests:
        if kind == "plog":  # /v1/predict with "log": true
            r = client.post("/v1/predict", json={"events": events, "log": True})
            assert r.status_code == 200, r.text
            continue
        path = "/v1/impressions" if kind == "imp" else "/v1/feedback"
        r = client.post(path, content=body(events), headers={"content-type":
                                                             "application/json"})
        assert r.status_code == 200, r.text


async def test_arrival_time_impressions_close_on_the_background_tick() -> None:
    """Without ``ts`` an impression is timed by its arrival and closed by the tick."""
    async with running_app(settings(join_window=0.05)) as client:
        imps = [{"id": f"a{i}", "features": e["features"]}
                for i, e in enumerate(some_events(5, seed=8))]
        r = await client.post("/v1/impressions", json={"events": imps})
        assert r.status_code == 200
        r = await client.post("/v1/feedback", json={"events": [{"id": "a1"}]})
        assert r.json()["joined"] == 1  # within the window of its arrival
        status: dict[str, Any] = {}
        for _ in range(600):  # the tick runs every second
            status = (await client.get("/v1/join")).json()
            if status["pending"] == 0:
                break
            await anyio.sleep(0.05)
        version = (await client.get("/v1/model")).json()["model_version"]
    assert status["pending"] == 0 and status["expired"] == 5
    assert status["learned_positives"] == 1 and version == 5


def one_feature_rows(n: int) -> Rows:
    """``n`` rows of one feature each (key 1, field 1, value 1.0)."""
    return Rows(np.arange(n + 1), np.ones(n, np.uint64), np.ones(n, np.int32), np.ones(n),
                range(n))


def test_arrival_and_event_clocks_are_separate() -> None:
    """Event-time impressions are not closed by the arrival clock, and the other way."""
    state = JoinState(10.0, "wait")
    state.impressions([1, 2], [50.0, None], one_feature_rows(2), at=1e9)
    assert len(state.tick(1e9 + 11)) == 1 and list(state.pending) == [1]
    todo = state.feedback([1], [61.0], [1], at=1e9 + 12)  # closes 1 first: the click is late
    assert len(todo) == 1 and todo.labels == [0.0] and state.counts["late"] == 1


def test_late_and_unknown_are_told_apart_for_the_last_closed_ids(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the last ``CLOSED_KEPT`` closed ids are remembered (a click on an older one is
    ``unknown``, on a kept one ``late``), in closing order, through ``state()``/``load()``;
    a kept id shown again is a duplicate."""
    import service.join.pending as pending

    monkeypatch.setattr(pending, "CLOSED_KEPT", 3)
    state = JoinState(10.0, "wait")
    state.impressions([1, 2, 3, 4], [0.0, 1.0, 2.0, 3.0], one_feature_rows(4), at=0.0)
    state.feedback([3], [5.0], [0], at=0.0)  # closed by its label: 3 first
    state.impressions([5], [100.0], one_feature_rows(1), at=0.0)  # closes 1, 2, 4
    assert list(state.closed) == [1, 2, 4]
    again = JoinState(10.0, "wait")
    again.load(state.state())
    for s in (state, again):
        s.feedback([3, 1, 4], [100.0] * 3, [1] * 3, at=0.0)
        assert (s.counts["unknown"], s.counts["late"]) == (1, 2)
        _, added = s.impressions([2, 3], [100.0, 100.0], one_feature_rows(2), at=0.0)
        assert added == [False, True]


def test_shared_join_state_closes_on_the_tick_only() -> None:
    """``JoinState(shared=True)`` (in process): requests never close by event time; a
    click for an id it does not hold is forwarded; published clicks apply to the ids it
    holds, before the tick's watermark closes them; an impression already past the agreed
    watermark is due at the next tick; the cursor and the newest time seen survive
    ``state()``/``load()``."""
    j = JoinState(10.0, "wait", shared=True)
    j.impressions([1, 2, 3], [100.0, 101.0, 102.0], one_feature_rows(3), at=0.0)
    j.feedback([9], [500.0], [1], at=0.0)  # far ahead: a request closes nothing
    assert len(j.pending) == 3 and j.counts["forwarded"] == 1 and j.seen == 500.0
    todo = j.marks([2, 7], [105.0, 105.0], [1, 1], [0.0, 0.0])  # 7: another worker's
    assert len(todo) == 0 and j.counts["joined"] == 1 and j.counts["marks_matched"] == 1
    assert j.due_event(111.5) and not j.due_event(110.0)
    out = j.advance(111.5, 0.0)  # closes 1 and 2 (close at 110, 111), not 3 (112)
    assert out.labels == [0.0, 1.0] and list(j.pending) == [3]
    j.impressions([4], [50.0], one_feature_rows(1), at=0.0)  # already past the agreed watermark
    assert j.due_event(j.watermark)
    j.cursor = "1700000000000-3"
    again = JoinState(10.0, "wait", shared=True)
    again.load(j.state())
    assert (again.cursor, again.seen, sorted(again.pending)) == (j.cursor, 500.0, [3, 4])
    assert len(again.marks([3], [130.0], [1], [0.0])) == 0
    assert again.counts["late"] == 1  # its window closed at 112


# -- ctr replay of a mixed stream, and the clients ----------------------------------------


@pytest.mark.parametrize("concurrency", ["4", "1"])
def test_replay_of_a_mixed_stream_and_the_clients(tmp_path: Path, concurrency: str) -> None:
    """``ctr replay`` sends impressions and clicks in file order (in requests of another
    size than the reference's: the result is the same), pipelined on one connection or one
    at a time through the client; the clients' calls work."""
    requests, imps = traffic(seed=9)
    stream = tmp_path / "events.jsonl"
    with open(stream, "w") as fh:
        for kind, events in requests:
            for e in events:
                fh.write(json.dumps({"type": "impression" if kind == "imp" else "click",
                                     **e}) + "\n")
    order, labels, became = closing_order(requests, WINDOW)
    server = start_server(tmp_path / "serve", "--alpha", "0.2", "--join-window", str(WINDOW))
    try:
        metrics = tmp_path / "m.json"
        assert main(["replay", str(stream), "--url", server.url, "--batch-size", "7",
                     "--concurrency", concurrency, "--quiet", "--metrics-json",
                     str(metrics)]) == 0
        m = json.loads(metrics.read_text())
        with CTRClient(server.url) as client:
            status = client.join()
            got = np.array(client.predict(probe_events()).p)
            shown = client.impressions([{"id": "c-1", "ts": 1e5, "features": {"a": "b"}}])
            fed = client.feedback([{"id": "c-1", "ts": 1e5 + 1}])

        async def async_calls() -> dict[str, Any]:
            async with AsyncCTRClient(server.url) as client:
                await client.impressions([{"id": "c-2", "ts": 1e5, "features": {"a": "b"}}])
                assert (await client.feedback([{"id": "c-2", "label": 0}]))["closed"] == 1
                return await client.join()

        after = anyio.run(async_calls)
        server.stop()
    finally:
        server.kill()
    values = list(became.values())
    assert m["impressions"] == len(imps) and m["joined"] == values.count("joined")
    assert m["late"] == values.count("late") == status["late"]
    assert m["rows"] == len(imps)  # every impression scored
    assert status["expired"] == len(order) and status["joined"] == values.count("joined")
    ref = Reference(settings(join_window=WINDOW), imps)
    ref.learn(order, labels)
    np.testing.assert_allclose(got, ref.predict(probe_events()), rtol=1e-12, atol=0)
    assert len(shown.p) == 1 and fed["joined"] == 1
    assert after["closed_by_label"] == 1 and after["joined"] == status["joined"] + 1


def test_a_pipelined_replay_stops_at_the_first_refused_request(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A refused request in the middle of a pipelined replay ends it with the server's
    problem and the request's place in the order; the requests before it were applied (and
    those after it may have been: they were on the wire)."""
    lines = []
    for i in range(30):
        lines.append({"type": "impression", "id": f"i{i}", "ts": 100.0 + i,
                      "features": {"a": str(i % 3)}})
        if i == 20:  # a click without an id: its request (the 2nd) is a 422
            lines.append({"type": "click", "ts": 125.0})
    stream = tmp_path / "events.jsonl"
    stream.write_text("".join(json.dumps(e) + "\n" for e in lines))
    server = start_server(tmp_path / "serve", "--join-window", "60")
    try:
        assert main(["replay", str(stream), "--url", server.url, "--quiet"]) != 0
        err = capsys.readouterr().err
        assert "422" in err and "request 2 in order" in err and "id" in err
        status = httpx.get(server.url + "/v1/join").json()
        # the first request's; the third's too when it was sent before the 422 came back
        assert status["impressions"] in (21, 30)
    finally:
        server.stop()


async def test_metrics_count_joins_expiries_and_late_clicks() -> None:
    imps = impressions(6, seed=10)
    async with running_app(settings(join_window=WINDOW)) as client:
        await post_all(client, [("imp", imps), ("click", [{"id": imps[0]["id"],
                                                           "ts": imps[0]["ts"] + 1}]),
                                ("imp", [{"id": "push", "ts": 1e6, "features": {"a": "b"}}]),
                                ("click", [{"id": imps[1]["id"], "ts": 1e6}])])
        text = (await client.get("/metrics")).text
    assert "ctr_join_clicks_joined_total 1.0" in text
    assert "ctr_join_expired_total 6.0" in text
    assert "ctr_join_late_clicks_total 1.0" in text
    assert "ctr_join_pending 1.0" in text


async def test_predict_with_log_remembers_the_events_with_an_id() -> None:
    events = [{"id": "p-1", "ts": 10.0, "features": {"a": "x"}}, {"features": {"a": "y"}},
              {"id": "p-2", "features": {"a": "z"}}]
    async with running_app(settings(join_window=WINDOW)) as client:
        plain = (await client.post("/v1/predict", json={"events": events})).json()
        logged = (await client.post("/v1/predict", json={"events": events, "log": True}))
        assert logged.status_code == 200 and logged.json() == plain
        status = (await client.get("/v1/join")).json()
        bad = await client.post("/v1/predict", json={"events": events, "log": "yes"})
    assert status["impressions"] == 2 and status["pending"] == 2
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "log"
    assert bad.json()["errors"][0]["value"] == '"yes"'


async def test_predict_reads_log_wherever_it_is_and_in_the_same_order() -> None:
    """The scan tells whether a body has keys besides "events"; only then is "log" read.
    Wherever "log" is, a logged body is remembered; "log" is judged before the events
    (its 422 first), and a body with "log": false is predicted once."""
    events = [{"id": "q-1", "ts": 10.0, "features": {"a": "x"}}, {"features": {"a": "y"}}]
    bad_events = [{"features": {"a": "x"}}, {"features": {}}]
    async with running_app(settings(join_window=WINDOW)) as client:
        plain = (await client.post("/v1/predict", json={"events": events})).json()
        before = (await client.post("/v1/predict", json={"log": True, "events": events}))
        unlogged = await client.post("/v1/predict", json={"log": False, "events": events})
        bad_log = await client.post("/v1/predict", json={"events": bad_events, "log": 1})
        bad = await client.post("/v1/predict", json={"events": bad_events, "log": False})
        other = await client.post("/v1/predict", json={"events": events, "other": [1]})
        status = (await client.get("/v1/join")).json()
        text = (await client.get("/metrics")).text
    assert before.status_code == 200 and before.json() == plain
    assert unlogged.json() == other.json() == plain
    assert status["impressions"] == 1 and status["pending"] == 1
    assert bad_log.status_code == 422 and bad_log.json()["errors"][0]["field"] == "log"
    assert bad.status_code == 422 and bad.json()["errors"][0]["index"] == 1
    # the plain, unlogged and other bodies' predictions, each counted once (a logged
    # body's are impressions, not counted here, as before)
    served = float(text.split("\nctr_predictions_total ")[1].split()[0])
    assert served == 6.0


async def test_strict_events_still_take_ts_and_type() -> None:
    events = [{"type": "impression", "id": "s-1", "ts": 5.0, "features": {"a": "x"}}]
    async with running_app(settings(strict=True)) as client:
        r = await client.post("/v1/impressions", json={"events": events})
        assert r.status_code == 200, r.text
        r = await client.post("/v1/train", json={"events": [
            {"label": 1, "features": {"a": "x"}, "ts": 5.0}]})
        assert r.status_code == 422  # strict still applies to /v1/train


async def test_idempotency_keys_on_the_join_routes() -> None:
    imps = impressions(5, seed=11)
    async with running_app(settings(join_window=WINDOW)) as client:
        first = await client.post("/v1/impressions", json={"events": imps},
                                  headers={"Idempotency-Key": "imp-batch-1"})
        again = await client.post("/v1/impressions", json={"events": imps},
                                  headers={"Idempotency-Key": "imp-batch-1"})
        assert "idempotent-replayed" not in first.headers
        assert again.headers["idempotent-replayed"] == "true"
        np.testing.assert_allclose(again.json()["p"], first.json()["p"], rtol=1e-6)
        np.testing.assert_allclose(again.json()["uncertainty"], first.json()["uncertainty"],
                                   rtol=1e-6)
        other = await client.post("/v1/impressions", json={"events": imps[:1]},
                                  headers={"Idempotency-Key": "imp-batch-1"})
        assert other.status_code == 422  # a key names one request
        click = {"events": [{"id": imps[0]["id"], "ts": imps[0]["ts"] + 1}]}
        a = await client.post("/v1/feedback", json=click, headers={"Idempotency-Key": "c1"})
        b = await client.post("/v1/feedback", json=click, headers={"Idempotency-Key": "c1"})
        assert a.json() == b.json() and a.json()["joined"] == 1
        assert b.headers["idempotent-replayed"] == "true"
        bad = await client.post("/v1/feedback", json=click, headers={"Idempotency-Key": " "})
        assert bad.status_code == 400
        status = (await client.get("/v1/join")).json()
    assert status["impressions"] == 5 and status["duplicates"] == 0
    assert status["joined"] == 1 and status["repeated_clicks"] == 0


async def test_a_clean_shutdown_checkpoints_pending_impressions(tmp_path: Path) -> None:
    """Impressions that changed no weight still make the final checkpoint due; the restart
    loads them from it (not from the log, which the checkpoint truncates)."""
    imps = impressions(8, seed=12)
    s = settings(join_window=WINDOW, data_dir=tmp_path)
    async with running_app(s) as client:
        await post_all(client, [("imp", imps)])
        before = (await client.get("/v1/join")).json()
    assert before["pending"] == 8 and before["expired"] == 0
    wal = sorted((tmp_path / "wal").iterdir())
    async with running_app(s) as client:
        after = (await client.get("/v1/join")).json()
        r = await client.post("/v1/feedback", json={"events": [
            {"id": imps[0]["id"], "ts": imps[0]["ts"] + 1}]})
        assert r.json()["joined"] == 1
    assert {k: v for k, v in after.items() if k != "arrival_clock"} == \
        {k: v for k, v in before.items() if k != "arrival_clock"}
    assert all(p.stat().st_size < 200 for p in wal if p.is_file())  # the log was truncated


async def test_the_join_routes_need_the_api_key_even_with_predict_open() -> None:
    from pydantic import SecretStr

    s = settings(api_keys=SecretStr("k"), predict_open=True)
    events = [{"id": "o-1", "features": {"a": "x"}}]
    async with running_app(s) as client:
        for path in ("/v1/impressions", "/v1/feedback"):
            r = await client.post(path, json={"events": events})
            assert r.status_code == 401, path
        assert (await client.get("/v1/join")).status_code == 401
        assert (await client.post("/v1/predict", json={"events": events})).status_code == 200
        r = await client.post("/v1/predict", json={"events": events, "log": True})
        assert r.status_code == 403
        r = await client.post("/v1/impressions", json={"events": events},
                              headers={"authorization": "Bearer k"})
        assert r.status_code == 200


async def test_malformed_bodies_are_400_and_bad_shapes_422() -> None:
    async with running_app(settings()) as client:
        for path in ("/v1/impressions", "/v1/feedback"):
            r = await client.post(path, content=b'{"events": [{"id": "a",',
                                  headers={"content-type": "application/json"})
            assert r.status_code == 400, (path, r.text)
            assert r.headers["content-type"] == "application/problem+json"
        r = await client.post("/v1/feedback", json={"events": 5})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "events"


async def test_an_escaped_ts_key_is_still_read() -> None:
    raw = b'{"events": [{"id": "e-1", "t\\u0073": 50.0, "features": {"a": "x"}}]}'
    async with running_app(settings(join_window=WINDOW)) as client:
        r = await client.post("/v1/impressions", content=raw,
                              headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        status = (await client.get("/v1/join")).json()
    assert status["watermark"] == 50.0


async def test_a_redis_state_store_answers_the_join_routes(redis_shards: list[Any]
                                                            ) -> None:
    """With a Redis store the join routes answer (tests/test_join_redis.py joins across
    worker processes): a click for an id this worker holds joins here; one for an id it
    does not hold is forwarded to the others (not ``unknown``). Memory with prediction
    workers still refuses the join's flags."""
    state = ",".join(s.url for s in redis_shards)
    async with running_app(settings(state=state, join_window=WINDOW)) as client:
        r = await client.post("/v1/impressions", json={"events": [
            {"id": "r-1", "ts": 10.0, "features": {"a": "x"}}]})
        assert r.status_code == 200, r.text
        r = await client.post("/v1/feedback", json={"events": [
            {"id": "r-1", "ts": 20.0}, {"id": "elsewhere", "ts": 20.0}]})
        assert r.status_code == 200, r.text
        assert (r.json()["joined"], r.json()["forwarded"], r.json()["unknown"]) == (1, 1, 0)
        assert (await client.post("/v1/predict", json={"events": [
            {"id": "r-2", "features": {"a": "x"}}], "log": True})).status_code == 200
        status = (await client.get("/v1/join")).json()
        assert status["pending"] == 2 and status["forwarded"] == 1 and status["worker"]
        assert status["cluster"]["workers"] <= 1
    with pytest.raises(ValueError, match="join"):
        settings(workers=2, join_window=WINDOW)


async def test_two_workers_join_on_a_redis_cluster(redis_cluster: Any) -> None:
    """Two workers (in process, no data directory) on a Redis Cluster: the click stream,
    the shared watermark and the status sums live under shard 0's hash-tagged prefix, so
    the join works there too: a click through B joins A's impression."""
    flags = {"state": redis_cluster.url, "model_name": "join-cluster", "join_window": WINDOW}
    async with running_app(settings(**flags)) as a, running_app(settings(**flags)) as b:
        r = await a.post("/v1/impressions", json={"events": [
            {"id": f"c-{i}", "ts": 10.0 + i, "features": {"a": "x"}} for i in range(3)]})
        assert r.status_code == 200, r.text
        r = await b.post("/v1/feedback", json={"events": [{"id": "c-1", "ts": 20.0}]})
        assert r.status_code == 200 and r.json()["forwarded"] == 1, r.text
        r = await b.post("/v1/feedback", json={"events": [{"id": "gone", "ts": 500.0}]})
        deadline = anyio.current_time() + 20
        while True:
            status = (await a.get("/v1/join")).json()
            if status["expired"] == 3:
                break
            assert anyio.current_time() < deadline, status
            await anyio.sleep(0.05)
        assert (status["joined"], status["learned_positives"], status["marks_matched"]) \
            == (1, 1, 1)


async def test_a_ts_far_in_the_future_is_refused_and_closes_nothing() -> None:
    """A ``ts`` more than a day ahead of the service's clock would move the watermark past
    every pending window: it is a 422 naming the field and the value, and nothing moves."""
    now = time.time()
    far = round(now + MAX_AHEAD_SECONDS + 3600)
    pending = [{"id": f"p{i}", "ts": now - 10, "features": {"a": "x"}} for i in range(3)]
    async with running_app(settings(join_window=WINDOW)) as client:
        await post_all(client, [("imp", pending)])
        before = (await client.get("/v1/join")).json()
        r = await client.post("/v1/impressions", json={"events": [
            {"id": "ok", "ts": now, "features": {"a": "y"}},
            {"id": "future", "ts": far, "features": {"a": "y"}}]})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        err = r.json()["errors"][0]
        assert (err["index"], err["field"], float(err["value"])) == (1, "ts", far)
        assert "ahead of the service's clock" in err["detail"]
        r = await client.post("/v1/feedback", json={"events": [{"id": "p0", "ts": far}]})
        assert r.status_code == 422, r.text
        err = r.json()["errors"][0]
        assert (err["index"], err["field"], float(err["value"])) == (0, "ts", far)
        r = await client.post("/v1/predict", json={"log": True, "events": [
            {"id": "logged", "ts": far, "features": {"a": "y"}}]})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "ts"
        after = (await client.get("/v1/join")).json()
        assert after == before and after["pending"] == 3 and after["expired"] == 0
        # within the day ahead: accepted (clocks a little off, a producer's time zone)
        soon = now + MAX_AHEAD_SECONDS - 3600
        r = await client.post("/v1/feedback", json={"events": [{"id": "p0", "ts": soon}]})
        assert r.status_code == 200 and r.json()["late"] == 1  # it closed p0's window


def test_the_future_check_is_for_live_requests_only() -> None:
    """The log is learned again as it was accepted: a replayed request (``record`` None,
    its logged arrival time) is not checked against the clock again."""
    raw = body([{"id": "x", "ts": 1e9, "features": {"a": "x"}}])
    j = joining(LearnerOptions(alpha=0.2), 1.0)
    with pytest.raises(Problem) as refused:
        j.impressions(raw, b"a live request", 1e9 - 2 * 86400)
    assert refused.value.status == 422 and j.state.counts["impressions"] == 0
    j.impressions(raw, None, 1e9 - 2 * 86400)
    j.feedback(body([{"id": "x", "ts": 1e9 + 1}]), None, 0.0)
    assert j.state.counts["impressions"] == 1 and j.state.counts["joined"] == 1
    with pytest.raises(Problem):
        j.feedback(body([{"id": "x", "ts": 1e9 + 2}]), b"a live request", 0.0)


WARM_CHECK = """
import anyio, json, sys
sys.path.insert(0, "tests")
from service_helpers import running_app
from service.settings import Settings
from ftrl_core.blake2b import _hash_ranges
from ftrl_core.readers.eventtimes import _times
from ftrl_core.spans import _gather

async def main():
    async with running_app(Settings(_env_file=None, join_window=60.0)) as client:
        kernels = (_hash_ranges, _times, _gather)  # the compiled kernels behind them
        after_warm_up = [len(k.signatures) for k in kernels]
        events = [{"id": f"i{n}", "ts": n, "features": {"a": str(n)}} for n in range(5)]
        r = await client.post("/v1/impressions", json={"events": events})
        assert r.status_code == 200, r.text
        r = await client.post("/v1/feedback", json={"events": [{"id": "i1", "ts": 9},
                                                               {"id": "i2", "label": 0}]})
        assert r.status_code == 200, r.text
        print(json.dumps([after_warm_up, [len(k.signatures) for k in kernels]]))

anyio.run(main)
"""


def test_warm_up_compiles_the_joins_kernels() -> None:
    """Readiness waits for every compiled pass the join's requests use (in a fresh process,
    where nothing else compiled them first): the first impressions and clicks add no
    compiled version of the id hash, the ``ts`` reader or the pending rows' gather (they
    used to compile the hash for seconds inside the first request)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", WARM_CHECK], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    warmed, served = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(warmed) and served == warmed

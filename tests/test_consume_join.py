"""``ctr consume --impressions-stream I --clicks-stream C`` against a real redis-server: the
two streams, merged by ``ts``, joined as the reference of tests/test_join.py joins the same
events in that order; bad entries are dead letters and the rest goes on; a consumer
SIGKILLed mid-stream and restarted (under another name) applies every entry exactly once;
entries are acknowledged only once the log holds them."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from redis_servers import RedisServer, start_redis
from test_join import WINDOW, Reference, body, closing_order, impressions, probe_events

from ftrl_core.model import Model
from ftrl_core.readers.jsonl import JsonlFormat, parse_event_array
from service.cli import main
from service.redis_streams import JoinOptions, consume_joined
from service.settings import Settings

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent
IMPS, CLICKS, GROUP = "imps", "clicks", "joiner"

Entry = dict[str, Any] | bytes | str | None  # None: an entry without an ``event`` field


@pytest.fixture
def source(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "source")
    yield server
    server.stop()


def streams(n: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n`` impressions (not quite in ``ts`` order) and their clicks (about 30%, delays
    within and past the window, in ``ts`` order per chunk) with one unknown click per
    chunk: what two producers would write."""
    rng = random.Random(seed)
    imps = impressions(n, seed)
    clicks: list[dict[str, Any]] = []
    for start in range(0, n, 20):
        chunk = imps[start:start + 20]
        cs = [{"id": e["id"], "ts": e["ts"] + rng.choice([5.0, 60.0, 150.0])}
              for e in chunk if rng.random() < 0.3]
        cs.sort(key=lambda c: c["ts"])
        clicks += [*cs, {"id": f"never-{start}", "ts": cs[-1]["ts"] if cs else 1000.0}]
    return imps, clicks


def merged(imps: list[Entry], clicks: list[Entry]) -> list[tuple[str, dict[str, Any]]]:
    """The consumer's order written plainly: a two-way merge by ``ts`` of the streams'
    JSON-object events (no ``ts`` first; a tie takes the impression), each stream's order
    kept."""
    def events(items: list[Entry]) -> list[dict[str, Any]]:
        out = []
        for e in items:
            if isinstance(e, dict):
                out.append(e)
            elif isinstance(e, bytes | str):
                try:
                    value = json.loads(e)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    out.append(value)
        return out

    def ts(e: dict[str, Any]) -> float:
        t = e.get("ts")
        ok = isinstance(t, int | float) and not isinstance(t, bool)
        return float(t) if ok else -np.inf  # type: ignore[arg-type]

    a, b = events(imps), events(clicks)
    i = j = 0
    out: list[tuple[str, dict[str, Any]]] = []
    while i < len(a) or j < len(b):
        if j == len(b) or (i < len(a) and ts(b[j]) >= ts(a[i]) and ts(b[j]) != -np.inf):
            out.append(("imp", a[i]))
            i += 1
        else:
            out.append(("click", b[j]))
            j += 1
    return out


def xadd(client: redis.Redis, stream: str, items: list[Entry]) -> None:
    pipe = client.pipeline(transaction=False)
    for item in items:
        if item is None:
            pipe.xadd(stream, {"other": "x"})
        else:
            pipe.xadd(stream, {"event": item if isinstance(item, bytes | str)
                               else json.dumps(item)})
    pipe.execute()


def flags(source: RedisServer, data: Path, *more: str) -> list[str]:
    return ["consume", "--source", source.url, "--impressions-stream", IMPS,
            "--clicks-stream", CLICKS, "--group", GROUP, "--data-dir", str(data),
            "--join-window", str(WINDOW), "--alpha", "0.2", "--block-ms", "50",
            "--snapshot-every", "0", *more]


def model_p(path: Path) -> np.ndarray:
    model = Model.load(path)
    rows = [{"features": e["features"], "label": 0.0} for e in probe_events()]
    result = parse_event_array(body(rows), JsonlFormat(model.registry, model.options),
                               require_label=True)
    return model.predict(result.batch)[0]


def expected_p(imps: list[dict[str, Any]], order: list[tuple[str, dict[str, Any]]],
               good: set[int] | None = None) -> np.ndarray:
    """The reference model's predictions after the join of ``order`` (single events)."""
    requests = [(k, [e]) for k, e in order]
    closed, labels, _ = closing_order(requests, WINDOW)
    ref = Reference(Settings(_env_file=None, alpha=0.2, join_window=WINDOW),  # type: ignore[call-arg]
                    imps)
    ref.learn(closed, labels)
    return ref.predict(probe_events())


def pending(client: redis.Redis, stream: str) -> int:
    return int(client.xpending(stream, GROUP)["pending"])


def test_two_streams_join_as_the_reference_and_bad_entries_are_dead_letters(
        source: RedisServer, tmp_path: Path) -> None:
    imps, clicks = streams(200, seed=3)
    features = imps[0]["features"]
    bad_imps: list[Entry] = [
        None,  # no event field
        b'{"id": "broken", "features": ',  # not JSON
        {"ts": imps[40]["ts"], "features": features},  # no id: the join refuses it
        {"id": "ts-bad", "ts": "soon", "features": features},  # ts not a number
    ]
    bad_clicks: list[Entry] = [b"[1, 2]", {"id": imps[3]["id"], "ts": imps[3]["ts"] + 1,
                                           "label": 5}]
    imp_entries: list[Entry] = [*imps[:30], bad_imps[0], bad_imps[1], *imps[30:60],
                                bad_imps[2], *imps[60:61], bad_imps[3], *imps[61:]]
    click_entries: list[Entry] = [*clicks[:5], bad_clicks[0], bad_clicks[1], *clicks[5:]]
    client = source.client()
    xadd(client, IMPS, imp_entries)
    xadd(client, CLICKS, click_entries)
    m_path, model = tmp_path / "m.json", tmp_path / "model.ctr"
    assert main(flags(source, tmp_path / "data", "--batch-size", "7", "--quiet",
                      "--exit-when-idle", "--metrics-json", str(m_path), "--model-out",
                      str(model))) == 0
    m = json.loads(m_path.read_text())
    refused = {json.dumps(e) for e in (bad_imps[2], bad_imps[3], bad_clicks[1])}
    order = [(k, e) for k, e in merged(imp_entries, click_entries)
             if json.dumps(e) not in refused]
    assert m["impressions"] == len(imps) and m["clicks"] == len(clicks)
    assert m["dead_letters"] == 6 and m["duplicates"] == 0
    _, _, became = closing_order([(k, [e]) for k, e in order], WINDOW)
    assert m["join"]["joined"] == list(became.values()).count("joined") > 0
    assert m["join"]["late"] == list(became.values()).count("late") > 0
    assert m["join"]["impressions"] == len(imps) and m["join"]["duplicates"] == 0
    np.testing.assert_allclose(model_p(model), expected_p(imps, order), rtol=1e-12, atol=0)
    assert pending(client, IMPS) == pending(client, CLICKS) == 0
    dead = client.xrange(f"{IMPS}:dead")
    reasons = [d[b"reason"].decode() for _, d in dead]
    assert len(dead) == 4 and "no 'event' field" in reasons[0]
    assert "not one JSON object" in reasons[1]
    assert "id" in reasons[2] and "ts" in reasons[3] and "soon" in reasons[3]
    dead_clicks = client.xrange(f"{CLICKS}:dead")
    assert len(dead_clicks) == 2 and b"label" in dead_clicks[1][1][b"reason"]
    assert all(d[b"source_id"] for _, d in dead + dead_clicks)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_mid_stream_then_restart_applies_each_entry_once(
        source: RedisServer, tmp_path: Path, sig: signal.Signals) -> None:
    """SIGKILL (or SIGTERM: the round in hand finished, acknowledged, a checkpoint written)
    mid-stream; a restart under another name takes the pending entries over, acknowledges
    the ones the log holds and applies the rest: the model is the reference's, no
    impression is counted twice."""
    imps, clicks = streams(3000, seed=5)
    client = source.client()
    xadd(client, IMPS, list(imps))
    xadd(client, CLICKS, list(clicks))
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    cmd = [sys.executable, "-m", "service.cli", *flags(source, data, "--consumer", "a",
                                                        "--batch-size", "5", "--quiet")]
    log = tmp_path / "a.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while int(client.hget(f"{IMPS}:stats:{GROUP}", "impressions") or 0) < 600:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the consumer never got going"
            time.sleep(0.005)
        proc.send_signal(sig)
        if sig == signal.SIGTERM:
            assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        proc.kill()
        proc.wait()
    held = pending(client, IMPS) + pending(client, CLICKS)
    acked = int(client.hget(f"{IMPS}:stats:{GROUP}", "impressions") or 0)
    assert acked < len(imps)
    model = tmp_path / "model.ctr"
    settings = Settings(_env_file=None, alpha=0.2, join_window=WINDOW,  # type: ignore[call-arg]
                        data_dir=data, snapshot_every=0)
    options = JoinOptions(IMPS, CLICKS, GROUP, "b", batch_size=50, block_ms=50,
                          exit_when_idle=True)
    m = asyncio.run(consume_joined(settings, options, source.url, model_out=model))
    assert m["claimed"] == held
    stats = m["group"]
    # applied before the kill and not acknowledged: found in the log, acknowledged as such
    assert stats["impressions"] + stats["clicks"] + stats.get("duplicates", 0) \
        == len(imps) + len(clicks)
    assert stats.get("duplicates", 0) == m["duplicates"] <= held
    assert m["join"]["impressions"] == len(imps) and m["join"]["duplicates"] == 0
    assert m["join"]["repeated_clicks"] == 0
    assert pending(client, IMPS) == pending(client, CLICKS) == 0
    order = merged(list(imps), list(clicks))
    np.testing.assert_allclose(model_p(model), expected_p(imps, order), rtol=1e-12, atol=0)


def test_crash_before_the_acknowledgement_then_more_entries(source: RedisServer,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """A consumer that stops after applying a round and before acknowledging it leaves
    those entries pending; the next run finds them in the log (marks from the checkpoint
    written at close), acknowledges them without applying them, and goes on with entries
    added since. The model is the reference's over all of them."""
    from service.redis_streams.joined import JoinConsumer

    imps, clicks = streams(400, seed=11)
    half_i, half_c = len(imps) // 2, len(clicks) // 2
    client = source.client()
    xadd(client, IMPS, list(imps[:half_i]))
    xadd(client, CLICKS, list(clicks[:half_c]))
    settings = Settings(_env_file=None, alpha=0.2, join_window=WINDOW,  # type: ignore[call-arg]
                        data_dir=tmp_path / "data", snapshot_every=0)
    options = JoinOptions(IMPS, CLICKS, GROUP, "a", batch_size=40, block_ms=50,
                          exit_when_idle=True)
    real = JoinConsumer._acknowledge
    calls = 0

    async def crash_on_third(self: JoinConsumer) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("killed before the acknowledgement")
        await real(self)

    monkeypatch.setattr(JoinConsumer, "_acknowledge", crash_on_third)
    with pytest.raises(RuntimeError):
        asyncio.run(consume_joined(settings, options, source.url))
    monkeypatch.setattr(JoinConsumer, "_acknowledge", real)
    held = pending(client, IMPS) + pending(client, CLICKS)
    assert held > 0
    xadd(client, IMPS, list(imps[half_i:]))
    xadd(client, CLICKS, list(clicks[half_c:]))
    model = tmp_path / "model.ctr"
    m = asyncio.run(consume_joined(settings, options, source.url, model_out=model))
    # pending: the round applied and not acknowledged (found in the log), and entries read
    # into the merge's buffers and not applied yet (applied now)
    assert 0 < m["duplicates"] < held and m["dead_letters"] == 0
    assert m["join"]["impressions"] == len(imps) and m["join"]["duplicates"] == 0
    assert pending(client, IMPS) == pending(client, CLICKS) == 0
    # the first run stopped long before its halves ran out, so what it applied is a prefix
    # of the merge of the whole streams, and the merge of what was left is the rest of it
    order = merged(list(imps), list(clicks))
    np.testing.assert_allclose(model_p(model), expected_p(imps, order), rtol=1e-12, atol=0)


def test_the_command_line_refuses_what_cannot_join(source: RedisServer, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]
                                                   ) -> None:
    base = ["consume", "--source", source.url, "--group", GROUP, "--quiet"]
    cases = [
        (["--impressions-stream", IMPS], "both --impressions-stream and --clicks-stream"),
        (["--impressions-stream", IMPS, "--clicks-stream", CLICKS, "--stream", "s",
          "--data-dir", str(tmp_path)], "not both"),
        (["--impressions-stream", IMPS, "--clicks-stream", CLICKS], "--data-dir"),
        (["--impressions-stream", IMPS, "--clicks-stream", IMPS, "--data-dir",
          str(tmp_path)], "must differ"),
        (["--impressions-stream", IMPS, "--clicks-stream", CLICKS, "--data-dir",
          str(tmp_path), "--state", source.url], "join"),
        ([], "--stream is required"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) != 0, extra
        assert message in capsys.readouterr().err, extra


def test_stream_marks_are_not_idempotency_keys() -> None:
    """A client cannot send a stream mark as its Idempotency-Key (400); a mark moves only
    forwards and survives the checkpoint arrays."""
    from service.errors import Problem
    from service.learner.idempotency import IdempotencyKeys, check_key, mark_key

    with pytest.raises(Problem) as caught:
        check_key(mark_key("0badf00d", "1-0"))
    assert caught.value.status == 400
    keys = IdempotencyKeys(600.0)
    for entry in ("5-1", "12-0", "7-3"):
        keys.record(mark_key("a", entry), 0, time.time(), 0, 0, np.empty(0))
    keys.record(mark_key("b", "3-0"), 0, 0.0, 0, 0, np.empty(0))  # old: kept all the same
    assert keys.marks == {"a": (12, 0), "b": (3, 0)} and len(keys) == 0
    again = IdempotencyKeys(600.0)
    again.load(keys.state())
    assert again.marks == keys.marks


def test_max_events_then_the_rest(source: RedisServer, tmp_path: Path) -> None:
    """A run stopped by ``--max-events`` leaves what it could not merge yet pending; the
    next run goes on in the same order: the model is the reference's."""
    imps, clicks = streams(300, seed=13)
    client = source.client()
    xadd(client, IMPS, list(imps))
    xadd(client, CLICKS, list(clicks))
    data, model = tmp_path / "data", tmp_path / "model.ctr"
    first = tmp_path / "first.json"
    assert main(flags(source, data, "--batch-size", "10", "--quiet", "--max-events", "120",
                      "--metrics-json", str(first))) == 0
    m = json.loads(first.read_text())
    assert 120 <= m["read"] < 140 and m["impressions"] + m["clicks"] < m["read"]
    assert main(flags(source, data, "--batch-size", "10", "--quiet", "--exit-when-idle",
                      "--model-out", str(model))) == 0
    assert pending(client, IMPS) == pending(client, CLICKS) == 0
    order = merged(list(imps), list(clicks))
    np.testing.assert_allclose(model_p(model), expected_p(imps, order), rtol=1e-12, atol=0)

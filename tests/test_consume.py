"""``ctr consume`` against real redis-server processes: one consumer learns what ``ctr train``
learns from the same events in order; entries are acknowledged only once flushed; malformed
entries become dead letters; duplicate ids are skipped; a consumer that dies (SIGKILL, or a
crash before or after its flush) loses nothing and has nothing learned twice."""

from __future__ import annotations

import asyncio
import json
import os
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
from datagen import criteo_lines
from redis_servers import RedisServer, start_redis

from ftrl_core.model import Model
from ftrl_core.readers import open_reader
from service.cli import main
from service.redis_streams import ConsumerError, ConsumerOptions, StreamConsumer, consume
from service.redis_streams.seen import SeenWindow
from service.settings import Settings
from service.stores.redis import RedisState, snapshot

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent
STREAM, GROUP = "events", "trainers"
#: small timeouts: claimed entries come back within a second
FAST = ("--claim-idle-ms", "300", "--dedupe-window", "30", "--block-ms", "50")


@pytest.fixture
def source(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "source")
    yield server
    server.stop()


def events(n: int, seed: int = 0, start: int = 0) -> list[dict[str, Any]]:
    """Events with tokens, a missing value, a list and a number, each with an ``id``."""
    out = []
    for i, ln in enumerate(criteo_lines(n, seed=seed, missing=0.15)):
        cols = ln.split("\t")
        feats: dict[str, Any] = {"site": cols[14], "app": cols[15] or None,
                                 "tags": [c for c in cols[16:19] if c], "price": (i % 7) / 3,
                                 "I2": cols[2]}
        out.append({"label": int(cols[0]), "features": feats, "id": f"ev-{start + i}"})
    return out


def xadd(client: redis.Redis, items: list[dict[str, Any] | bytes | str]) -> list[bytes]:
    pipe = client.pipeline(transaction=False)
    for item in items:
        event = item if isinstance(item, bytes | str) else json.dumps(item)
        pipe.xadd(STREAM, {"event": event})
    return list(pipe.execute())


def run(source: RedisServer, state: str, *flags: str, metrics: Path | None = None) -> int:
    args = ["consume", "--source", source.url, "--stream", STREAM, "--group", GROUP,
            "--state", state, "--quiet", "--exit-when-idle", *FAST, *flags]
    if metrics is not None:
        args += ["--metrics-json", str(metrics)]
    return main(args)


def model_rows(state: str, name: str = "default") -> int:
    """The model's step counter as the state store holds it (shard 0)."""
    client = redis.Redis.from_url(state.split(",")[0])
    raw = client.hget(f"ctr:{name}:t", "1")
    return 0 if raw is None else int(np.frombuffer(raw, dtype="<f8")[0])  # type: ignore[arg-type]


def pending(client: redis.Redis, consumer: str | None = None) -> int:
    if consumer is None:
        return int(client.xpending(STREAM, GROUP)["pending"])
    return len(client.xpending_range(STREAM, GROUP, "-", "+", 100_000, consumername=consumer))


def predict(model: Model, path: Path) -> np.ndarray:
    reader = open_reader(path, "jsonl", model.registry, model.options)
    return np.concatenate([model.predict(b)[0] for b in reader])


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in items))
    return path


def test_one_consumer_learns_what_ctr_train_learns(source: RedisServer, tmp_path: Path,
                                                   redis_shards: list[RedisServer]) -> None:
    items = events(1500, seed=3)
    xadd(source.client(), items)  # type: ignore[arg-type]
    state = ",".join(s.url for s in redis_shards)
    out = tmp_path / "consume.json"
    # no claiming here (one consumer): a claim timeout longer than a slow machine's batch
    # (under a loaded CI run with 300 ms, the consumer claimed back 200 entries of its own
    # window and skipped them as held, but counted them as read: 1,700; no longer counted)
    assert run(source, state, "--alpha", "0.2", "--batch-size", "200",
               "--sync-every-events", "450", "--claim-idle-ms", "10000", metrics=out) == 0
    data = write_jsonl(tmp_path / "events.jsonl", items)
    train = tmp_path / "train.json"
    assert main(["train", str(data), "--format", "jsonl", "--alpha", "0.2", "--quiet",
                 "--metrics-json", str(train), "--model-out", str(tmp_path / "m.ctr")]) == 0
    got, want = json.loads(out.read_text()), json.loads(train.read_text())
    assert got["learned"] == got["model_rows"] == 1500 and got["read"] == 1500
    assert got["duplicates"] == got["dead_letters"] == got["deferred"] == 0
    assert got["progressive_logloss"] == pytest.approx(want["logloss"], abs=1e-12, rel=0)
    assert got["group"]["learned"] == 1500
    assert got["group"]["logloss"] == pytest.approx(want["logloss"], abs=1e-12, rel=0)
    assert pending(source.client()) == 0
    stored = snapshot(RedisState(state, "default"))
    memory = Model.load(tmp_path / "m.ctr")
    assert stored.rows == memory.rows == 1500
    probe = write_jsonl(tmp_path / "probe.jsonl", events(300, seed=11))
    np.testing.assert_allclose(predict(stored, probe), predict(memory, probe), rtol=0,
                               atol=1e-12)


def learned_as_train_admits(tmp_path: Path, items: list[dict[str, Any]], metrics: Path
                            ) -> dict[str, Any]:
    """A consumer's ``--metrics-json`` (1,500 events, ``--admit bloom:2``, nothing idle long
    enough to evict) against ``ctr train --admit bloom:2`` on the same events in order: the
    same progressive logloss, admitted and refused; returns ``ctr train``'s metrics."""
    data = write_jsonl(tmp_path / "events.jsonl", items)
    train = tmp_path / "train.json"
    assert main(["train", str(data), "--format", "jsonl", "--alpha", "0.2", "--quiet",
                 "--admit", "bloom:2", "--metrics-json", str(train)]) == 0
    got, want = json.loads(metrics.read_text()), json.loads(train.read_text())
    assert got["learned"] == 1500
    assert got["progressive_logloss"] == pytest.approx(want["logloss"], abs=1e-12, rel=0)
    assert (got["admitted"], got["refused"]) == (want["admitted"], want["refused"])
    assert got["evicted"] == 0
    return want  # type: ignore[no-any-return]


def test_the_bounded_memory_flags_and_variables(source: RedisServer, tmp_path: Path,
                                               redis_shards: list[RedisServer],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``ctr consume --admit bloom:2`` with ``CTR_EVICT_IDLE``: one consumer learns what
    ``ctr train --admit bloom:2`` learns; the stored model keeps both bounds; Redis holds
    the admitted coordinates only."""
    items = events(1500, seed=5)
    xadd(source.client(), items)  # type: ignore[arg-type]
    state = ",".join(s.url for s in redis_shards)
    monkeypatch.setenv("CTR_EVICT_IDLE", "100000")
    out = tmp_path / "consume.json"
    assert run(source, state, "--alpha", "0.2", "--admit", "bloom:2", "--batch-size", "200",
               "--sync-every-events", "450", "--claim-idle-ms", "10000", metrics=out) == 0
    monkeypatch.delenv("CTR_EVICT_IDLE")
    want = learned_as_train_admits(tmp_path, items, out)
    held = sum(s.client().hlen(k) for s in redis_shards
               for k in s.client().scan_iter(match="ctr:default:b:*"))
    assert held == want["live_coordinates"]
    config = json.loads(redis_shards[0].client().get("ctr:default:config"))["config"]
    assert (config["admit"], config["evict_idle"]) == ("bloom:2", "100000")


def test_dead_letters_name_the_field_and_value(source: RedisServer) -> None:
    good = events(5, seed=4)
    bad: list[dict[str, Any] | bytes | str] = [
        '{"label": 1, "features": {"site": "a"',  # malformed JSON
        '{"label": 1, "features": {"price": NaN}, "id": "nan"}',
        '{"label": 0, "features": {"price": -Infinity}}',
        json.dumps({"label": 2, "features": {"site": "a"}}),
        json.dumps({"label": 1, "features": {"site": "a"}, "colour": "red"}),  # --strict
        json.dumps({"features": {"site": "a"}}),  # no label
        "",
        '{"label": 1, "features": {"a": "x"}, "z": ' + "[" * 3000 + "]" * 3000 + "}",
    ]
    client = source.client()
    ids = xadd(client, [good[0], *bad, *good[1:]])  # type: ignore[list-item]
    client.xadd(STREAM, {"payload": "no event field"})
    assert run(source, source.url, "--strict") == 0
    assert model_rows(source.url) == 5
    letters = client.xrange(f"{STREAM}:dead")
    reasons = [f[b"reason"].decode() for _, f in letters]
    assert len(letters) == 9 and pending(client) == 0
    assert [f[b"source_id"] for _, f in letters[:8]] == ids[1:9]
    assert "malformed JSON at column 38" in reasons[0], reasons
    assert reasons[1] == ("features.price: value is not a finite number (NaN and Infinity "
                          "are not JSON numbers) (got NaN)")
    assert reasons[2].startswith("features.price: ") and reasons[2].endswith("(got -Infinity)")
    assert reasons[3] == "label: label is not 0 or 1 (got 2)"
    assert reasons[4] == 'colour: unknown key (got "red")'
    assert reasons[5].startswith("label: label is missing")
    assert reasons[6] == "event: the event is empty"
    # (--strict: "z" is an unknown key, and the event is then read as a whole)
    assert reasons[7] == "event: malformed JSON at column 1066: nested deeper than 1024 levels"
    assert "no 'event' field" in reasons[8]
    assert letters[3][1][b"event"] == bad[3].encode()  # type: ignore[union-attr]
    stats = client.hgetall(f"{STREAM}:stats:{GROUP}")
    assert stats[b"dead_letters"] == b"9" and stats[b"learned"] == b"5"


def test_duplicate_ids_are_skipped(source: RedisServer) -> None:
    items = events(400, seed=5)
    client = source.client()
    # twins in one batch, a repeat in a later batch, and the same id under another label
    again = [items[3], items[3], items[10], {**items[20], "label": 1 - items[20]["label"]}]
    xadd(client, [*items[:300], *again, *items[300:]])  # type: ignore[list-item]
    assert run(source, source.url, "--batch-size", "100") == 0
    assert model_rows(source.url) == 400
    # replayed after the first run ended: found in the window, skipped
    xadd(client, items[50:150])  # type: ignore[arg-type]
    assert run(source, source.url, "--batch-size", "100") == 0
    assert model_rows(source.url) == 400
    stats = client.hgetall(f"{STREAM}:stats:{GROUP}")
    assert stats[b"learned"] == b"400" and stats[b"duplicates"] == b"104"
    assert pending(client) == 0


def _options(consumer: str, **kw: Any) -> ConsumerOptions:
    return ConsumerOptions(STREAM, GROUP, consumer, block_ms=50, claim_idle_ms=300,
                           dedupe_window=30.0, exit_when_idle=True, **kw)


def _settings(state: str) -> Settings:
    return Settings(_env_file=None, state=state, alpha=0.2)  # type: ignore[call-arg]


class Crash(Exception):
    pass


@pytest.mark.parametrize("where", ["before_flush", "after_flush"])
def test_crash_around_the_flush_loses_nothing_and_learns_nothing_twice(
        source: RedisServer, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A consumer dies with a window learned: before its flush (a claimer learns the events:
    their records name a flush that never landed) or after it, before the XACK (a claimer
    skips them: their flush landed)."""
    client = source.client()
    xadd(client, events(700, seed=6))  # type: ignore[arg-type]
    name = "_sync_window" if where == "before_flush" else "_ack_window"
    original = getattr(StreamConsumer, name)
    calls = {"n": 0}

    def crash_on_third(self: StreamConsumer) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash(where)
        return original(self)

    monkeypatch.setattr(StreamConsumer, name, crash_on_third)
    with pytest.raises(Crash):
        asyncio.run(consume(_settings(source.url), _options("a", batch_size=100), source.url))
    monkeypatch.setattr(StreamConsumer, name, original)
    assert pending(client, "a") == 100  # the third batch: learned, never acknowledged
    flushed = model_rows(source.url)
    assert flushed == (200 if where == "before_flush" else 300)
    result = asyncio.run(consume(_settings(source.url), _options("b"), source.url))
    assert model_rows(source.url) == 700 and pending(client) == 0
    assert result["claimed"] >= 100
    assert result["learned"] == 700 - flushed
    assert result["duplicates"] == (0 if where == "before_flush" else 100)


def test_refused_flush_acknowledges_nothing(source: RedisServer) -> None:
    """The state store goes away: the consumer stops, every entry it read stays pending."""
    state = start_redis(source.log.parent / "state")
    client = source.client()
    xadd(client, events(300, seed=7))  # type: ignore[arg-type]

    def stop_state(consumer: StreamConsumer) -> None:
        state.stop()

    try:
        with pytest.raises(ConsumerError, match=r"cannot be reached|flush failed"):
            asyncio.run(consume(_settings(state.url), _options("a", batch_size=100),
                                source.url, on_flush=stop_state))
    finally:
        state.stop()
    assert pending(client, "a") == 100
    stats = client.hgetall(f"{STREAM}:stats:{GROUP}")
    assert stats[b"learned"] == b"100"


def test_event_held_by_a_live_consumer_waits_then_is_taken_over(
        source: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record whose flush has not landed and is younger than the claim timeout belongs to
    a consumer presumed alive: the entry is left pending, comes back through XAUTOCLAIM, and
    once the record is stale (its consumer never flushed) it is taken over and learned."""
    client = source.client()
    items = events(3, seed=8)
    xadd(client, items)  # type: ignore[arg-type]
    original = StreamConsumer.ensure_group

    def record_first(self: StreamConsumer) -> None:  # just before the first read
        original(self)
        seen = SeenWindow(client, f"{STREAM}:seen:{GROUP}:", 30.0)
        seen.check([f"e:{items[1]['id']}".encode()], "deadbeef0000:1")  # a flush never sent

    monkeypatch.setattr(StreamConsumer, "ensure_group", record_first)
    options = ConsumerOptions(STREAM, GROUP, "a", block_ms=50, claim_idle_ms=2000,
                              dedupe_window=30.0, exit_when_idle=True)
    result = asyncio.run(consume(_settings(source.url), options, source.url))
    assert result["deferred"] >= 1 and result["claimed"] >= 1
    assert model_rows(source.url) == 3 and result["learned"] == 3 and pending(client) == 0


def test_sigkill_mid_stream(source: RedisServer, tmp_path: Path) -> None:
    """A consumer process killed with SIGKILL in the middle of the stream: a second consumer
    claims its pending entries; every event is learned exactly once."""
    n = 4000
    client = source.client()
    xadd(client, events(n, seed=9))  # type: ignore[arg-type]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    cmd = [sys.executable, "-m", "service.cli", "consume", "--source", source.url,
           "--stream", STREAM, "--group", GROUP, "--consumer", "a", "--quiet",
           "--batch-size", "20", "--alpha", "0.2", *FAST]
    log = tmp_path / "a.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while int(client.hget(f"{STREAM}:stats:{GROUP}", "learned") or 0) < n // 5:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the consumer never got going"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    held = pending(client, "a")
    result = asyncio.run(consume(_settings(source.url), _options("b"), source.url))
    assert model_rows(source.url) == n  # exactly once: the step counter counts each event
    assert result["claimed"] >= held
    assert pending(client) == 0
    stats = client.hgetall(f"{STREAM}:stats:{GROUP}")
    # a window flushed but not acknowledged when the kill came is in the model, skipped by b
    assert int(stats[b"learned"]) + int(stats.get(b"duplicates", 0)) >= n
    assert int(stats[b"learned"]) <= n


def test_max_events_then_the_rest(source: RedisServer, tmp_path: Path) -> None:
    client = source.client()
    xadd(client, events(600, seed=10))  # type: ignore[arg-type]
    out = tmp_path / "m.json"
    # no claiming here: a claim timeout no loaded machine reaches
    assert run(source, source.url, "--batch-size", "100", "--max-events", "250",
               "--claim-idle-ms", "10000", metrics=out) == 0
    m = json.loads(out.read_text())
    assert m["read"] == m["learned"] == model_rows(source.url) == 250
    assert pending(client) == 0
    assert run(source, source.url, "--batch-size", "100", metrics=out) == 0
    assert json.loads(out.read_text())["learned"] == 350 and model_rows(source.url) == 600


def test_sigterm_flushes_and_exits(source: RedisServer, tmp_path: Path) -> None:
    """SIGTERM: the consumer finishes the batch in hand, flushes, acknowledges, exits 0."""
    n = 500
    client = source.client()
    xadd(client, events(n, seed=12))  # type: ignore[arg-type]
    out = tmp_path / "m.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    cmd = [sys.executable, "-m", "service.cli", "consume", "--source", source.url,
           "--stream", STREAM, "--group", GROUP, "--quiet", "--block-ms", "100",
           "--metrics-json", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while model_rows(source.url) < n:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert json.loads(out.read_text())["learned"] == n and pending(client) == 0


def test_batch_refused_whole_is_learned_one_by_one(source: RedisServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch the learner refuses whole for what one event brings (422: too many fields) is
    learned event by event: only that event is a dead letter."""
    from service.errors import Problem
    from service.learner import LearnerService

    original = LearnerService.learn_lines

    async def refuse_poison(self: LearnerService, piece: bytes, durable: bool = True) -> Any:
        if b"poison" in piece:
            raise Problem(422, "too-many-fields", "more than 1023 distinct fields; nothing "
                                                  "was learned")
        return await original(self, piece, durable)

    monkeypatch.setattr(LearnerService, "learn_lines", refuse_poison)
    items: list[dict[str, Any]] = events(10, seed=13)
    items[4]["features"]["poison"] = "x"
    client = source.client()
    ids = xadd(client, items)  # type: ignore[arg-type]
    result = asyncio.run(consume(_settings(source.url), _options("a"), source.url))
    assert result["learned"] == model_rows(source.url) == 9 and result["dead_letters"] == 1
    (_, letter), = client.xrange(f"{STREAM}:dead")
    assert letter[b"source_id"] == ids[4] and b"distinct fields" in letter[b"reason"]
    # its record was released: the event sent again (without the bad field) is learned
    xadd(client, [{**items[4], "features": {"site": "a"}}])
    assert asyncio.run(consume(_settings(source.url), _options("a"), source.url))[
        "learned"] == 1

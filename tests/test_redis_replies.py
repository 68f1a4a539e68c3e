"""Replies read as bytes (``service/stores/redis/replies.py``, ``transport.pipeline_raw``):
the scan against hiredis on random RESP2 and RESP3 replies cut anywhere, and HMGET replies
of a real redis-server read off the socket against redis-py's own reading."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hiredis
import numpy as np
import pytest
import redis
from redis_servers import start_redis

from service.stores.redis import replies, transport
from service.stores.redis.resp import command, keyed_commands
from service.stores.redis.shard import Shard


def _reply(rng: random.Random, depth: int = 0) -> tuple[bytes, int]:
    """A random reply's bytes and its error items."""
    kind = rng.choice("$$**+-:_%~,#" if depth < 3 else "$+:,#")
    if kind == "$":
        if rng.random() < 0.2:
            return b"$-1\r\n", 0
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
        if rng.random() < 0.3:
            data += b"\r\n-$*"  # protocol bytes inside a value
        return b"$%d\r\n%s\r\n" % (len(data), data), 0
    if kind in "*~%":
        if kind == "*" and rng.random() < 0.1:
            return b"*-1\r\n", 0
        n = rng.randrange(4)
        # hiredis makes sets and map keys of them: scalars only there
        scalar = 4
        if kind == "%":
            parts = [p for _ in range(n) for p in (_reply(rng, scalar), _reply(rng, depth + 1))]
        else:
            parts = [_reply(rng, scalar if kind == "~" else depth + 1) for _ in range(n)]
        return (kind.encode() + b"%d\r\n" % n + b"".join(p for p, _ in parts),
                sum(e for _, e in parts))
    line = {"+": b"+OK", "-": b"-ERR no", ":": b":-42", "_": b"_", ",": b",1.5",
            "#": b"#t"}[kind]
    return line + b"\r\n", int(kind == "-")


def _whole(data: bytes) -> list[Any]:
    reader = hiredis.Reader()
    reader.feed(data)
    out = []
    while (got := reader.gets()) is not False:
        out.append(got)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_scan_finds_each_reply_as_hiredis_does(seed: int) -> None:
    """Replies fed in random pieces: each reply the scan finds is one hiredis reads alone,
    in order, with its error items counted; a reply cut short waits for its bytes."""
    rng = random.Random(seed)
    made = [_reply(rng) for _ in range(rng.randrange(1, 30))]
    data = b"".join(p for p, _ in made)
    buf = np.frombuffer(data, dtype=np.uint8).copy()
    starts = np.zeros(len(made), dtype=np.int64)
    errors = np.zeros(len(made), dtype=np.int64)
    pos = done = 0
    cuts = [*sorted(rng.sample(range(len(data) + 1), min(5, len(data) + 1))), len(data)]
    for end in cuts:
        pos, done = replies.scan(buf, pos, end, len(made), starts, errors, done)
        assert pos <= end and done <= len(made)
    assert (pos, done) == (len(data), len(made))
    bounds = [*starts.tolist(), len(data)]
    alone = [_whole(data[a:b]) for a, b in itertools.pairwise(bounds)]
    assert [len(x) for x in alone] == [1] * len(made)
    assert repr([x[0] for x in alone]) == repr(_whole(data))
    assert errors.tolist() == [e for _, e in made]


@pytest.mark.redis
@pytest.mark.parametrize("protocol", [2, 3])
def test_hmget_replies_read_as_bytes_are_what_redis_py_reads(tmp_path: Path,
                                                              protocol: int) -> None:
    """HMGETs of a real redis-server (values present and absent, a key of another type)
    read off the socket: the values redis-py reads, zeros for the absent ones, the error
    named; the connection stays in step for the next command."""
    server = start_redis(tmp_path / "r")
    try:
        shard = Shard(server.url, 0)
        shard.client = redis.Redis(host="127.0.0.1", port=server.port, protocol=protocol)
        state = SimpleNamespace(shards=[shard])
        rng = np.random.default_rng(protocol)
        keys = rng.integers(1, 2**63, size=3000, dtype=np.uint64)
        buckets = np.sort(rng.integers(0, 40, size=keys.size))
        stored = rng.random(keys.size) < 0.7
        for b in range(40):
            at = (buckets == b) & stored
            if at.any():
                shard.client.hset(f"b:{b}", mapping={k.tobytes(): (k ^ np.uint64(0xFFFF)).tobytes()
                                                      for k in keys[at]})
        payload, n = keyed_commands(b"HMGET", b"b:", buckets,
                                    np.ascontiguousarray(keys[:, None].view(np.uint8)),
                                    (8,), 50)
        buf, starts, errors = transport.pipeline_raw(state, 0, payload, n)  # type: ignore[arg-type]
        assert starts.size == n and not errors.any()
        out = np.empty(keys.size * 8, dtype=np.uint8)
        assert replies.fixed_values(buf, starts, 8, out) == keys.size
        got = out.view(np.uint64)
        expect = [int.from_bytes(v or bytes(8), "little")
                  for b in range(40) if (buckets == b).any()
                  for v in shard.client.hmget(f"b:{b}", [k.tobytes()
                                                          for k in keys[buckets == b]])]
        assert got.tolist() == expect
        assert (got[~stored] == 0).all() and (got[stored] == keys[stored] ^ np.uint64(0xFFFF)).all()

        shard.client.set("b:7", "a string")
        buf, starts, errors = transport.pipeline_raw(
            state, 0, command(b"PING") + payload + command(b"PING"), n + 2)  # type: ignore[arg-type]
        assert errors.sum() >= 1 and errors[0] == errors[-1] == 0  # the PINGs
        bad = int(np.flatnonzero(errors)[0])
        assert "WRONGTYPE" in replies.first_error(buf, int(starts[bad]), buf.size)
        assert replies.fixed_values(buf, starts[1:-1], 8, out) < 0
        assert shard.call("ping") is True and shard.client.dbsize() > 0
        shard.close()
    finally:
        server.stop()

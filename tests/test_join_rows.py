"""The pending rows' arena (``ftrl_core.spans``) against a plain reference: a dict of
each row's own arrays."""

from __future__ import annotations

import numpy as np
import pytest

from ftrl_core.spans import RowArena, Rows
from service.join.pending import JoinState, ToLearn


def random_batch(rng: np.random.Generator, rows: int) -> Rows:
    lengths = rng.integers(0, 60, size=rows)
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    n = int(indptr[-1])
    return Rows(indptr, rng.integers(0, 2**63, size=n, dtype=np.uint64),
                rng.integers(0, 40, size=n, dtype=np.int32), rng.normal(size=n), range(rows))


def row_of(batch: Rows, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, hi = batch.indptr[r], batch.indptr[r + 1]
    return batch.keys[lo:hi], batch.fields[lo:hi], batch.values[lo:hi]


def test_slots_survive_chunks_and_relocations_as_a_dict_of_rows_keeps_them() -> None:
    """Rows added, released mostly oldest first, and read back (small chunks: many of
    them, mostly empty ones relocated): each slot in use reads back exactly the row a plain
    dict kept; the live counts are the dict's; when a new chunk starts the others hold at
    most four times the live features, and no empty chunk holds memory; when most rows are
    gone, all chunks but the current one are given back."""
    rng = np.random.default_rng(3)
    arena = RowArena(chunk=512, min_chunk=512)
    reference: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    held = []
    arrived: list[int] = []  # slots in the order their rows came
    switches, current = 0, -1
    for step in range(400):
        # few rows come in the last hundred steps, and half of those held leave each time
        batch = random_batch(rng, int(rng.integers(3, 40)) if step < 300 else 3)
        if step % 3 == 0:  # some rows only, as /v1/predict with "log" stores them
            batch = batch._replace(which=sorted(rng.choice(len(batch.indptr) - 1,
                                                           size=3, replace=False).tolist()))
        slots = arena.add(batch)
        if arena.current != current:
            # a new chunk: every other chunk holding rows is at least a quarter live
            switches += 1
            others = (arena.chunk_live > 0) & (np.arange(len(arena.chunk_live))
                                               != arena.current)
            assert int(arena.chunk_sizes[others].sum()) <= 4 * arena.live
            assert ((arena.chunk_sizes == 0) | (arena.chunk_live > 0)
                    | (np.arange(len(arena.chunk_live)) == arena.current)).all()
        current = arena.current
        assert not set(slots) & set(reference)  # a slot in use is never given again
        for r, slot in zip(batch.which, slots, strict=True):
            reference[slot] = row_of(batch, r)
        arrived = [slot for slot in arrived if slot in reference] + slots
        # mostly the oldest leave (as windows close), some stay long
        oldest = set(arrived[:len(slots)])
        gone = [slot for slot in reference
                if rng.random() < (0.02 if step < 300 else 0.5) or slot in oldest]
        if step >= 300:
            gone = [slot for slot in reference if rng.random() < 0.5]
        if step % 2:
            arena.release(gone)
        else:  # one at a time, as ``--max-pending`` and the arrival clock close them
            for slot in gone:
                arena.release([slot])
        for slot in gone:
            del reference[slot]
        live = sum(len(k) for k, _, _ in reference.values())
        assert arena.live == live == int(arena.chunk_live.sum())
        held.append(int(arena.chunk_sizes.sum()))
        slots_held = list(reference)
        indptr, keys, fields, values = arena.gather(slots_held, arena.adds)
        for j, slot in enumerate(slots_held):
            k, f, v = reference[slot]
            lo, hi = indptr[j], indptr[j + 1]
            np.testing.assert_array_equal(keys[lo:hi], k)
            np.testing.assert_array_equal(fields[lo:hi], f)
            np.testing.assert_array_equal(values[lo:hi], v)
    assert arena.relocated > 0 and switches > 10
    assert arena.chunks() == 1 and max(held) > held[-1]  # it gave back all but the current


def test_rows_read_after_more_were_added_are_refused() -> None:
    arena = RowArena(chunk=4)
    batch = Rows(np.array([0, 3]), np.arange(3, dtype=np.uint64), np.zeros(3, np.int32),
                 np.ones(3), range(1))
    slots = arena.add(batch)
    adds = arena.adds
    arena.release(slots)
    arena.gather(slots, adds)  # a released row is readable until the next add
    arena.add(batch)
    with pytest.raises(RuntimeError, match="added"):
        arena.gather(slots, adds)


def test_join_state_rows_come_back_through_chunks_and_checkpoints() -> None:
    """A ``JoinState`` with many impressions through its arena (many chunks): the rows it
    returns to learn, and those a checkpoint keeps, are the impressions' own, each learned
    once, with a click's label where one joined."""
    rng = np.random.default_rng(5)
    state = JoinState(10.0, "wait")
    state.arena = RowArena(chunk=4096, min_chunk=4096)  # many chunks
    rows: dict[int, np.ndarray] = {}
    clicked: set[int] = set()
    learned: list[tuple[np.ndarray, float]] = []

    def learn(todo: ToLearn) -> None:
        indptr, got, _, _ = todo.csr()
        learned.extend((got[indptr[j]:indptr[j + 1]], todo.labels[j]) for j in range(len(todo)))

    key = 1
    for step in range(60):
        batch = random_batch(rng, 400)
        keys = list(range(key, key + 400))
        for r, k in enumerate(keys):
            rows[k] = row_of(batch, r)[0]
        key += 400
        learn(state.impressions(keys, [float(step)] * 400, batch, at=0.0)[0])
        clicks = [k for k in keys if rng.random() < 0.1]
        clicked.update(clicks)
        learn(state.feedback(clicks, [step + 0.5] * len(clicks), [1] * len(clicks), at=0.0))
    assert state.arena.chunks() > 1 and len(learned) > 0 and state.pending
    closed = len(learned)
    back = JoinState(10.0, "wait")
    back.load(state.state())
    learn(back.advance(1e9, 0.0))
    # closing order is arrival order here (one ts a step): key order
    assert len(learned) == len(rows)
    for (got, label), k in zip(learned, sorted(rows), strict=True):
        np.testing.assert_array_equal(got, rows[k])
        assert label == (1.0 if k in clicked else 0.0)
    again = state.advance(1e9, 0.0)  # the original, too, gives what the checkpoint did
    assert len(again) == len(rows) - closed
    _indptr, got, _, _ = again.csr()
    np.testing.assert_array_equal(got, np.concatenate([r for r, _ in learned[closed:]]))


@pytest.mark.parametrize("policy", ["wait", "fnw"])
def test_requests_in_order_close_as_one_impression_at_a_time_does(
        policy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request whose impressions are in ``ts`` order within a window is taken in one step
    (``JoinState._in_order``); the same requests taken impression by impression (the step
    refused) learn the same rows, with the same labels and weights, in the same order, and
    leave the same pending impressions, counters and clocks. The stream mixes such
    requests with others (out of order, spanning more than a window, with ids shown
    again, timed by arrival) and clicks."""
    rng = np.random.default_rng(11)
    window = 50.0
    requests: list[tuple[str, list[int], list[float | None]]] = []
    t = 0.0
    for step in range(300):
        n = int(rng.integers(2, 30))
        if step % 4 == 3 and step % 10 not in (1, 2):  # clicks: some late, some unknown
            ids = rng.integers(max(1, step * 30 - 2000), step * 30 + 10, size=n).tolist()
            requests.append(("click", ids, [t + float(d) for d in rng.uniform(-60, 5, n)]))
            continue
        spread = 80.0 if step % 7 == 0 else 10.0  # sometimes more than a window
        ts: list[float | None] = sorted((t + rng.uniform(0, spread, n)).tolist())
        if step % 5 == 0:
            rng.shuffle(ts)  # type: ignore[arg-type]  # out of order
        if step % 10 == 1:
            ts[-1] = t - 100.0  # already past its window, last: the next event closes it
        if step % 10 == 2:  # in order, behind the watermark, after one past its window
            ts = sorted((t - 20.0 + rng.uniform(0, 5, n)).tolist())
        if step % 13 == 0:
            ts[1] = None  # timed by arrival
        ids = list(range(step * 30, step * 30 + n))
        if step % 3 == 0 and step:
            ids[0] = int(rng.integers(max(1, step * 30 - 300), step * 30 + 1))  # shown again
        requests.append(("imp", ids, ts))
        t += float(rng.uniform(2, 12))

    def run(in_order: bool) -> tuple[list[tuple[bytes, float, float]], JoinState]:
        state = JoinState(window, policy)  # type: ignore[arg-type]
        if not in_order:
            monkeypatch.setattr(state, "_in_order", lambda ts: False)
        learned = []
        for kind, ids, ts in requests:
            if kind == "imp":
                rows = Rows(np.arange(len(ids) + 1), np.array(ids, dtype=np.uint64),
                            np.zeros(len(ids), np.int32), np.ones(len(ids)), range(len(ids)))
                todo, _ = state.impressions(ids, ts, rows, at=1e6)
            else:
                todo = state.feedback(ids, ts, [1] * len(ids), at=1e6)
            _, keys, _, _ = todo.csr()
            learned.extend(zip(keys.tolist(), todo.labels, todo.weights, strict=True))
        return learned, state

    fast, a = run(True)
    slow, b = run(False)
    assert fast == slow and len(fast) > 1000
    assert a.pending == b.pending and a.counts == b.counts and a.counts["duplicates"] > 0
    assert (a.watermark, a.clock, a.seq, a._stale) == (b.watermark, b.clock, b.seq, b._stale)
    assert list(a.closed) == list(b.closed)

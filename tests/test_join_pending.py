"""The join's pending store in bulk (``service.join.pending``): its close queue against a
single heap, and a stream of impressions and clicks through ``JoinState`` against a plain
reference of the rule (one impression at a time: close what the watermark passed, by close
time then arrival; remember the last closed ids)."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from ftrl_core.spans import Rows
from service.join import pending
from service.join.close_queue import CloseQueue
from service.join.pending import JoinState, ToLearn


def test_close_queue_gives_a_heaps_order_when_cut_at_a_bound() -> None:
    """Entries mostly in order (a run) with some behind (the heap), and a request's at once
    (``add_sorted``: appended, or merged into the run), taken one at a time (``pop``) or
    below a bound (``take_below``, with the heap empty), come out as a single heap of them
    gives; the run's arrays shift down as its head moves past most of them."""
    rng = np.random.default_rng(3)
    queue, reference = CloseQueue(), []
    close_of: dict[int, float] = {}
    seq, t = 0, 0.0
    cuts = 0
    for _ in range(400):
        head = queue.head
        for _ in range(int(rng.integers(0, 40))):
            t += float(rng.uniform(0, 1))
            close = t - 30.0 if rng.random() < 0.05 else t  # some behind the run's last
            entry = (close, seq, int(rng.integers(0, 1000)))
            close_of[seq] = close
            seq += 1
            queue.push(entry)
            heapq.heappush(reference, entry)
        if rng.random() < 0.3:  # a request's entries at once, some behind the run's last
            closes = np.sort(t + rng.uniform(-30, 1, int(rng.integers(1, 12))))
            seqs = np.arange(seq, seq + len(closes))
            slots = rng.integers(0, 1000, len(closes))
            queue.add_sorted(closes, seqs, slots)
            for entry in zip(closes.tolist(), seqs.tolist(), slots.tolist(), strict=True):
                close_of[entry[1]] = entry[0]
                heapq.heappush(reference, entry)
            seq += len(closes)
        assert len(queue) == len(reference) and bool(queue) == bool(reference)
        bound = t - float(rng.uniform(0, 20))
        if not queue.heap:
            seqs, slots = queue.take_below(bound)
            taken = [(close_of[s], s, slot)
                     for s, slot in zip(seqs.tolist(), slots.tolist(), strict=True)]
            expected = []
            while reference and reference[0][0] < bound:
                expected.append(heapq.heappop(reference))
            assert taken == expected
        else:
            while (top := queue.top()) is not None and top[0] < bound:
                assert top == heapq.heappop(reference)
                queue.pop()
        assert queue.top() == (reference[0] if reference else None)
        cuts += queue.head < head
    assert cuts > 0 and seq > 5000


def one_feature_rows(keys: list[int]) -> Rows:
    n = len(keys)
    return Rows(np.arange(n + 1), np.array(keys, dtype=np.uint64), np.zeros(n, np.int32),
                np.ones(n), range(n))


class Reference:
    """The join's rule for impressions and clicks timed by ``ts``, one event at a time."""

    def __init__(self, window: float, kept: int) -> None:
        self.window, self.kept = window, kept
        self.pending: dict[int, list[float]] = {}  # id -> [ts, close_at, seq, clicked]
        self.closed: list[int] = []
        self.watermark = -math.inf
        self.seq = 0
        self.learned: list[tuple[int, float]] = []

    def see(self, t: float) -> None:
        self.watermark = max(self.watermark, t)
        due = sorted((imp[1], imp[2], key) for key, imp in self.pending.items()
                     if imp[1] < self.watermark)
        for _, _, key in due:
            self.close(key)

    def close(self, key: int) -> None:
        imp = self.pending.pop(key)
        self.learned.append((key, 1.0 if imp[3] else 0.0))
        self.closed = [*self.closed, key][-self.kept:]

    def impression(self, key: int, t: float) -> None:
        self.see(t)
        if key in self.pending or key in self.closed:
            return
        self.pending[key] = [t, t + self.window, self.seq, False]
        self.seq += 1

    def click(self, key: int, t: float, label: int) -> None:
        self.see(t)
        imp = self.pending.get(key)
        if imp is None or t > imp[1]:
            return
        if label == 0:
            self.close(key)
        else:
            imp[3] = True


@pytest.mark.parametrize("kept", [7, 100_000])
def test_a_stream_closes_and_forgets_as_the_plain_rule_does(
        kept: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests of impressions in order (taken at once), out of order and shown again, and
    clicks (some explicit negatives, which close at once and leave stale entries in the
    close queue), through ``JoinState`` (``wait``) and a checkpoint halfway: the same rows
    learned with the same labels in the same order, the same pending ids, and the same
    last closed ids (``kept`` of them) as the reference."""
    monkeypatch.setattr(pending, "CLOSED_KEPT", kept)
    rng = np.random.default_rng(5)
    window = 40.0
    state, ref = JoinState(window, "wait"), Reference(window, kept)
    learned: list[tuple[int, float]] = []
    t, next_id = 0.0, 0
    for step in range(600):
        if step == 300:
            again = JoinState(window, "wait")
            again.load(state.state())
            state = again
        if step % 3 == 2:  # clicks on recent ids
            n = int(rng.integers(1, 15))
            keys = rng.integers(max(0, next_id - 150), next_id + 1, size=n).tolist()
            ts = sorted((t + rng.uniform(-5, 1, n)).tolist())
            labels = (rng.random(n) < 0.8).astype(int).tolist()
            todo = state.feedback(keys, ts, labels, at=0.0)
            for key, when, label in zip(keys, ts, labels, strict=True):
                ref.click(key, when, label)
        else:
            n = int(rng.integers(1, 25))
            keys = list(range(next_id, next_id + n))
            next_id += n
            if step % 11 == 0:
                keys[0] = int(rng.integers(max(0, next_id - 400), next_id))  # shown again
            ts = sorted((t + rng.uniform(0, 8, n)).tolist())
            if step % 7 == 0:
                rng.shuffle(ts)  # out of order: one at a time
            todo, _ = state.impressions(keys, ts, one_feature_rows(keys), at=0.0)
            for key, when in zip(keys, ts, strict=True):
                ref.impression(key, when)
        _, features, _, _ = todo.csr()
        learned.extend(zip(features.tolist(), todo.labels, strict=True))
        t += float(rng.uniform(1, 6))
    assert learned == ref.learned and len(learned) > 3000
    assert sum(label for _, label in learned) > 100
    assert sorted(state.pending) == sorted(ref.pending)
    assert list(state.closed) == ref.closed


@pytest.mark.parametrize("in_order", [True, False])
def test_an_id_shown_again_after_it_was_forgotten_closes_at_its_own_time(
        in_order: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """An impression closed by its label leaves its entry in the close queue; once its id
    is forgotten (``CLOSED_KEPT``) and shown again, that old entry surfacing must not close
    the new impression: it closes at its own ``ts + window``. Through the close queue in
    order (one cut) and with a heap (an entry behind the run)."""
    monkeypatch.setattr(pending, "CLOSED_KEPT", 1)
    state = JoinState(10.0, "wait")
    state.impressions([0], [0.0], one_feature_rows([0]), at=0.0)  # closes at 10
    state.impressions([1], [0.5], one_feature_rows([1]), at=0.0)  # closes at 10.5
    state.feedback([1], [1.0], [0], at=0.0)  # closed by its label: its entry stays (behind 0's)
    state.impressions([2], [2.0], one_feature_rows([2]), at=0.0)
    state.feedback([2], [3.0], [0], at=0.0)  # 1 forgotten
    if not in_order:
        state.impressions([3], [4.0], one_feature_rows([3]), at=0.0)  # closes at 14
    state.impressions([1], [5.0], one_feature_rows([1]), at=0.0)  # shown again: closes at 15
    if not in_order:
        state.impressions([4], [-1.0], one_feature_rows([4]), at=0.0)  # into the heap
        assert state._by_event.heap
    state.feedback([9], [11.0], [1], at=0.0)  # past the old entry (10.5), not the new (15)
    assert 1 in state.pending and 0 not in state.pending
    todo = state.feedback([9], [15.5], [1], at=0.0)
    assert 1 not in state.pending and todo.csr()[1].tolist()[-1] == 1


def test_a_click_sees_what_closed_and_was_forgotten_earlier_in_its_own_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A feedback request looks its ids up at once; an earlier click in it can close
    impressions (its ``ts`` moves the watermark), and those closes can forget older closed
    ids: a later click in the same request sees both as they are by then."""
    monkeypatch.setattr(pending, "CLOSED_KEPT", 2)
    state = JoinState(10.0, "wait")
    state.impressions([1, 2, 3], [0.0, 1.0, 2.0], one_feature_rows([1, 2, 3]), at=0.0)
    state.feedback([1], [0.5], [0], at=0.0)  # 1 closed by its label: remembered
    assert state.closed == [1]
    # 9 at 12.5 closes 2 and 3 (close at 11, 12), which forgets 1: then 1 is unknown, 2 late
    state.feedback([9, 1, 2], [12.5, 12.6, 12.7], [1, 1, 1], at=0.0)
    assert state.closed == [2, 3]
    assert (state.counts["unknown"], state.counts["late"]) == (2, 1)


def test_an_id_forgotten_earlier_in_its_own_request_is_new_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An impression request taken one at a time looks its ids up at once; when one of its
    impressions closes others, and those closes forget an older closed id, that id shown
    later in the same request is new, not a duplicate."""
    monkeypatch.setattr(pending, "CLOSED_KEPT", 1)
    state = JoinState(10.0, "wait")
    state.impressions([1], [0.0], one_feature_rows([1]), at=0.0)
    state.feedback([1], [0.5], [0], at=0.0)  # 1 closed by its label: remembered
    state.impressions([2], [1.0], one_feature_rows([2]), at=0.0)  # closes at 11
    # out of order: one at a time. 3 at 20 closes 2, which forgets 1; then 1 is new
    _, added = state.impressions([3, 1], [20.0, 19.0], one_feature_rows([3, 1]), at=0.0)
    assert added == [True, True] and sorted(state.pending) == [1, 3]
    assert state.closed == [2] and state.counts["duplicates"] == 0


@pytest.mark.parametrize("policy", ["wait", "fnw"])
def test_shared_requests_taken_at_once_match_one_at_a_time(
        policy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shared (Redis) mode, where a request closes nothing: a request of new ids in ``ts``
    order is taken at once (its entries appended to the close queue's run, or merged into
    it when they fall behind); taken one at a time instead (the step refused), the same
    requests, clicks and ticks learn the same rows with the same labels in the same order,
    and leave the same pending impressions, closed ids, counters and clocks."""
    rng = np.random.default_rng(13)
    requests: list[tuple[list[int], list[float | None]]] = []
    t = 0.0
    for step in range(240):
        n = int(rng.integers(1, 20))
        ts: list[float | None] = sorted((t + rng.uniform(-15, 10, n)).tolist())
        if step % 9 == 0:
            rng.shuffle(ts)  # type: ignore[arg-type]  # out of order: one at a time
        if step % 13 == 0:
            ts[-1] = None  # timed by arrival: one at a time
        if step % 17 == 5:  # in order, already past the agreed watermark: due at once
            ts = sorted((t - 60.0 + rng.uniform(0, 5, n)).tolist())
        ids = list(range(step * 30, step * 30 + n))
        if step % 5 == 0 and step:
            ids[0] = int(rng.integers(max(0, step * 30 - 200), step * 30))  # shown again
        requests.append((ids, ts))
        t += float(rng.uniform(2, 8))

    def run() -> tuple[list[tuple[int, float, float] | bool], JoinState]:
        state = JoinState(30.0, policy, shared=True)  # type: ignore[arg-type]
        learned: list[tuple[int, float, float] | bool] = []

        def take(todo: ToLearn) -> None:
            _, keys, _, _ = todo.csr()
            learned.extend(zip(keys.tolist(), todo.labels, todo.weights, strict=True))

        for step, (ids, ts) in enumerate(requests):
            at = 1e6 + step
            take(state.impressions(ids, ts, one_feature_rows(ids), at=at)[0])
            learned.append(state.due_event(state.watermark))
            if step % 4 == 3:
                clicked = ids[: max(1, len(ids) // 3)]
                take(state.feedback(clicked, [max(x for x in ts if x is not None)] * len(clicked),
                                    [1] * len(clicked), at=at))
                take(state.advance(state.seen - 12.0, at))
        return learned, state

    fast, a = run()
    monkeypatch.setattr(pending, "_ascending", lambda ts: False)
    slow, b = run()
    assert fast == slow and len(fast) > 1000 and a.counts["duplicates"] > 0
    assert sum(x is True for x in fast) > 10
    assert a.pending == b.pending and a.counts == b.counts and a.closed == b.closed
    assert (a.watermark, a.clock, a.seen, a.seq, a._stale) == \
        (b.watermark, b.clock, b.seen, b.seq, b._stale)

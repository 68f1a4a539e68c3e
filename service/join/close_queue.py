"""The order in which pending impressions close: ``(close_at, seq, slot)`` entries,
smallest first, as a single heap of them would give.

Most entries come in order (the impressions of one window, their ``ts`` rising), so they are
kept as a run: three arrays appended at the end and read from ``head``, cut at a time with
one ``searchsorted`` (``take_below``) and added a request at a time (``add_sorted``:
appended, or merged in when a request arrives after a later one), with no Python object per
entry. A single entry not above the run's last (impressions taken one at a time) goes to a
heap of tuples instead; the smallest is the smaller of the two heads. Entries are unique
(``seq``), so the order is exactly a single heap's.

An entry belongs to the impression in its ``slot`` (of the join's ``RowArena``) while that
slot's pending ``seq`` is the entry's own: an impression closed early (by its label, by
``--max-pending``) leaves its entry behind, skipped when it surfaces (``live``).
"""

from __future__ import annotations

import heapq
import math

import numpy as np

#: (close_at, seq, slot)
Entry = tuple[float, int, int]

#: entries the run's arrays start with (they double as needed)
START = 1024


def with_room(arrays: tuple[np.ndarray, ...], head: int, size: int, n: int
              ) -> tuple[tuple[np.ndarray, ...], int, int]:
    """``(arrays, head, size)`` with room for ``n`` more entries after ``size``, for arrays
    whose entries are ``[head, size)``: the same when they fit, else new arrays twice what
    they will hold, the entries moved to the front (``ClosedIds`` keeps its ids so too)."""
    if size + n <= len(arrays[0]):
        return arrays, head, size
    live = size - head
    grown = tuple(np.empty(max(START, 2 * (live + n)), dtype=a.dtype) for a in arrays)
    for new, old in zip(grown, arrays, strict=True):
        new[:live] = old[head:size]
    return grown, 0, live


class CloseQueue:
    __slots__ = ("close", "head", "heap", "last", "seq", "size", "slot")

    def __init__(self) -> None:
        self.close = np.empty(START, dtype=np.float64)
        self.seq = np.empty(START, dtype=np.int64)
        self.slot = np.empty(START, dtype=np.int64)
        #: the run is ``[head, size)`` of the arrays
        self.head = 0
        self.size = 0
        #: the run's last (close_at, seq), as Python numbers (compared a request at a time)
        self.last: tuple[float, int] | None = None
        self.heap: list[Entry] = []

    def __bool__(self) -> bool:
        return self.head < self.size or bool(self.heap)

    def __len__(self) -> int:
        return self.size - self.head + len(self.heap)

    def ends_run(self, close_at: float, seq: int) -> bool:
        """Whether an entry ``(close_at, seq, ...)`` goes at the end of the run (else into
        the heap)."""
        return self.head == self.size or self.last < (close_at, seq)  # type: ignore[operator]

    def push(self, entry: Entry) -> None:
        if self.ends_run(entry[0], entry[1]):
            self._room(1)
            at = self.size
            self.close[at], self.seq[at], self.slot[at] = entry
            self.size = at + 1
            self.last = (entry[0], entry[1])
        else:
            heapq.heappush(self.heap, entry)

    def extend_run(self, close: np.ndarray, seq: np.ndarray, slot: np.ndarray) -> None:
        """Append entries in order, the first of them above the run's last (the caller
        checked both: ``ends_run`` of the first, and ``close`` not falling)."""
        n = len(close)
        if not n:
            return
        self._room(n)
        at = self.size
        self.close[at:at + n] = close
        self.seq[at:at + n] = seq
        self.slot[at:at + n] = slot
        self.size = at + n
        self.last = (float(close[-1]), int(seq[-1]))

    def add_sorted(self, close: np.ndarray, seq: np.ndarray, slot: np.ndarray) -> None:
        """Put entries, in order and each with a ``seq`` above every entry's, into the run
        where they belong: appended when they come after its last (``extend_run``), else
        merged in. An out-of-order request's entries (another client's request, sent
        earlier, arriving later) belong near the run's end: merging moves only the entries
        after the first of them, and keeps the heap out of it (with entries in the heap, a
        watermark closes one impression at a time)."""
        n = len(close)
        if not n:
            return
        if self.ends_run(float(close[0]), int(seq[0])):
            self.extend_run(close, seq, slot)
            return
        self._room(n)
        head, size = self.head, self.size
        # the run's entries are (close_at, seq) in order and the new seqs are above all of
        # theirs: each new entry goes after the run's entries of its close time and below
        at = np.searchsorted(self.close[head:size], close, side="right")
        first = head + int(at[0])
        at -= at[0]
        for array, new in ((self.close, close), (self.seq, seq), (self.slot, slot)):
            array[first:size + n] = np.insert(array[first:size], at, new)
        self.size = size + n
        if first + int(at[-1]) + n - 1 == self.size - 1:  # the last new one ends the run
            self.last = (float(close[-1]), int(seq[-1]))

    def top(self) -> Entry | None:
        """The smallest entry (live or not), None when empty."""
        heap, head = self.heap, self.head
        if head < self.size:
            run = (float(self.close[head]), int(self.seq[head]), int(self.slot[head]))
            if heap and heap[0] < run:
                return heap[0]
            return run
        return heap[0] if heap else None

    def first_close(self) -> float:
        """The smallest entry's ``close_at`` (live or not), inf when empty."""
        heap, head = self.heap, self.head
        first = float(self.close[head]) if head < self.size else math.inf
        return min(first, heap[0][0]) if heap else first

    def one_due(self, bound: float) -> bool:
        """With the heap empty: whether at most the run's first entry is below ``bound``."""
        after = self.head + 1
        return after >= self.size or self.close[after] >= bound

    def pop(self) -> None:
        """Drop the smallest entry."""
        heap, head = self.heap, self.head
        if head < self.size and not (
                heap and heap[0] < (float(self.close[head]), int(self.seq[head]))):
            self._drop_run(head + 1)
        else:
            heapq.heappop(heap)

    def take_below(self, bound: float) -> tuple[np.ndarray, np.ndarray]:
        """Remove the run's entries whose ``close_at`` is below ``bound`` (with an empty
        heap: every such entry); their ``seq`` and ``slot``, in order (copies)."""
        head = self.head
        end = head + int(np.searchsorted(self.close[head:self.size], bound, side="left"))
        taken = self.seq[head:end].copy(), self.slot[head:end].copy()
        self._drop_run(end)
        return taken

    def live(self, pending_seq: np.ndarray) -> Entry | None:
        """The smallest entry of an impression still pending (``pending_seq``: each slot's
        pending ``seq``, -1 when none); entries of closed ones surfacing are dropped."""
        while True:
            top = self.top()
            if top is None:
                return None
            if pending_seq[top[2]] == top[1]:
                return top
            self.pop()

    def _room(self, n: int) -> None:
        (self.close, self.seq, self.slot), self.head, self.size = with_room(
            (self.close, self.seq, self.slot), self.head, self.size, n)

    def _drop_run(self, head: int) -> None:
        """Entries before ``head`` have left; the arrays shift down once they are most of
        what is held (each entry moves O(1) times on average)."""
        if head == self.size:
            head = self.size = 0
            self.last = None
        elif head >= START and 2 * head >= self.size:
            live = self.size - head
            for array in (self.close, self.seq, self.slot):
                array[:live] = array[head:self.size]
            head, self.size = 0, live
        self.head = head

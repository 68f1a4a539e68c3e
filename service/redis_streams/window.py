"""A consumer's bookkeeping: its counters, and the window of events learned since its last
flush (acknowledged together once the flush lands)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .entries import Entry


@dataclass
class Counts:
    read: int = 0  # entries read or claimed (a deferred entry counts each time)
    claimed: int = 0  # entries taken over with XAUTOCLAIM
    learned: int = 0  # acknowledged after their flush
    duplicates: int = 0
    deferred: int = 0  # left pending: another live consumer holds the event
    dead_letters: int = 0
    gone: int = 0  # pending entries whose data was trimmed from the stream
    flushes: int = 0


@dataclass
class Window:
    """Events learned since the last flush, acknowledged together once it lands."""

    flush_id: str = ""
    ids: list[bytes] = field(default_factory=list)  # the entries to acknowledge
    held: set[bytes] = field(default_factory=set)  # the same, to spot one claimed back
    keys: set[bytes] = field(default_factory=set)
    p: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    rows: int = 0
    duplicates: int = 0
    started: float = 0.0

    def hold(self, entries: list[Entry]) -> None:
        for e in entries:
            self.ids.append(e.entry_id)
            self.held.add(e.entry_id)

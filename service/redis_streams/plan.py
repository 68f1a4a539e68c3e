"""What to do with each event of a batch: learn it, skip it as a duplicate, or leave it
pending (the decision step of the protocol ``consumer`` describes)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from .entries import Entry
from .seen import SeenWindow


@dataclass
class Plan:
    learn: list[Entry] = field(default_factory=list)  # in stream order
    duplicates: list[Entry] = field(default_factory=list)  # of an applied flush: ack now
    in_window: list[Entry] = field(default_factory=list)  # of this window's: ack with it
    deferred: list[Entry] = field(default_factory=list)  # left pending, settled later
    twins: list[tuple[Entry, Entry]] = field(default_factory=list)  # (entry, earlier twin)

    def settle_twins(self, window_keys: Collection[bytes]) -> None:
        """Once the batch is learned: an entry whose key an earlier entry of the batch
        holds follows that entry (learned: a duplicate of the window; a duplicate: one too;
        held elsewhere or refused by the parser: left pending, settled when it comes back)."""
        duplicate_ids = {d.entry_id for d in self.duplicates}
        for twin, first in self.twins:
            if first.key in window_keys:
                self.in_window.append(twin)
            elif first.entry_id in duplicate_ids:
                self.duplicates.append(twin)
            else:
                self.deferred.append(twin)
        self.twins = []


def plan_batch(events: list[Entry], window_keys: Collection[bytes], flush_id: str,
               seen: SeenWindow, flush_settled: Callable[[str], bool],
               claim_idle_ms: int) -> Plan:
    """Check and record the keys of ``events`` (``seen``) under ``flush_id``, the flush the
    consumer's window will carry, and sort the events by what their records say."""
    plan = Plan()
    first: dict[bytes, Entry] = {}
    for e in events:
        if e.key in window_keys:
            plan.in_window.append(e)
        elif e.key in first:
            plan.twins.append((e, first[e.key]))
        else:
            first[e.key] = e
    keys = list(first)
    now, found = seen.check(keys, flush_id)
    held = []
    for key, rec in zip(keys, found, strict=True):
        # a record of this very flush outside the window: a call of ours whose answer was
        # lost and that was sent again; the key is ours
        if rec is None or rec.flush_id == flush_id:
            plan.learn.append(first[key])
        else:
            held.append((first[key], rec))
    applied = {f: flush_settled(f) for f in {rec.flush_id for _, rec in held}}
    stale = []
    for e, rec in held:
        if applied[rec.flush_id]:
            plan.duplicates.append(e)
        elif now - rec.written_ms >= claim_idle_ms:  # its consumer died before its flush
            stale.append((e, rec))
        else:  # a live consumer holds it: its flush will tell
            plan.deferred.append(e)
    won = seen.take([(e.key, rec) for e, rec in stale], flush_id)
    for (e, _), ok in zip(stale, won, strict=True):
        (plan.learn if ok else plan.deferred).append(e)
    plan.learn.sort(key=lambda e: e.pos)
    return plan

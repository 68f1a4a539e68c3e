"""What a stream consumer is told: the stream, the group, its name, and its pace."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConsumerOptions:
    stream: str
    group: str
    consumer: str
    #: the dead-letter stream ("" means ``<stream>:dead``)
    dead_letter: str = ""
    #: entries per XREADGROUP / XAUTOCLAIM (COUNT)
    batch_size: int = 1000
    #: how long a read waits for new entries (BLOCK) when nothing waits for a flush
    block_ms: int = 1000
    #: a pending entry idle this long is taken over from its consumer (XAUTOCLAIM), and a
    #: dedupe record this old whose flush never landed is taken over from its consumer
    claim_idle_ms: int = 30_000
    #: seconds a learned event's key is remembered (found for one to two windows)
    dedupe_window: float = 600.0
    #: flush after this many learned rows (0: after every batch) ...
    sync_every_events: int = 0
    #: ... or this long after the window's first event (0: off); always when idle
    sync_every_ms: float = 0.0
    #: stop after reading this many entries (None: run until stopped)
    max_events: int | None = None
    #: stop once nothing is left to read and the group has no pending entry
    exit_when_idle: bool = False

    def __post_init__(self) -> None:
        if not self.dead_letter:
            object.__setattr__(self, "dead_letter", f"{self.stream}:dead")

    def check(self) -> None:
        """Refuse values the protocol cannot work with (ValueError naming the flag)."""
        for flag, value in (("--stream", self.stream), ("--group", self.group),
                            ("--consumer", self.consumer)):
            if not value:
                raise ValueError(f"{flag} must not be empty")
        if self.dead_letter == self.stream:
            raise ValueError(f"--dead-letter {self.dead_letter!r} is the stream itself")
        max_events = 1 if self.max_events is None else self.max_events
        for flag, number, low in (("--batch-size", self.batch_size, 1),
                                  ("--block-ms", self.block_ms, 1),
                                  ("--claim-idle-ms", self.claim_idle_ms, 1),
                                  ("--sync-every-events", self.sync_every_events, 0),
                                  ("--max-events", max_events, 1)):
            if number < low:
                raise ValueError(f"{flag} must be >= {low}, got {number}")
        if self.sync_every_ms < 0:
            raise ValueError(f"--sync-every-ms must be >= 0, got {self.sync_every_ms:g}")
        if 2 * self.sync_every_ms > self.claim_idle_ms:
            # a window older than the claim timeout could be claimed while still unflushed
            raise ValueError(f"--sync-every-ms {self.sync_every_ms:g} must be at most half "
                             f"of --claim-idle-ms {self.claim_idle_ms}")
        if self.dedupe_window * 1000 < 2 * self.claim_idle_ms:
            # a claimed entry's record must still be there when it is claimed
            raise ValueError(f"--dedupe-window {self.dedupe_window:g} s must be at least "
                             f"twice --claim-idle-ms ({self.claim_idle_ms} ms)")

    @property
    def seen_prefix(self) -> str:
        return f"{self.stream}:seen:{self.group}:"

    @property
    def stats_key(self) -> str:
        return f"{self.stream}:stats:{self.group}"

    @property
    def claim_every(self) -> float:
        """Seconds between two passes of XAUTOCLAIM that found nothing."""
        return min(max(self.claim_idle_ms / 4000.0, 0.05), 5.0)

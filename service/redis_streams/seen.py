"""The dedupe window: which flush carries each event a consumer group has learned.

Before a consumer learns an event it records, in the source Redis, the event's key (its
``id``, or the stream entry id for an event without one) with the id of the flush that will
carry it to the state store (``RedisState.next_flush_id``) and the server's time. Another
consumer meeting the key again (a claimed entry, a replayed event) reads the record and asks
the state store whether that flush is in the state (``stores.redis.staging.settled``).

The records live in one hash per time bucket of ``window`` seconds; lookups read the current
and the previous bucket, so a record is found from ``window`` to 2 x ``window`` seconds after
it was written; then the bucket key expires. The flush ids the records name must outlive
them: the consumer keeps them on the state store for at least 2 x ``window`` (``flush_ttl``).
Memory: about 100 bytes of Redis per event of the last one or two windows.

The check-and-record step is one script call (``seen.lua``), so two consumers meeting one key
at the same time cannot both find it free.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import redis


@dataclass(frozen=True)
class Record:
    """A key's record: the flush that carries (or carried) the event, and when the record
    was written (the source server's clock, ms)."""

    flush_id: str
    written_ms: int
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Record:
        flush_id, _, written = raw.decode().partition(" ")
        return cls(flush_id, int(written), raw)


class SeenWindow:
    def __init__(self, client: redis.Redis, prefix: str, window: float) -> None:
        if window <= 0:
            raise ValueError(f"--dedupe-window must be > 0 seconds, got {window}")
        self.client = client
        self.prefix = prefix
        self.window_ms = max(int(window * 1000), 1)
        source = resources.files(__package__).joinpath("seen.lua").read_text()
        self._script = client.register_script(source)

    def _run(self, mode: str, flush_id: str, args: list[bytes]) -> tuple[int, list[object]]:
        reply = self._script(args=[self.prefix, self.window_ms, mode, flush_id, *args])
        return int(reply[0]), list(reply[1:])

    def check(self, keys: list[bytes], flush_id: str) -> tuple[int, list[Record | None]]:
        """(server time in ms, per key the record found, or None: the key was free and is
        now recorded as carried by ``flush_id``). ``keys`` must be distinct."""
        if not keys:
            return 0, []
        now, found = self._run("check", flush_id, keys)
        return now, [None if v is None else Record.parse(v) for v in found]  # type: ignore[arg-type]

    def take(self, records: list[tuple[bytes, Record]], flush_id: str) -> list[bool]:
        """Record ``flush_id`` for each key whose record is still the one given (a stale
        record of a consumer that died); per key, whether this consumer won it."""
        if not records:
            return []
        args = [x for key, rec in records for x in (key, rec.raw)]
        _, won = self._run("take", flush_id, args)
        return [bool(w) for w in won]

    def release(self, keys: list[bytes], flush_id: str) -> None:
        """Forget the records ``flush_id`` holds for ``keys`` (events refused by the parser:
        a corrected event sent again under the same id must not pass for a duplicate)."""
        if keys:
            self._run("release", flush_id, keys)

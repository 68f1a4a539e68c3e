"""The write-ahead log of a data directory (``log``: appending and group commit;
``segments``: the files and reading them back), and the kinds of record it holds."""

from __future__ import annotations

from enum import IntEnum

from .log import FSYNC_POLICIES, FsyncPolicy, WriteAheadLog
from .segments import Record


class Kind(IntEnum):
    """What a record holds; the one list of them (a replay dispatches on it)."""

    #: a /v1/train body learned whole (``service.learner.records``)
    BATCH = 1
    #: the good lines of a piece of a /v1/train/stream body
    LINES = 2
    #: a /v1/impressions body: impressions scored and remembered (``learner.joining``)
    IMPRESSIONS = 3
    #: a /v1/feedback body: clicks and explicit negatives joined
    FEEDBACK = 4
    #: a /v1/predict body with "log": true (its events with an id are impressions)
    PREDICT_LOG = 6
    #: the join's background tick (its time), logged when it closed impressions
    JOIN_TICK = 5
    #: a shared join's tick: the agreed watermark, the clicks it read (``join.marks``)
    JOIN_MARKS = 7
    #: a Redis flush prepared: its id, the log position it covers, its calls
    FLUSH = 10
    #: that flush confirmed by every shard
    FLUSH_DONE = 11


__all__ = ["FSYNC_POLICIES", "FsyncPolicy", "Kind", "Record", "WriteAheadLog"]

"""Start-up from a data directory: the variants and keys of the checkpoint, then the log
after it learned again (``training`` with ``record=None``: parsed and learned exactly as
when the requests came, leniently, so a setting changed since cannot refuse them)."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from ..errors import Problem
from ..join.marks import Tick
from ..settings import Settings
from ..stores import StateStore
from ..stores.base import Opened
from ..stores.wal import Kind, Record
from ..variants import Variant, open_variants, parse_variants, resume_variants
from .idempotency import IdempotencyKeys
from .joining import Joining, fingerprint
from .records import TrainRecord
from .training import Training

log = logging.getLogger(__name__)

KEYS_PART = "idempotency"


def variants(settings: Settings, opened: Opened) -> list[Variant]:
    """The shadow variants: from the checkpoint where it has them, else from the folder of
    ``--model-in``, else empty."""
    specs = parse_variants(settings.variants)
    if opened.checkpoint is not None:
        return resume_variants(specs, opened.model, opened.checkpoint.variants)
    model_in = settings.model_in
    return open_variants(specs, opened.model,
                         None if model_in is None else Path(model_in).parent)


def restore_keys(keys: IdempotencyKeys, opened: Opened) -> None:
    if opened.checkpoint is not None and KEYS_PART in opened.checkpoint.parts:
        keys.load(opened.checkpoint.parts[KEYS_PART])


def replay(training: Training, keys: IdempotencyKeys, store: StateStore,
           records: list[Record], joining: Joining | None = None,
           learned_upto: int = 0) -> int:
    """Learn ``records`` again, in order; returns the events learned. A record that is
    refused now (it never should be) is logged and skipped: the rest still counts. With a
    shared store, a record's idempotency key is claimed again first: a request another
    worker learned meanwhile (its retry reached it) is not learned twice. A join record up
    to ``learned_upto`` (a Redis worker's last flush: its rows are in the shared state)
    rebuilds the pending impressions without learning."""
    events = 0
    for r in records:
        if r.kind in JOIN_KINDS:
            if joining is not None:
                joining.learn = r.seq > learned_upto
            try:
                events += _replay_join(joining, keys, r)
            finally:
                if joining is not None:
                    joining.learn = True
            continue
        if r.kind not in (Kind.BATCH, Kind.LINES):
            continue
        rec = TrainRecord.decode(r.payload)
        fingerprint = zlib.crc32(rec.body) if rec.key else 0
        if rec.key and store.shared:
            claim = store.claim(rec.key, fingerprint)
            if claim is not None and claim.status != "claimed":
                log.info("write-ahead log record %d (Idempotency-Key %r) is not learned "
                         "again: %s elsewhere", r.seq, rec.key, claim.status)
                continue
        try:
            if r.kind == Kind.BATCH:
                done = training.batch(rec.body, None, lenient=True, logged=r.seq)
            else:
                done = training.lines(rec.body, None, lenient=True, logged=r.seq)
        except Problem as exc:
            log.error("write-ahead log record %d could not be learned again: %s", r.seq,
                      exc.detail)
            continue
        events += done.p.size
        if rec.key:
            keys.record(rec.key, fingerprint, rec.at, done.p.size, done.version, done.p)
            store.record_answer(rec.key, fingerprint, done.p.size, done.version, done.p)
    return events


JOIN_KINDS = (Kind.IMPRESSIONS, Kind.PREDICT_LOG, Kind.FEEDBACK, Kind.JOIN_TICK,
              Kind.JOIN_MARKS)


def _replay_join(joining: Joining | None, keys: IdempotencyKeys, r: Record) -> int:
    """A join record again: the events it learned (its Idempotency-Key's answer kept)."""
    if joining is None:
        log.error("write-ahead log record %d is a join request, and the join is off "
                  "(--state/--workers): skipped", r.seq)
        return 0
    before = joining.training.model.rows
    if r.kind == Kind.JOIN_MARKS:
        joining.marks_tick(0.0, logged=Tick.decode(r.payload), seq=r.seq)
        return joining.training.model.rows - before
    rec = TrainRecord.decode(r.payload)
    try:
        fp = fingerprint(Kind(r.kind), rec.body) if rec.key else 0
        if r.kind in (Kind.IMPRESSIONS, Kind.PREDICT_LOG):
            p, u, version, _ = joining.impressions(rec.body, None, rec.at, lenient=True,
                                                   logged=r.seq,
                                                   ids_required=r.kind == Kind.IMPRESSIONS)
            if rec.key:
                keys.record(rec.key, fp, rec.at, p.size, version, np.concatenate([p, u]))
        elif r.kind == Kind.FEEDBACK:
            counts, version, _ = joining.feedback(rec.body, None, rec.at, logged=r.seq)
            if rec.key:
                keys.record(rec.key, fp, rec.at, 0, version, counts)
        else:
            joining.tick(rec.at, None, logged=r.seq)
    except Problem as exc:
        log.error("write-ahead log record %d could not be joined again: %s", r.seq,
                  exc.detail)
    return joining.training.model.rows - before

"""Learn a Redis stream through a consumer group: one JSON event per entry (field
``event``), each entry acknowledged once the deltas it produced are in the state store.

Examples:
  ctr consume --source redis://127.0.0.1:6379 --stream events --group trainers \\
      --state redis://127.0.0.1:7001,redis://127.0.0.1:7002 --alpha 0.2
  ctr consume ... --consumer c2 --exit-when-idle --metrics-json m.json   # a bounded run
  redis-cli XADD events '*' event '{"label":1,"features":{"site":"a.com"},"id":"ev-1"}'

A consumer killed with SIGKILL loses nothing: its pending entries are claimed by another
consumer (XAUTOCLAIM) after --claim-idle-ms, and an event it had already flushed is not
learned twice (its ``id``, or the entry id, is remembered for --dedupe-window seconds, up to
twice that). Malformed entries go to the dead-letter stream with the entry's fields, a
``reason`` and the ``source_id``, and are acknowledged. SIGTERM stops after the batch in
hand, flushed and acknowledged. A group created here starts at the beginning of the stream
(create it with ``XGROUP CREATE events trainers $ MKSTREAM`` to skip the history). The
learner flags (bounded memory's included: ``--admit``, ``--evict-idle``, ``--max-coordinates``
and their ``CTR_`` variables, as ``service.stores.redis.sweep`` describes) must match the
stored model's, as for ``ctr serve``. ``service.redis_streams``
documents the protocol and what it does not cover.

The join: ``--impressions-stream I --clicks-stream C`` (or CTR_IMPRESSIONS_STREAM,
CTR_CLICKS_STREAM) instead of ``--stream``: impression entries and click entries (field
``event``: a JSON event as /v1/impressions and /v1/feedback take it) are fed into the
attribution join of an embedded learner with a data directory, merged by ``ts``, and each
entry is acknowledged once the request carrying it is in the write-ahead log
(``service.redis_streams.joined``)::

  ctr consume --source redis://127.0.0.1:6379 --impressions-stream imps \\
      --clicks-stream clicks --group joiner --data-dir /var/lib/ctr-join \
      --join-window 3600 --alpha 0.2 --model-out model.ctr --exit-when-idle
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from service.learner_options import LearnerOptions

from .serve import add_join_arguments

if TYPE_CHECKING:
    from service.redis_streams import StreamConsumer


def add_arguments(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("stream")
    s.add_argument("--source", required=True, metavar="URL",
                   help="the Redis holding the stream: redis://host:port[/db]")
    s.add_argument("--stream", help="the stream's key (labelled events)")
    s.add_argument("--group", required=True, help="the consumer group (created if missing)")
    s.add_argument("--consumer", default=None, metavar="NAME",
                   help="this consumer's name in the group (default HOSTNAME-PID)")
    s.add_argument("--batch-size", type=int, default=1000,
                   help="entries per read (XREADGROUP COUNT; default 1000)")
    s.add_argument("--block-ms", type=int, default=1000,
                   help="how long a read waits for new entries (default 1000)")
    s.add_argument("--claim-idle-ms", type=int, default=30_000,
                   help="take over another consumer's entries idle this long (XAUTOCLAIM; "
                        "default 30000); above the longest batch + flush")
    s.add_argument("--dead-letter", metavar="STREAM", default="",
                   help="where malformed entries go (default <stream>:dead)")
    s.add_argument("--dedupe-window", type=float, default=600.0, metavar="SECONDS",
                   help="remember learned events' ids this long (found for 1 to 2 windows; "
                        "default 600; at least twice --claim-idle-ms)")
    s.add_argument("--max-events", type=int, default=None, metavar="N",
                   help="stop after reading N entries")
    s.add_argument("--exit-when-idle", action="store_true",
                   help="stop when nothing is left to read and the group has nothing pending")
    s.add_argument("--metrics-json", type=Path,
                   help="write the consumer's figures (learned, duplicates, dead letters, "
                        "progressive logloss, events/s, the group's totals; with "
                        "--admit/--evict-idle/--max-coordinates admitted, refused, evicted "
                        "and live coordinates) as JSON")
    s.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    st = p.add_argument_group("state")
    st.add_argument("--state", metavar="URL",
                    help="the shared state store: redis://host:port[/db][,redis://...] "
                         "(default: the --source URL)")
    st.add_argument("--model-name", help="the model's name in the store (default 'default')")
    st.add_argument("--sync-every-events", type=int, metavar="N",
                    help="flush after N learned rows (default: after every batch)")
    st.add_argument("--sync-every-ms", type=float, metavar="MS",
                    help="flush MS milliseconds after the window's first event (default "
                         "off); at most half of --claim-idle-ms")
    st.add_argument("--buckets", type=int,
                    help="exact-key layout of a new model: hashes its coordinates are "
                         "spread over (default 16384)")
    st.add_argument("--strict", action="store_true", default=None,
                    help="dead-letter events with unknown top-level keys")
    j = p.add_argument_group("the join: an impressions stream and a clicks stream")
    j.add_argument("--impressions-stream", metavar="NAME",
                   default=os.environ.get("CTR_IMPRESSIONS_STREAM") or None,
                   help="impressions to join, one /v1/impressions event per entry "
                        "(CTR_IMPRESSIONS_STREAM); with --clicks-stream, not --stream")
    j.add_argument("--clicks-stream", metavar="NAME",
                   default=os.environ.get("CTR_CLICKS_STREAM") or None,
                   help="clicks (and label-0 closes), one /v1/feedback event per entry "
                        "(CTR_CLICKS_STREAM)")
    j.add_argument("--data-dir", type=Path,
                   help="the write-ahead log and checkpoints entries are acknowledged "
                        "against (required with the join; CTR_DATA_DIR)")
    j.add_argument("--fsync", choices=["always", "everysec", "no"],
                   help="sync the log before acknowledging (always, the default: an "
                        "acknowledged entry survives a power loss) or less often")
    j.add_argument("--snapshot-every", type=float, metavar="SECONDS",
                   help="checkpoint this often when the state changed (default 60)")
    add_join_arguments(j)
    j.add_argument("--model-out", type=Path, metavar="PATH",
                   help="save the model here when the consumer stops")
    LearnerOptions.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    from service.redis_streams import ConsumerError, ConsumerOptions, consume
    from service.settings import Settings

    from . import CommandError
    from .replay import EventProgress
    from .serve import _settings_error, settings_overrides

    joined = bool(args.impressions_stream or args.clicks_stream)
    if joined:
        return run_joined(args)
    if not args.stream:
        raise CommandError("--stream is required (or --impressions-stream and "
                           "--clicks-stream for the join)")
    if args.state is None:
        args.state = args.source
    try:
        settings = Settings(**settings_overrides(args))
    except ValidationError as exc:
        raise CommandError(_settings_error(exc)) from None
    options = ConsumerOptions(
        stream=args.stream, group=args.group,
        consumer=args.consumer or f"{socket.gethostname()}-{os.getpid()}",
        dead_letter=args.dead_letter, batch_size=args.batch_size, block_ms=args.block_ms,
        claim_idle_ms=args.claim_idle_ms, dedupe_window=args.dedupe_window,
        sync_every_events=settings.sync_every_events, sync_every_ms=settings.sync_every_ms,
        max_events=args.max_events, exit_when_idle=args.exit_when_idle)
    progress = None if args.quiet else EventProgress()

    def on_flush(consumer: StreamConsumer) -> None:
        if progress is not None:
            progress.update(consumer.metrics.rows, consumer.metrics.logloss)

    try:
        m = asyncio.run(consume(settings, options, args.source, on_flush=on_flush,
                                handle_signals=True))
    except ConsumerError as exc:
        raise CommandError(str(exc)) from None
    if progress is not None:
        progress.finish()
    if args.metrics_json is not None:
        args.metrics_json.write_text(json.dumps(m, indent=1))
    if not args.quiet:
        print(f"learned {m['learned']:,}  duplicates {m['duplicates']:,}  dead letters "
              f"{m['dead_letters']:,}  deferred {m['deferred']:,}  logloss "
              f"{m['progressive_logloss']:.6f}  {m['events_per_second']:,.0f} events/s  "
              f"(model rows {m['model_rows']:,})", file=sys.stderr)
    return 0


def run_joined(args: argparse.Namespace) -> int:
    from service.redis_streams import ConsumerError, JoinOptions, consume_joined
    from service.settings import Settings

    from . import CommandError
    from .serve import _settings_error, settings_overrides

    if not (args.impressions_stream and args.clicks_stream):
        raise CommandError("the join needs both --impressions-stream and --clicks-stream")
    if args.stream:
        raise CommandError("--stream (labelled events) or the join's two streams, not both")
    try:
        settings = Settings(**settings_overrides(args))
    except ValidationError as exc:
        raise CommandError(_settings_error(exc)) from None
    options = JoinOptions(
        impressions=args.impressions_stream, clicks=args.clicks_stream, group=args.group,
        consumer=args.consumer or f"{socket.gethostname()}-{os.getpid()}",
        dead_letter=args.dead_letter, batch_size=args.batch_size, block_ms=args.block_ms,
        max_events=args.max_events, exit_when_idle=args.exit_when_idle)
    try:
        m = asyncio.run(consume_joined(settings, options, args.source,
                                       model_out=args.model_out, handle_signals=True))
    except ConsumerError as exc:
        raise CommandError(str(exc)) from None
    if args.metrics_json is not None:
        args.metrics_json.write_text(json.dumps(m, indent=1))
    if not args.quiet:
        j = m["join"]
        print(f"impressions {m['impressions']:,}  clicks {m['clicks']:,}  joined "
              f"{j['joined']:,}  pending {j['pending']:,}  duplicates {m['duplicates']:,}  "
              f"dead letters {m['dead_letters']:,}  {m['events_per_second']:,.0f} events/s  "
              f"(model rows {m['model_rows']:,})", file=sys.stderr)
    return 0

"""Delayed feedback: how well each way of learning from impressions-now, clicks-later
predicts, and what the join costs.

    python bench/delayed_feedback.py DATA.tsv [--rows 200000] [--rate 5] [--window 3600]

The TSV's first ``--rows`` rows become a mixed stream of impressions and clicks
(the bench kit's ``gen_events.py``, ``--shared`` default ``../shared``: a row labelled 1
gets one click after a random delay). The stream is cut into requests as ``ctr replay``
sends it (runs of impressions or clicks, ``--batch`` events each) and fed to the service's
join code in process (the learner's ``Joining``, as ``/v1/impressions`` and
``/v1/feedback`` run it, without HTTP).
For each way, the prediction made for each impression when it arrived is scored against
its final label (clicked at all, however late):

- oracle: labels known at impression time, each row learned at once with its label;
- wait: the join's ``wait`` policy (learned when the window closes, label as joined);
- fnw: the join's ``fnw`` policy (fake negatives, importance weights);
- naive: every impression learned at once as a negative, never corrected.

Printed: logloss and calibration (mean p / mean label) of each; the join's events (
impressions + clicks) per second in process, for wait and fnw; bytes per pending impression
at the most pending in the wait run. ``--http``: also the events per second of a real
``ctr serve`` (one worker, memory store, no data directory) fed by ``ctr replay`` at its
default (requests pipelined on one connection, file order kept): the median of
``--http-repeats`` fresh servers, and one run one request at a time for reference
(``--http-streams``: file order, the slices or both).
``--slice S``: also the rates of the stream micro-batched per S seconds of event time
(file order makes requests of ~7 events: impressions and clicks alternate; ``--slice 20``
at ``--rate 50``: ~544 events a request, 1,000 impressions then their slice's clicks, as a
batching producer sends them), each with the seconds of its stages: the pending store
(``JoinState``'s calls, adding rows to the arena included), scoring the impressions,
learning, and the rest (parsing, mostly). ``--cpu``: the in-process rates by the thread's
CPU time.

``--negative-rate R [R ...]`` (e.g. ``1 0.3 0.1``): also ``wait`` with negatives subsampled
at each rate (kept by a hash of the id, learned with weight 1/R): the rows learned, the
seconds spent learning them (the join's ``_learn``: unpacking the rows and the model's
update), the whole run's seconds, the logloss against the final labels, and the logloss and
calibration of the impressions after the first window (scored by a model that has learned
something) against the labels the window can know (a click within the window) -- what
``wait`` learns, so what subsampling must keep calibrated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import DEFAULT_SHARED  # noqa: E402

#: the in-process timings' clock (``--cpu``: the thread's CPU time, steadier than the wall
#: clock on a machine shared with other jobs)
CLOCK = time.perf_counter

from ftrl_core.metrics import logloss  # noqa: E402
from ftrl_core.readers.jsonl import event_ids, parse_event_array  # noqa: E402
from service.join import JoinState  # noqa: E402
from service.learner.fields import FieldNumbering  # noqa: E402
from service.learner.joining import Joining  # noqa: E402
from service.learner.training import Counters, Training  # noqa: E402
from service.learner_options import LearnerOptions  # noqa: E402
from service.stores.memory import MemoryStore  # noqa: E402


def make_events(tsv: Path, rows: int, rate: float, work: Path, shared: Path) -> Path:
    out = work / f"events-{rows}-{rate:g}.jsonl"
    if out.exists():
        return out
    prefix = work / f"prefix-{rows}.tsv"
    with open(tsv, "rb") as src, open(prefix, "wb") as dst:
        for i, line in enumerate(src):
            if i >= rows:
                break
            dst.write(line)
    with open(out, "wb") as fh:
        subprocess.run([sys.executable, str(shared / "bench" / "gen_events.py"), str(prefix),
                        "--rate", str(rate)], stdout=fh, check=True)
    return out


def reslice(events: Path, seconds: float) -> Path:
    """The stream micro-batched as a producer would send it: per ``seconds`` of event
    time, its impressions, then its clicks (a click still follows its impression)."""
    out = events.with_name(f"{events.stem}-slice{seconds:g}.jsonl")
    if out.exists():
        return out
    with open(events, "rb") as src, open(out, "wb") as dst:
        bucket: float | None = None
        imps: list[bytes] = []
        clicks: list[bytes] = []
        for line in src:
            if not line.strip():
                continue
            ts = float(json.loads(line)["ts"])
            b = ts // seconds
            if b != bucket:
                dst.writelines(imps + clicks)
                imps, clicks, bucket = [], [], b
            (imps if b'"impression"' in line else clicks).append(line)
        dst.writelines(imps + clicks)
    return out


def requests_of(path: Path, batch: int) -> tuple[list[tuple[bool, bytes, int]], set[str]]:
    """(is impressions, body, events) in file order; and the ids that were clicked."""
    out: list[tuple[bool, bytes, int]] = []
    clicked: set[str] = set()
    run: list[bytes] = []
    kind: bool | None = None

    def flush() -> None:
        if run:
            out.append((bool(kind), b'{"events":[' + b",".join(run) + b"]}", len(run)))
            run.clear()

    with open(path, "rb") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            imp = b'"type":"impression"' in line or b'"type": "impression"' in line
            if not imp:
                clicked.add(json.loads(line)["id"])
            if imp != kind or len(run) >= batch:
                flush()
                kind = imp
            run.append(line)
    flush()
    return out, clicked


def in_window(path: Path, window: float) -> set[str]:
    """The ids whose click came within ``window`` seconds of their impression."""
    shown: dict[str, float] = {}
    out: set[str] = set()
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            e = json.loads(line)
            if e["type"] == "impression":
                shown[e["id"]] = float(e["ts"])
            elif float(e["ts"]) - shown.get(e["id"], -np.inf) <= window:
                out.add(e["id"])
    return out


def joining(options: LearnerOptions, window: float, policy: str,
            negative_rate: float = 1.0) -> Joining:
    model = options.build_model("jsonl")
    fields = FieldNumbering(model, [], strict=False)
    training = Training(model, fields, [], MemoryStore(), Counters())
    return Joining(training, JoinState(window, policy,  # type: ignore[arg-type]
                                       negative_rate=negative_rate))


class Stages:
    """Seconds (``CLOCK``) a ``Joining`` spends in each stage: a stage is methods of an
    object, wrapped in place. A call made inside another timed call counts for the outer
    one only (``fnw`` scores a click's row itself when it learns it: that is learning)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._depth = 0

    def wrap(self, stage: str, obj: Any, *names: str) -> None:
        self.seconds.setdefault(stage, 0.0)
        for name in names:
            setattr(obj, name, self._timed(stage, getattr(obj, name)))

    def _timed(self, stage: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            start = CLOCK()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += CLOCK() - start
                self._depth -= 1
        return timed


def run_join(reqs: list[tuple[bool, bytes, int]], options: LearnerOptions, window: float,
             policy: str, negative_rate: float = 1.0
             ) -> tuple[list[str], np.ndarray, float, Joining]:
    j = joining(options, window, policy, negative_rate)
    stages = Stages()
    stages.wrap("pending store", j.state, "impressions", "feedback")
    stages.wrap("scoring", j.training.model, "predict")
    stages.wrap("learning", j, "_learn")
    j.stages = stages  # type: ignore[attr-defined]
    ids: list[str] = []
    ps: list[np.ndarray] = []
    fmt = j.training.fields.format
    peak = (0, 0)  # (pending, bytes held), at the most pending
    start = CLOCK()
    for imp, body, _ in reqs:
        if imp:
            p, _, _, _ = j.impressions(body, None, 0.0)
            ps.append(p)
            if j.state.npending > peak[0]:
                peak = (j.state.npending, j.state.bytes_held())
        else:
            j.feedback(body, None, 0.0)
    seconds = CLOCK() - start
    j.peak = peak  # type: ignore[attr-defined]
    for imp, body, _ in reqs:  # the ids, outside the timing
        if imp:
            batch = parse_event_array(body, fmt, require_label=False, ignore_label=True).batch
            ids.extend(str(i) for i in event_ids(batch))
    return ids, np.concatenate(ps), seconds, j


def run_direct(reqs: list[tuple[bool, bytes, int]], options: LearnerOptions,
               clicked: set[str], oracle: bool) -> tuple[list[str], np.ndarray]:
    """Each impression learned at once: with its final label (oracle) or as a negative."""
    model = options.build_model("jsonl")
    fields = FieldNumbering(model, [], strict=False)
    ids: list[str] = []
    ps: list[np.ndarray] = []
    for imp, body, _ in reqs:
        if not imp:
            continue
        batch = parse_event_array(body, fields.format, require_label=False,
                                  ignore_label=True).batch
        these = [str(i) for i in event_ids(batch)]
        p, _ = model.predict(batch)
        batch.labels = np.array([1.0 if oracle and i in clicked else 0.0 for i in these])
        model.learn(batch)
        ids.extend(these)
        ps.append(p)
    return ids, np.concatenate(ps)


def http_rate(events: Path, window: float, policy: str, batch: int,
              concurrency: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from servers import start_server  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), "--alpha", "0.2", "--join-window", str(window),
                              "--join-policy", policy)
        try:
            # timed by ``ctr replay`` itself, from its first request to its last answer (its
            # process start-up, about a second, is the client's, not the service's)
            out = Path(tmp) / "replay.json"
            subprocess.run([sys.executable, "-m", "service.cli", "replay", str(events),
                            "--url", server.url, "--batch-size", str(batch),
                            "--concurrency", str(concurrency), "--quiet", "--metrics-json",
                            str(out)],
                           check=True, cwd=HERE.parent)
            seconds = float(json.loads(out.read_text())["seconds"])
            import httpx

            status = httpx.get(server.url + "/v1/join").json()
        finally:
            server.stop()
    n = status["impressions"] + status["joined"] + status["late"] + status["unknown"] \
        + status["repeated_clicks"]
    return {"policy": policy, "events": n, "seconds": seconds, "events_per_s": n / seconds,
            "concurrency": concurrency}


def negative_rates(reqs: list[tuple[bool, bytes, int]], options: LearnerOptions,
                   args: argparse.Namespace, events: Path, clicked: set[str]
                   ) -> list[dict[str, Any]]:
    """``wait`` with negatives subsampled at each of ``args.negative_rate``."""
    known = in_window(events, args.window)
    first = int(args.rate * args.window)  # impressions of the first window
    out = []
    print(f"wait, negatives subsampled (after the first window: impressions {first}+, "
          f"against the clicks within the window):")
    print(f"{'r':>5} {'rows learned':>13} {'learn s':>8} {'run s':>7} {'logloss':>9} "
          f"{'ll after':>9} {'calib after':>11}")
    for r in args.negative_rate:
        ids, p, seconds, j = run_join(reqs, options, args.window, "wait", r)
        y = np.array([1.0 if i in clicked else 0.0 for i in ids])
        yk = np.array([1.0 if i in known else 0.0 for i in ids[first:]])
        after = p[first:]
        m = {"negative_rate": r, "rows_learned": j.training.counters.learned,
             "learn_seconds": j.stages.seconds["learning"],  # type: ignore[attr-defined]
             "seconds": seconds,
             "negatives_dropped": j.state.counts["negatives_dropped"],
             "logloss": logloss(y, p), "logloss_after_first_window": logloss(yk, after),
             "calibration_after_first_window": float(after.mean() / yk.mean())}
        out.append(m)
        print(f"{r:5g} {m['rows_learned']:13,} {m['learn_seconds']:8.1f} {seconds:7.1f} "
              f"{m['logloss']:9.5f} {m['logloss_after_first_window']:9.5f} "
              f"{m['calibration_after_first_window']:11.4f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tsv", type=Path)
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED,
                    help="the bench kit's directory (gen_events.py)")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=5.0,
                    help="impressions per second of event time (gen_events.py)")
    ap.add_argument("--window", type=float, default=3600.0)
    ap.add_argument("--batch", type=int, default=1000, help="events per request")
    ap.add_argument("--alpha", type=float, default=0.2)
    ap.add_argument("--l1", type=float, default=1.0)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "delayed_fb")
    ap.add_argument("--http", action="store_true", help="also time a real server")
    ap.add_argument("--http-repeats", type=int, default=3,
                    help="fresh servers a stream and policy (pipelined replay)")
    ap.add_argument("--http-streams", choices=("both", "slices", "file"), default="both",
                    help="which streams --http times (the whole syn1m stream in file "
                         "order is ~6 minutes of small requests)")
    ap.add_argument("--slice", type=float, default=0.0,
                    help="also time the stream sent in slices of this many seconds of "
                         "event time (impressions, then clicks, of each slice)")
    ap.add_argument("--negative-rate", type=float, nargs="+", metavar="R",
                    help="also wait with negatives subsampled at each rate (e.g. 1 0.3 0.1)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    ap.add_argument("--cpu", action="store_true",
                    help="time the in-process runs by the thread's CPU time (not HTTP's)")
    args = ap.parse_args()
    if args.http and args.http_streams == "slices" and not args.slice:
        ap.error("--http-streams slices needs --slice S")
    if args.cpu:
        global CLOCK
        CLOCK = time.thread_time
    args.work.mkdir(parents=True, exist_ok=True)
    events = make_events(args.tsv, args.rows, args.rate, args.work, args.shared)
    reqs, clicked = requests_of(events, args.batch)
    n_imps = sum(n for imp, _, n in reqs if imp)
    n_clicks = sum(n for imp, _, n in reqs if not imp)
    options = LearnerOptions(alpha=args.alpha, l1=args.l1)
    print(f"{events.name}: {n_imps} impressions, {n_clicks} clicks, window {args.window:g} s,"
          f" {len(reqs)} requests of up to {args.batch} events")
    results: dict[str, Any] = {"rows": args.rows, "rate": args.rate, "window": args.window,
                               "impressions": n_imps, "clicks": n_clicks, "ways": {}}
    runs: dict[str, tuple[list[str], np.ndarray]] = {}
    runs["oracle"] = run_direct(reqs, options, clicked, oracle=True)
    for policy in ("wait", "fnw"):
        ids, p, seconds, j = run_join(reqs, options, args.window, policy)
        runs[policy] = (ids, p)
        status = j.state.status()
        results["ways"][policy] = {
            "events_per_s": (n_imps + n_clicks) / seconds, "seconds": seconds,
            "peak_pending": j.peak[0],  # type: ignore[attr-defined]
            "bytes_per_pending": j.peak[1] / max(1, j.peak[0]),  # type: ignore[attr-defined]
            "joined": status["joined"],
            "late": status["late"]}
    runs["naive"] = run_direct(reqs, options, clicked, oracle=False)
    print(f"{'way':8} {'logloss':>9} {'calib':>7} {'events/s':>10}  (file order: "
          f"requests of ~{(n_imps + n_clicks) / len(reqs):.1f} events)")
    for way in ("oracle", "wait", "fnw", "naive"):
        ids, p = runs[way]
        y = np.array([1.0 if i in clicked else 0.0 for i in ids])
        m = results["ways"].setdefault(way, {})
        m.update(logloss=logloss(y, p), calibration=float(p.mean() / y.mean()))
        shown = f"{m['events_per_s']:10.0f}" if "events_per_s" in m else f"{'':>10}"
        print(f"{way:8} {m['logloss']:9.5f} {m['calibration']:7.3f} {shown}")
    w = results["ways"]["wait"]
    print(f"wait: at most {w['peak_pending']} impressions pending, "
          f"{w['bytes_per_pending']:.0f} bytes each then; joined {w['joined']}, "
          f"late {w['late']}")
    if args.negative_rate:
        results["negative_rates"] = negative_rates(reqs, options, args, events, clicked)
    streams = [("file order", events)]
    if args.slice:
        sliced = reslice(events, args.slice)
        streams.append((f"{args.slice:g} s slices", sliced))
        sreqs, _ = requests_of(sliced, args.batch)
        for policy in ("wait", "fnw"):
            _, _, seconds, sj = run_join(sreqs, options, args.window, policy)
            rate = (n_imps + n_clicks) / seconds
            parts = dict(sj.stages.seconds)  # type: ignore[attr-defined]
            parts["the rest (parsing, mostly)"] = seconds - sum(parts.values())
            results["ways"][policy][f"events_per_s_slice{args.slice:g}"] = rate
            results["ways"][policy][f"stage_seconds_slice{args.slice:g}"] = parts
            print(f"in process ({policy}, {args.slice:g} s slices: {len(sreqs)} requests of "
                  f"~{(n_imps + n_clicks) / len(sreqs):.0f} events): {rate:.0f} events/s; "
                  f"{seconds:.2f} s: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    if args.http:
        # ``ctr replay``'s default: requests pipelined on one connection (order kept), so
        # the server is what is timed; once one at a time too, for reference
        timed = {"both": streams, "slices": streams[1:], "file": streams[:1]}[args.http_streams]
        for name, stream in timed:
            for policy in ("wait", "fnw"):
                fresh = [http_rate(stream, args.window, policy, args.batch, 4)
                         for _ in range(args.http_repeats)]
                rates = sorted(r["events_per_s"] for r in fresh)
                one = http_rate(stream, args.window, policy, args.batch, 1)
                h = {"stream": name, "policy": policy, "events": fresh[0]["events"],
                     "events_per_s": rates[len(rates) // 2], "min": rates[0],
                     "max": rates[-1], "one_at_a_time": one["events_per_s"]}
                results.setdefault("http", []).append(h)
                print(f"http ({policy}, {name}, ctr replay, one worker): {h['events']} events;"
                      f" pipelined median {h['events_per_s']:.0f}/s ({h['min']:.0f}-"
                      f"{h['max']:.0f}, {len(fresh)} fresh servers); one request at a time "
                      f"{h['one_at_a_time']:.0f}/s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

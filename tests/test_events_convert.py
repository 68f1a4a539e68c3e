"""The compiled file-to-event-JSON converter (``ftrl_core.readers.events``) against a slow
Python reference on tricky bytes, and against the readers: the events it writes must give
the server exactly the features ``ctr train`` gets from the file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import numpy as np
import pytest
from datagen import criteo_lines
from hypothesis import given, settings
from hypothesis import strategies as st

from ftrl_core.fields import FieldRegistry
from ftrl_core.readers import BadLineError, FeatureOptions, Reader, make_format
from ftrl_core.readers.criteo import FIELDS
from ftrl_core.readers.eventlines import JsonLinesEventReader, VWEventReader, vw_event
from ftrl_core.readers.events import EventBatch
from ftrl_core.readers.eventsource import DelimitedEventReader, open_event_reader
from ftrl_core.readers.jsonl import JsonlFormat, parse_event_array

# -- the reference --------------------------------------------------------------------------


class RefBad(Exception):
    def __init__(self, line: int, field: str) -> None:
        self.line, self.field = line, field
        super().__init__(f"line {line}: {field}")


def _label(raw: bytes) -> float | None:
    return {b"0": 0.0, b"1": 1.0, b"-1": 0.0}.get(raw)


def reference(data: bytes, fmt: str, labels: bool = True, skip: bool = False
              ) -> tuple[list[dict], list[float], list[int], list[int]]:
    """Events, labels, line numbers and skipped line numbers, the slow and obvious way."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    first = 1
    if fmt == "criteo":
        sep, names = b"\t", ["label", *FIELDS]
    else:
        sep, first = b",", 2
        names = lines.pop(0).decode("utf-8-sig").rstrip("\r").split(",")
    events, ys, numbers, skipped = [], [], [], []
    for number, raw in enumerate(lines, first):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            continue
        try:
            ev, y = _ref_row(raw, number, sep, names, fmt, labels)
        except RefBad:
            if not skip:
                raise
            skipped.append(number)
            continue
        events.append(ev)
        ys.append(y)
        numbers.append(number)
    return events, ys, numbers, skipped


def _ref_row(raw: bytes, number: int, sep: bytes, names: list[str], fmt: str,
             labels: bool) -> tuple[dict, float]:
    cols = raw.split(sep)
    cnames = names
    label_name = "label" if fmt == "criteo" else "click"
    if fmt == "criteo" and len(cols) == len(names) - 1:
        cnames = names[1:]
    elif len(cols) != len(names):
        raise RefBad(number, "")
    y = math.nan
    if label_name in cnames:
        v = _label(cols[cnames.index(label_name)])
        if v is None:
            raise RefBad(number, label_name)
        y = v
    elif labels:
        raise RefBad(number, label_name)
    feats = {}
    for name, value in zip(cnames, cols, strict=True):
        if name in (label_name, "id") and (fmt == "avazu" or name == "label"):
            continue
        if fmt == "criteo" and name.startswith("I") and value:
            digits = value[1:] if value.startswith(b"-") else value
            if not digits or not digits.isdigit():
                raise RefBad(number, name)
        try:
            feats[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise RefBad(number, name) from None
    ev: dict = {"label": int(y), "features": feats} if labels else {"features": feats}
    return ev, y


def convert(path: Path, fmt: str, batch_size: int = 1000, labels: bool = True,
            skip: bool = False, chunk_bytes: int = 1 << 20, limit: int | None = None
            ) -> tuple[list[EventBatch], DelimitedEventReader]:
    r = DelimitedEventReader(str(path), fmt, batch_size, labels, skip, limit, chunk_bytes)
    return list(r), r


def decoded(batches: list[EventBatch]) -> tuple[list[dict], list[float], list[int]]:
    events, ys, lines = [], [], []
    for b in batches:
        body = msgspec.json.decode(b.body)  # strict JSON: raw controls, bad UTF-8 refused
        assert body == json.loads(b.body)
        assert len(body["events"]) == b.rows
        for i, ev in enumerate(body["events"]):
            a, z = b.spans[i]
            assert json.loads(b.body[a:z]) == ev
        events += body["events"]
        ys += b.labels.tolist()
        lines += b.lines.tolist()
    return events, ys, lines


def same_labels(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all((x == y) or (math.isnan(x) and math.isnan(y))
                                    for x, y in zip(a, b, strict=True))


# -- tricky data ----------------------------------------------------------------------------

TRICKY_TOKENS = [b"", b"a\"b", b"back\\slash", b"\\u0041", b"\x01\x1f", b"x\ry", b"\x7f",
                 b"caf\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"'single'", b"{}[],:",
                 b" spaced ", b"\"", b"\\"]


def tricky_criteo(rows: int = 300, seed: int = 3) -> bytes:
    rng = np.random.default_rng(seed)
    out = []
    for r in range(rows):
        ints = [b"" if rng.random() < 0.2 else str(int(rng.integers(-5, 10**6))).encode()
                for _ in range(13)]
        cats = [TRICKY_TOKENS[int(rng.integers(len(TRICKY_TOKENS)))] for _ in range(26)]
        label = [b"0", b"1", b"-1"][r % 3]
        cols = ([] if r % 17 == 5 else [label]) + ints + cats
        out.append(b"\t".join(cols) + (b"\r\n" if r % 5 == 0 else b"\n"))
        if r % 23 == 0:
            out.append(b"\n")
    return b"".join(out)


@pytest.mark.parametrize("chunk,batch", [(1 << 20, 1000), (64, 7), (300, 1)])
def test_criteo_tricky_matches_reference(tmp_path: Path, chunk: int, batch: int) -> None:
    data = tricky_criteo()
    path = tmp_path / "t.tsv"
    path.write_bytes(data)
    exp = reference(data, "criteo", labels=False)
    batches, reader = convert(path, "criteo", batch, labels=False, chunk_bytes=chunk)
    events, ys, lines = decoded(batches)
    assert events == exp[0]
    assert same_labels(ys, exp[1])
    assert lines == exp[2]
    assert all(b.rows == batch for b in batches[:-1])
    assert reader.rows == len(exp[0])


def test_criteo_training_needs_labels_and_names_the_line(tmp_path: Path) -> None:
    data = tricky_criteo()
    path = tmp_path / "t.tsv"
    path.write_bytes(data)
    with pytest.raises(RefBad) as ref:
        reference(data, "criteo", labels=True)
    with pytest.raises(BadLineError) as err:
        convert(path, "criteo", 10)
    assert err.value.bad.line == ref.value.line
    assert err.value.bad.field == "label"
    assert f"{path}:{ref.value.line}" in str(err.value)
    exp = reference(data, "criteo", labels=True, skip=True)
    batches, reader = convert(path, "criteo", 10, skip=True, chunk_bytes=128)
    events, ys, lines = decoded(batches)
    assert (events, ys, lines) == exp[:3]
    assert [b.line for b in reader.bad_lines] == exp[3]


@pytest.mark.parametrize("bad,field", [
    (b"1\t" + b"\t" * 37 + b"\n", "label"),  # 39 columns: the unlabeled layout
    (b"1\t" + b"\t" * 36 + b"\n", ""),
    (b"2" + b"\t" * 39 + b"\n", "label"),
    (b"1\tx" + b"\t" * 38 + b"\n", "I1"),
    (b"1\t\t-" + b"\t" * 37 + b"\n", "I2"),
    (b"1" + b"\t" * 14 + b"\xff" + b"\t" * 25 + b"\n", "C1"),
    (b"1" + b"\t" * 14 + b"\xc0\x80" + b"\t" * 25 + b"\n", "C1"),  # overlong
    (b"1" + b"\t" * 14 + b"\xed\xa0\x80" + b"\t" * 25 + b"\n", "C1"),  # surrogate
    (b"1" + b"\t" * 39 + b"\xe2\x82\n", "C26"),  # truncated sequence
    (b"1" + b"\t" * 40 + b"\n", ""),
])
def test_criteo_bad_lines(tmp_path: Path, bad: bytes, field: str) -> None:
    good = "\n".join(criteo_lines(5, seed=1)).encode() + b"\n"
    path = tmp_path / "b.tsv"
    path.write_bytes(good + bad + good)
    with pytest.raises(BadLineError) as err:
        convert(path, "criteo")
    assert (err.value.bad.line, err.value.bad.field) == (6, field)
    batches, reader = convert(path, "criteo", 3, skip=True)
    assert [b.line for b in reader.bad_lines] == [6]
    assert decoded(batches)[2] == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]


def test_avazu_matches_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    head = b"\xef\xbb\xbfid,click,hour,C1,site_id,app_id\r\n"
    rows = []
    for r in range(200):
        toks = [TRICKY_TOKENS[int(rng.integers(len(TRICKY_TOKENS)))].replace(b",", b";")
                for _ in range(4)]
        rows.append(b",".join([str(r).encode(), b"01"[r % 2:r % 2 + 1], *toks]) + b"\n")
    data = head + b"".join(rows)
    path = tmp_path / "a.csv"
    path.write_bytes(data)
    exp = reference(data, "avazu", labels=True)
    batches, _ = convert(path, "avazu", 64, chunk_bytes=100)
    events, ys, lines = decoded(batches)
    assert list(events[0]["features"]) == ["hour", "C1", "site_id", "app_id"]
    assert (events, ys, lines) == exp[:3]


def test_limit_and_batches(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv"
    path.write_text("\n".join(criteo_lines(250, seed=2)) + "\n")
    batches, reader = convert(path, "criteo", 100, limit=230, chunk_bytes=4096)
    assert [b.rows for b in batches] == [100, 100, 30]
    assert reader.rows == 230
    smaller = batches[1].without([0, 5, 99])
    assert smaller.rows == 97
    evs = json.loads(smaller.body)["events"]
    full = json.loads(batches[1].body)["events"]
    assert evs == [e for i, e in enumerate(full) if i not in (0, 5, 99)]
    assert smaller.lines.tolist() == [n for i, n in enumerate(batches[1].lines) if
                                      i not in (0, 5, 99)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=6).filter(lambda b: b"\t" not in b
                                                      and b"\n" not in b),
                         min_size=26, max_size=26), min_size=1, max_size=8))
def test_criteo_random_bytes(tmp_path_factory: pytest.TempPathFactory,
                             rows: list[list[bytes]]) -> None:
    data = b"".join(b"1" + b"\t" * 13 + b"\t" + b"\t".join(r) + b"\n" for r in rows)
    path = tmp_path_factory.mktemp("r") / "r.tsv"
    path.write_bytes(data)
    exp = reference(data, "criteo", skip=True)
    batches, reader = convert(path, "criteo", 3, skip=True, chunk_bytes=64)
    assert decoded(batches) == tuple(exp[:3])
    assert [b.line for b in reader.bad_lines] == exp[3]


# -- the same features as the file readers ---------------------------------------------------


def _reader_keys(path: Path, fmt: str) -> tuple[list[np.ndarray], np.ndarray]:
    reg = FieldRegistry()
    batches = list(Reader(path, make_format(fmt, reg, FeatureOptions())))
    keys = [b.keys[b.indptr[i]:b.indptr[i + 1]] for b in batches for i in range(b.rows)]
    return keys, np.concatenate([b.labels for b in batches])


def _event_keys(batches: list[EventBatch]) -> tuple[list[np.ndarray], np.ndarray]:
    fmt = JsonlFormat(FieldRegistry(), FeatureOptions())
    keys, labels = [], []
    for b in batches:
        res = parse_event_array(b.body, fmt, require_label=False)
        assert res.ok, res.errors
        bt = res.batch
        keys += [bt.keys[bt.indptr[i]:bt.indptr[i + 1]] for i in range(bt.rows)]
        labels.append(bt.labels)
    return keys, np.concatenate(labels)


@pytest.mark.parametrize("fmt", ["criteo", "avazu", "vw"])
def test_events_give_the_readers_features(tmp_path: Path, fmt: str) -> None:
    lines = criteo_lines(300, seed=4, missing=0.2)
    if fmt == "criteo":
        path = tmp_path / "f.tsv"
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "avazu":
        path = tmp_path / "f.csv"
        rows = ["id,click,hour,C1,site_id,site_domain"]
        rows += [f"{i},{ln.split(chr(9))[0]},{','.join(ln.split(chr(9))[14:18])}"
                 for i, ln in enumerate(lines)]
        path.write_text("\n".join(rows) + "\n")
    else:
        path = tmp_path / "f.vw"
        rows = [f"{'1' if ln[0] == '1' else '-1'} 't{i}|a "
                f"{' '.join(t or 'na' for t in ln.split(chr(9))[14:18])}"
                f" |b q{i % 7} |c {ln.split(chr(9))[20] or 'none'} | dflt"
                for i, ln in enumerate(lines)]
        path.write_text("\n".join(rows) + "\n")
    exp_keys, exp_labels = _reader_keys(path, fmt)
    got_keys, got_labels = _event_keys(list(open_event_reader(str(path), "auto", 128)))
    assert len(got_keys) == len(exp_keys) == 300
    for a, b in zip(got_keys, exp_keys, strict=True):
        assert sorted(a.tolist()) == sorted(b.tolist())
    np.testing.assert_array_equal(got_labels, exp_labels)


# -- JSON lines and VW -----------------------------------------------------------------------


def test_jsonl_lines_pass_through_unchanged(tmp_path: Path) -> None:
    lines = [b'{"label": 1, "features": {"s": "a\\u00e9", "p": 0.1}}',
             b'{"features": {"s": "b"}, "label": true, "weight": 2}',
             b'  {"label": -1, "features": {"t": ["x", "y"]}, "id": "e3"}  ']
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    batches = list(JsonLinesEventReader(str(path), 2))
    assert [b.rows for b in batches] == [2, 1]
    assert batches[0].body == b'{"events":[' + lines[0] + b"," + lines[1] + b"]}"
    assert batches[1].labels.tolist() == [0.0]
    assert batches[1].lines.tolist() == [3]


def test_jsonl_bad_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text('{"label": 1, "features": {"a": "x"}}\n{"label": 1, "features": \n'
                    '{"features": {"a": "x"}}\n[1]\n{"label": 0, "features": {"a": "y"}}\n')
    with pytest.raises(BadLineError) as err:
        list(JsonLinesEventReader(str(path), 10))
    assert err.value.bad.line == 2
    r = JsonLinesEventReader(str(path), 10, skip_bad_lines=True)
    batches = list(r)
    assert [b.line for b in r.bad_lines] == [2, 3, 4]
    assert batches[0].lines.tolist() == [1, 5]
    assert json.loads(batches[0].body)["events"][1]["features"] == {"a": "y"}


def test_vw_refuses_values_other_than_one(tmp_path: Path) -> None:
    path = tmp_path / "v.vw"
    path.write_text("1 |a x y:1 z:0\n0 |b w:0.5\n")
    with pytest.raises(BadLineError) as err:
        list(VWEventReader(str(path)))
    assert err.value.bad.line == 2 and "value 0.5" in str(err.value)
    assert vw_event("1 |a x y:1 z:0")[0] == {"label": 1, "features": {"a": ["x", "y"]}}
    assert vw_event("1|a x", need_label=False)[0] == {"id": "1", "features": {"a": ["x"]}}
    # an empty namespace stays (the reader registers its field all the same)
    assert vw_event("1 |a |b x")[0]["features"] == {"a": [], "b": ["x"]}
    assert vw_event("-1 2 'e| x |n:1 q")[0] == {
        "label": 0, "weight": 2.0, "id": "e", "features": {" ": ["x"], "n": ["q"]}}

"""JSON events: the compiled scanner against msgspec's decoding of the same bytes, the
service entry points ``parse_events``/``parse_event_array``, and Criteo rows sent as JSON."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import msgspec
import numpy as np
import pytest
from datagen import criteo_lines
from test_readers import (
    BIAS_HASH,
    RefRow,
    batch_rows,
    read_all,
    ref_criteo,
    ref_event,
    ref_key,
    ref_token,
    write,
)

from ftrl_core.fields import FieldRegistry
from ftrl_core.hashing import field_seed
from ftrl_core.limits import MAX_ABS_VALUE
from ftrl_core.readers import FeatureOptions
from ftrl_core.readers.criteo import FIELDS as CRITEO_FIELDS
from ftrl_core.readers.jsonl import (
    EventsResult,
    JsonlFormat,
    event_ids,
    parse_event_array,
    parse_events,
)
from ftrl_core.readers.rows import (
    E_EMPTY_FEATURES,
    E_FIELD_NAME,
    E_LABEL,
    E_MISSING_LABEL,
    E_NUMBER,
    E_SYNTAX,
    E_TYPE,
    E_UNKNOWN_KEY,
    E_WEIGHT,
)

ALPHABET = ["a", "b", "Z", "0", " ", "-", '"', "\\", "/", "\n", "\t", "\x01", "\x7f", "é", "ß",
            "中", "文", "😀", "🚀", "\u2028", "\ufeff"]


def rand_text(rng: np.random.Generator, n_max: int = 8) -> str:
    return "".join(ALPHABET[i] for i in rng.integers(0, len(ALPHABET), rng.integers(0, n_max)))


def name_text(rng: np.random.Generator) -> str:
    text = "".join(c for c in rand_text(rng, 6) if not (ord(c) < 32 or 127 <= ord(c) < 160))
    return text or "e"


def rand_number(rng: np.random.Generator) -> int | float:
    """A number within the readers' limit (+-MAX_ABS_VALUE: beyond it is E_NUMBER)."""
    k = rng.integers(0, 6)
    if k == 0:
        return int(rng.integers(-1000, 1000))
    if k == 1:  # all 53 bits of the mantissa in use, 17 significant digits
        return int(rng.integers(-2**62, 2**62)) / 2.0**33
    if k == 2:
        return float(rng.normal() * 10.0 ** rng.integers(-30, 8))
    if k == 3:
        bits = rng.integers(0, 2**63, dtype=np.int64).astype(np.uint64) | np.uint64(
            rng.integers(0, 2) << 63)
        v = float(bits.view(np.float64))
        return v if abs(v) <= MAX_ABS_VALUE else 1.5
    if k == 4:
        return 0.0
    return float(rng.random())


def rand_event(rng: np.random.Generator, fields: list[str]) -> dict[str, object]:
    feats: dict[str, object] = {}
    for _ in range(rng.integers(1, 8)):
        name = fields[rng.integers(0, len(fields))]
        k = rng.integers(0, 6)
        if k == 0:
            feats[name] = rand_text(rng)
        elif k == 1:
            feats[name] = [rand_text(rng) for _ in range(rng.integers(0, 4))]
        elif k == 2:
            feats[name] = rand_number(rng)
        elif k == 3:
            feats[name] = None
        elif k == 4:
            feats[name] = ""
        else:
            feats[name] = f"v{rng.integers(0, 9)}"
    ev: dict[str, object] = {"features": feats}
    lab = rng.integers(0, 9)
    if lab < 7:
        ev["label"] = [0, 1, 0.0, 1e0, 0, None, 1.0][lab]
    if rng.random() < 0.3:
        ev["weight"] = [None, 0, 2, 0.25, 1e-300][rng.integers(0, 5)]
    if rng.random() < 0.5:
        ev["id"] = rand_text(rng, 12) if rng.random() < 0.9 else None
    if rng.random() < 0.2:
        ev["extra"] = {"nested": [1, {"x": [None, True, "s"]}], "n": -0.5e-7}
    keys = list(ev)
    rng.shuffle(keys)
    return {k: ev[k] for k in keys}


def encode(ev: object, rng: np.random.Generator) -> bytes:
    k = rng.integers(0, 3)
    if k == 0:
        return msgspec.json.encode(ev)
    if k == 1:
        return json.dumps(ev, ensure_ascii=True).encode()
    return json.dumps(ev, ensure_ascii=False, separators=(" ,\t", " :  ")).encode()


MUTATIONS = {
    # name: (raw edit of an encoded event, expected code); the event has "features": {"m": 7}
    "bool": (lambda b: b.replace(b'"m": 7', b'"m": true'), E_TYPE),
    "nested": (lambda b: b.replace(b'"m": 7', b'"m": {"a": 1}'), E_TYPE),
    "list_number": (lambda b: b.replace(b'"m": 7', b'"m": ["a", 3]'), E_TYPE),
    "list_null": (lambda b: b.replace(b'"m": 7', b'"m": ["a", null]'), E_TYPE),
    "overflow": (lambda b: b.replace(b'"m": 7', b'"m": -1.5e400'), E_NUMBER),
    "too_large": (lambda b: b.replace(b'"m": 7', b'"m": 1000000000.0000001'), E_NUMBER),
    "heavy": (lambda b: b.replace(b'"m": 7}', b'"m": 7}, "weight": 1e200'), E_WEIGHT),
    "label": (lambda b: b.replace(b'"m": 7}', b'"m": 7}, "label": 2'), E_LABEL),
    "label_str": (lambda b: b.replace(b'"m": 7}', b'"m": 7}, "label": "1"'), E_LABEL),
    "label_minus_one": (lambda b: b.replace(b'"m": 7}', b'"m": 7}, "label": -1'), E_LABEL),
    "label_true": (lambda b: b.replace(b'"m": 7}', b'"m": 7}, "label": true'), E_LABEL),
    "label_nan": (lambda b: b.replace(b'"m": 7}', b'"m": 7}, "label": NaN'), E_SYNTAX),
    "name_control": (lambda b: b.replace(b'"m": 7', b'"m\\u0007": 7'), E_FIELD_NAME),
    "name_c1": (lambda b: b.replace(b'"m": 7', b'"m\xc2\x85": 7'), E_FIELD_NAME),
    "name_long": (lambda b: b.replace(b'"m": 7', b'"' + b"m" * 257 + b'": 7'), E_FIELD_NAME),
    "name_empty": (lambda b: b.replace(b'"m": 7', b'"": 7'), E_FIELD_NAME),
    "name_reserved": (lambda b: b.replace(b'"m": 7', b'"(overflow)": 7'), E_FIELD_NAME),
    "weight": (lambda b: b.replace(b'"m": 7}', b'"m": 7}, "weight": -0.5'), E_WEIGHT),
    "empty": (lambda b: b.replace(b'{"m": 7}', b"{}"), E_EMPTY_FEATURES),
    "utf8": (lambda b: b.replace(b'"m": 7', b'"m": "\xff"'), E_SYNTAX),
    "overlong": (lambda b: b.replace(b'"m": 7', b'"m": "\xc0\xaf"'), E_SYNTAX),
    "surrogate": (lambda b: b.replace(b'"m": 7', b'"m": "\\ud800x"'), E_SYNTAX),
    "low_surrogate": (lambda b: b.replace(b'"m": 7', b'"m": "\\udc00"'), E_SYNTAX),
    "control": (lambda b: b.replace(b'"m": 7', b'"m": "a\tb"'), E_SYNTAX),
    "escape": (lambda b: b.replace(b'"m": 7', b'"m": "\\x"'), E_SYNTAX),
    "nan": (lambda b: b.replace(b'"m": 7', b'"m": NaN'), E_SYNTAX),
    "infinity": (lambda b: b.replace(b'"m": 7', b'"m": -Infinity'), E_SYNTAX),
    "leading_zero": (lambda b: b.replace(b'"m": 7', b'"m": 07'), E_SYNTAX),
    "trailing_comma": (lambda b: b.replace(b'"m": 7', b'"m": 7,'), E_SYNTAX),
    "garbage": (lambda b: b + b" x", E_SYNTAX),
    "unquoted": (lambda b: b.replace(b'"m": 7', b"m: 7"), E_SYNTAX),
    "type_then_syntax": (lambda b: b.replace(b'"m": 7', b'"m": true, "k": tru'), E_SYNTAX),
}


def test_random_events_agree_with_msgspec_and_the_reference() -> None:
    rng = np.random.default_rng(12)
    # field names without control characters (those are E_FIELD_NAME: see MUTATIONS)
    fields = [name_text(rng) for _ in range(30)] + ["f1", "f2", "é", "\\", "m" * 256]
    lines: list[bytes] = []
    expect: list[int] = []  # 0 or the error code
    malformed: list[bool] = []  # not JSON to msgspec (syntax, bad UTF-8, overflow)
    for i in range(1500):
        ev = rand_event(rng, fields)
        name = list(MUTATIONS)[i % len(MUTATIONS)] if i % 7 == 3 else ""
        if name:
            ev = {"features": {"m": 7}}
            raw, code = MUTATIONS[name]
            lines.append(raw(json.dumps(ev).encode()))
            expect.append(code)
            malformed.append(code == E_SYNTAX or name == "overflow")
        else:
            lines.append(encode(ev, rng))
            expect.append(0)
            malformed.append(False)
    body = b"\n".join(lines) + b"\n"
    reg = FieldRegistry()
    fmt = JsonlFormat(reg, FeatureOptions())
    res = parse_events(body, fmt, require_label=False)
    errors = {e.index: e for e in res.errors}
    assert {i: errors[i].code for i in errors} == {i: c for i, c in enumerate(expect) if c}
    # msgspec rejects exactly the lines we call malformed (syntax, bad UTF-8, overflow)
    for i, line in enumerate(lines):
        try:
            msgspec.json.decode(line)
            valid = True
        except (msgspec.DecodeError, UnicodeDecodeError):
            valid = False
        assert valid == (not malformed[i]), line
    # the good lines: keys and values from msgspec's decoding
    want, order = [], []
    for i, line in enumerate(lines):
        if expect[i]:
            continue
        row, names = ref_event(msgspec.json.decode(line))
        want.append(row)
        order += [n for n in names if n not in order]
    assert reg.names == ["bias", *order]  # the bad lines registered nothing
    ids = {n: reg.id(n) for n in reg.names}
    assert batch_rows([res.batch]) == [w.keys(ids) for w in want]
    assert np.array_equal(res.batch.labels, [w.label for w in want], equal_nan=True)
    assert res.batch.weights.tolist() == [w.weight for w in want]
    good = [i for i, c in enumerate(expect) if not c]
    assert res.batch.extra["event_index"].tolist() == good  # type: ignore[union-attr]
    assert res.batch.lines.tolist() == [i + 1 for i in good]  # type: ignore[union-attr]
    events = [msgspec.json.decode(lines[i]) for i in good]
    assert event_ids(res.batch) == [d.get("id") for d in events]
    # the same events as one {"events": [...]} body (the bad ones that are valid JSON too)
    arr_lines = [x for i, x in enumerate(lines) if not malformed[i]]
    arr = parse_event_array(b'{"events": [' + b",\n ".join(arr_lines) + b"]}", fmt,
                            require_label=False)
    assert batch_rows([arr.batch]) == batch_rows([res.batch])
    assert [e.code for e in arr.errors] == [c for i, c in enumerate(expect)
                                            if c and not malformed[i]]


def test_a_criteo_row_as_json_gives_the_criteo_keys(tmp_path: Path) -> None:
    lines = criteo_lines(500, seed=21)
    tsv = write(tmp_path, "c.tsv", "\n".join(lines) + "\n")
    for opts in (FeatureOptions(), FeatureOptions(drop_missing=True)):
        reg = FieldRegistry()
        want = batch_rows(read_all(tsv, "criteo", reg, opts)[0])
        events = []
        for line in lines:
            cols = line.split("\t")
            events.append({"label": int(cols[0]),
                           "features": dict(zip(CRITEO_FIELDS, cols[1:], strict=True))})
        jreg = FieldRegistry(CRITEO_FIELDS)
        fmt = JsonlFormat(jreg, opts)
        res = parse_event_array(json.dumps({"events": events}).encode(), fmt,
                                require_label=True)
        assert res.ok and jreg.names == reg.names
        assert batch_rows([res.batch]) == want
        assert res.batch.labels.tolist() == [float(x.split("\t")[0]) for x in lines]
        nd = parse_events("\n".join(json.dumps(e) for e in events).encode(), fmt,
                          require_label=True)
        assert batch_rows([nd.batch]) == want
    ids = {n: reg.id(n) for n in reg.names}
    assert want == [ref_criteo(x, drop_missing=True).keys(ids) for x in lines]


def test_strings_are_hashed_decoded() -> None:
    reg = FieldRegistry()
    fmt = JsonlFormat(reg, FeatureOptions())
    body = ('{"features": {"caf\\u00e9": "na\\u00efve \\ud83d\\ude00 \\"q\\" \\\\ \\/ '
            '\\b\\f\\n\\r\\t"}}\n'
            '{"features": {"café": "naïve 😀 \\"q\\" \\\\ / \\b\\f\\n\\r\\t"}}\n').encode()
    res = parse_events(body, fmt, require_label=False)
    assert res.ok and reg.names == ["bias", "café"]
    rows = batch_rows([res.batch])
    token = ref_key(1, ref_token("café", 'naïve 😀 "q" \\ / \b\f\n\r\t'.encode()))
    assert rows[0] == rows[1] == {ref_key(0, BIAS_HASH): 1.0, token: 1.0}


def test_parse_events_reports_bad_lines_and_keeps_the_rest() -> None:
    reg = FieldRegistry()
    fmt = JsonlFormat(reg, FeatureOptions())
    body = (b'{"label": 1, "features": {"a": "x"}, "id": "e\\"0"}\r\n'
            b"\n"
            b'{"features": {"a": "y"}}\n'
            b'{"label": 1, "features": {"new": true}}\n'
            b'{"label": 0, "features": {"a": "z"}, "unknown": [1, {"k": null}]}\n'
            b'{"label": 1, "features": {"a": "x"}')  # no newline at the end, and cut
    res = parse_events(body, fmt, require_label=True)
    assert isinstance(res, EventsResult) and not res.ok
    assert [(e.index, e.field, e.code) for e in res.errors] == [
        (2, "label", E_MISSING_LABEL), (3, "features.new", E_TYPE), (5, "", E_SYNTAX)]
    assert res.errors[0].message == "label is missing"
    assert res.batch.rows == 2 and res.batch.extra["event_index"].tolist() == [0, 4]  # type: ignore[union-attr]
    assert event_ids(res.batch) == ['e"0', None]
    assert reg.names == ["bias", "a"]
    lenient = parse_events(body, fmt, require_label=False)
    assert lenient.batch.rows == 3 and np.isnan(lenient.batch.labels[1])
    # every buffer type gives the same batch
    for kind in (bytearray, memoryview, lambda b: np.frombuffer(b, dtype=np.uint8)):
        other = parse_events(kind(body), fmt, require_label=True)  # type: ignore[operator]
        assert batch_rows([other.batch]) == batch_rows([res.batch])
    strict = JsonlFormat(reg, FeatureOptions(strict=True))
    res = parse_events(body, strict, require_label=True)
    assert (4, "unknown", E_UNKNOWN_KEY) in [(e.index, e.field, e.code) for e in res.errors]


def test_parse_event_array_wrapper_and_errors() -> None:
    reg = FieldRegistry()
    fmt = JsonlFormat(reg, FeatureOptions())
    ev = '{"label": 1, "features": {"a": "x"}}'
    bad = '{"label": 1, "features": {"a": [1]}}'

    def run(body: str, **kw: object) -> tuple[int, list[tuple[int, str, int]]]:
        res = parse_event_array(body.encode(), kw.pop("fmt", fmt), require_label=True)  # type: ignore[arg-type]
        return res.batch.rows, [(e.index, e.field, e.code) for e in res.errors]

    assert run(f'{{"meta": {{"x": [1, 2]}}, "events": [{ev}, {ev}], "more": null}}') == (2, [])
    assert run('{"events": []}') == (0, [])
    assert run(f' {{ "events" : [ {bad} , {ev} ] }} ') == (1, [(0, "features.a", E_TYPE)])
    assert run(f'{{"events": [{ev}, {{"features": {{"a": tru}}}}, {ev}]}}') == (
        1, [(1, "features.a", E_SYNTAX)])  # nothing after a syntax error can be read
    assert run(f'{{"events": [{ev}, {ev},]}}') == (2, [(2, "", E_SYNTAX)])
    assert run(f'{{"events": [{ev} {ev}]}}') == (1, [(1, "events", E_SYNTAX)])
    assert run(f'{{"events": [{ev}]}} x') == (1, [(-1, "", E_SYNTAX)])
    assert run('{"evens": []}') == (0, [(-1, "events", E_SYNTAX)])
    assert run('{"events": {}}') == (0, [(-1, "events", E_TYPE)])
    assert run("[]") == (0, [(-1, "", E_SYNTAX)])
    assert run(f'{{"events": [{ev.replace("1", "null", 1)}]}}') == (
        0, [(0, "label", E_MISSING_LABEL)])
    strict = JsonlFormat(reg, FeatureOptions(strict=True))
    assert run(f'{{"k": 1, "events": [{ev}]}}', fmt=strict) == (0, [(-1, "k", E_UNKNOWN_KEY)])
    assert run(f'{{"events": [{ev}], "k": 1}}', fmt=strict) == (1, [(-1, "k", E_UNKNOWN_KEY)])


def test_outputs_grow_for_interactions() -> None:
    reg = FieldRegistry()
    reg.add_interactions([("t", "t")])
    fmt = JsonlFormat(reg, FeatureOptions())
    events = [{"label": i % 2, "features": {"t": [f"x{j}" for j in range(i % 7, 40 + i % 7)]}}
              for i in range(60)]
    res = parse_event_array(json.dumps({"events": events}).encode(), fmt, require_label=True)
    assert res.ok and res.batch.nnz > len(json.dumps(events)) // 3  # more than allocated
    ids = {n: reg.id(n) for n in reg.names}
    want = []
    for e in events:
        row = RefRow(float(e["label"]))  # type: ignore[arg-type]
        for v in e["features"]["t"]:  # type: ignore[index]
            row.add("t", ref_token("t", v.encode()))
        want.append(row.keys(ids, [("t", "t")]))
    assert batch_rows([res.batch]) == want


def test_concurrent_calls_share_one_registry() -> None:
    reg = FieldRegistry()
    fmt = JsonlFormat(reg, FeatureOptions())
    bodies = [("\n".join(json.dumps({"features": {f"f{t}_{i % 40}": "x", "shared": "y"}})
                         for i in range(400))).encode() for t in range(4)]
    results: list[EventsResult] = []

    def work(body: bytes) -> None:
        results.append(parse_events(body, fmt, require_label=False))

    threads = [threading.Thread(target=work, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.ok and r.batch.rows == 400 for r in results)
    assert len(reg) == 1 + 1 + 4 * 40 and len(set(reg.names)) == len(reg)
    for name in reg.names[1:]:  # every id is the field of its name
        assert reg.seeds[reg.id(name)] == field_seed(name)


def test_labels_weights_and_numbers() -> None:
    reg = FieldRegistry()
    fmt = JsonlFormat(reg, FeatureOptions())
    # labels: JSON numbers equal to 0 or 1 (any spelling), null: none
    cases = [("1", 1.0), ("0", 0.0), ("0.0", 0.0), ("1.0", 1.0), ("1e0", 1.0), ("-0", 0.0),
             ("10e-1", 1.0), ("0E5", 0.0), ("null", np.nan)]
    body = "\n".join(f'{{"label": {lab}, "weight": {w}, "features": {{"n": {v}}}}}'
                     for (lab, _), w, v in zip(cases, ["0", "2.5", "null", "1e-3", "0.0",
                                                       "7", "1", "3", "1"],
                                               ["1e-400", "0.1", "-2", "123456789.012345678901",
                                                "0", "-0.0", "5e-324", "-1e9", "4"],
                                               strict=True))
    res = parse_events(body.encode(), fmt, require_label=False)
    assert res.ok
    assert np.array_equal(res.batch.labels, [c[1] for c in cases], equal_nan=True)
    assert res.batch.weights.tolist() == [0.0, 2.5, 1.0, 1e-3, 0.0, 7.0, 1.0, 3.0, 1.0]
    values = [[v for k, v in row.items() if k != ref_key(0, BIAS_HASH)]
              for row in batch_rows([res.batch])]
    assert values == [[], [0.1], [-2.0], [123456789.012345678901], [], [], [5e-324], [-1e9],
                      [4.0]]
    res = parse_events(b'{"weight": 1e309, "features": {"a": 1}}', fmt, require_label=False)
    assert [(e.field, e.code) for e in res.errors] == [("weight", E_WEIGHT)]
    # refused: -1 (VW's negative), booleans, strings, other numbers; NaN is not JSON
    refused = ["-1", "true", "false", '"1"', "2", "0.5", "[1]", "NaN"]
    res = parse_events("\n".join(f'{{"label": {lab}, "features": {{"a": 1}}}}'
                                  for lab in refused).encode(), fmt, require_label=False)
    assert [(e.index, e.field, e.code, e.value) for e in res.errors] == [
        (i, "label", E_SYNTAX if lab == "NaN" else E_LABEL, lab)
        for i, lab in enumerate(refused)]
    # predictions ignore labels, whatever they are (Python's NaN included)
    body = "\n".join(f'{{"label": {lab}, "features": {{"a": 1}}}}' for lab in refused)
    arr = parse_event_array(f'{{"events": [{body.replace(chr(10), ",")}]}}'.encode(), fmt,
                            require_label=False, ignore_label=True)
    assert arr.ok and arr.batch.rows == len(refused)
    assert np.isnan(arr.batch.labels).all()


@pytest.mark.parametrize("value", [b"[]", b"[ ]", b"[\t]"])
def test_empty_list_registers_the_field_and_adds_nothing(value: bytes) -> None:
    reg = FieldRegistry()
    fmt = JsonlFormat(reg, FeatureOptions())
    events = [b'{"label":1,"features":{"c":' + value + b',"d":"x"}}',
              b'{"label":1,"features":{"c":"y","d":"x"}}',  # the key cache holds c and d
              b'{"label":0,"features":{"c":' + value + b',"d":"x"}}',
              b'{"label":0,"features":{"d":"x","c":' + value + b'}}',
              b'{"label":0,"features":{"c":' + value + b'}}']  # only the bias
    arr = parse_event_array(b'{"events":[' + b",".join(events) + b"]}", fmt,
                            require_label=True)
    lines = parse_events(b"\n".join(events), fmt, require_label=True)
    for res in (arr, lines):
        assert res.ok, res.errors
        assert np.diff(res.batch.indptr).tolist() == [2, 3, 2, 2, 1]
    assert reg.names == ["bias", "c", "d"]
    d_x = ref_key(reg.id("d"), ref_token("d", b"x"))
    assert batch_rows([arr.batch])[0] == {ref_key(0, BIAS_HASH): 1.0, d_x: 1.0}


def test_range_limits() -> None:
    """Weights up to MAX_WEIGHT, values within +-MAX_ABS_VALUE (after repeats are summed and
    in interactions too); past them the event is bad, naming the field."""
    reg = FieldRegistry(["u", "v"])
    reg.add_interactions([("u", "v")])
    fmt = JsonlFormat(reg, FeatureOptions())
    lines = [b'{"weight": 1e6, "features": {"n": 1e9, "u": -1e9}}',
             b'{"weight": 1000000.0000000001, "features": {"n": 1}}',
             b'{"weight": 1e200, "features": {"n": 1}}',
             b'{"features": {"n": 1, "big": -1000000000.0000001}}',
             b'{"features": {"rep": 6e8, "rep": 6e8}}',  # summed: 1.2e9
             b'{"features": {"u": 1e5, "v": 1e5}}',  # the product: 1e10
             b'{"features": {"u": 3e4, "v": 3e4, "n": "x"}}']
    res = parse_events(b"\n".join(lines), fmt, require_label=False)
    assert [(e.index, e.field, e.code) for e in res.errors] == [
        (1, "weight", E_WEIGHT), (2, "weight", E_WEIGHT), (3, "features.big", E_NUMBER),
        (4, "features.rep", E_NUMBER), (5, "features.u:v", E_NUMBER)]
    assert res.batch.weights.tolist() == [1e6, 1.0]
    assert "rep" not in reg and "big" not in reg  # bad events register nothing
    assert "above" in res.errors[0].message and "beyond" in res.errors[2].message


@pytest.mark.parametrize("fmt_name", ["jsonl"])
def test_field_errors_name_the_feature(tmp_path: Path, fmt_name: str) -> None:
    path = write(tmp_path, "e.jsonl", '{"features": {"caf\\u00e9 \\"x\\"": 1e999}}\n')
    with pytest.raises(Exception, match=r'e\.jsonl:1: field features\.café "x": value is not'):
        read_all(path, fmt_name)

"""VW text as VW 9.11 reads it (``parse_example_text.cc``), the rules written out from VW's
source and documentation (these tests do not need VW): which lines are rows, the label
section, string values, anonymous features, the initial prediction, and ``-q`` pairing
namespaces by their first byte with self-products. Checked against VW 9.11 itself while
building this: on 42 files of VW's test suite with binary labels, `ctr train --format vw`
predicts every row as VW's FTRL does, to 6e-7."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_readers import (
    BIAS_HASH,
    M64,
    batch_rows,
    read_all,
    ref_key,
    ref_mix64,
    ref_pair,
    ref_seed,
    ref_token,
    write,
)

from ftrl_core.fields import FieldRegistry
from ftrl_core.readers import FeatureOptions
from ftrl_core.readers.eventlines import VWEventReader
from ftrl_core.readers.jsonl import JsonlFormat, parse_events
from ftrl_core.readers.vwevents import VWLineError, vw_event
from ftrl_core.readers.vwparts import ANON_TAG
from service.cli import main

BIAS = ref_key(0, BIAS_HASH)


def rows_of(tmp_path: Path, text: str, reg: FieldRegistry | None = None
            ) -> tuple[list[dict[int, float]], list[float], list[int], FieldRegistry, list]:
    reg = reg if reg is not None else FieldRegistry()
    batches, _ = read_all(write(tmp_path, "t.vw", text), "vw", reg)
    labels = [x for b in batches for x in b.labels.tolist()]
    lines = [x for b in batches for x in b.lines.tolist()]  # type: ignore[union-attr]
    return batch_rows(batches), labels, lines, reg, batches


def test_which_lines_are_rows_and_their_labels(tmp_path: Path) -> None:
    text = ("1 |a x\n"        # 1: labelled
            "\n"              # 2: empty: VW's example separator, no row
            "   \n"           # 3: blanks: a row without label or features (VW predicts it)
            " \t \r\n"        # 4: blanks again
            "\r\n"            # 5: empty (a CRLF file): no row
            "|a x\n"          # 6: no label
            "1|a x\n"         # 7: "1" touches the bar: a tag, so no label
            "1\t|a x\n"       # 8: the label section starts after its first tab: empty
            "1 'tag\n"        # 9: no bar: label 1, no features
            "1\n"             # 10: a lone token touches the line's end: a tag
            "\ufeff-1 |a y\n"  # 11: a byte order mark is dropped; -1 means 0
            "1 0.5 \t 'x |a y\n")  # 12: after the tab: ' 'x ': only a tag
    rows, labels, lines, reg, _ = rows_of(tmp_path, text)
    assert lines == [1, 3, 4, 6, 7, 8, 9, 10, 11, 12]
    nan = float("nan")
    assert np.array_equal(labels, [1, nan, nan, nan, nan, nan, 1, nan, 0, nan], equal_nan=True)
    assert rows[1] == rows[2] == rows[6] == rows[7] == {BIAS: 1.0}  # no features
    a = reg.id("a")
    assert rows[0] == rows[3] == rows[4] == rows[5] == {
        BIAS: 1.0, ref_key(a, ref_token("a", b"x")): 1.0}
    # a line without a bar registers the default namespace, as `|` would (and as the events
    # `ctr replay` sends for it do)
    assert reg.names == ["bias", "a", " "]


def test_importance_and_initial_prediction(tmp_path: Path) -> None:
    _, labels, _, _, batches = rows_of(tmp_path, "1 2 0.5 'x|a x\n-1 0.25 -2 |a x\n1 |a x\n")
    [batch] = batches
    assert labels == [1.0, 0.0, 1.0] and batch.weights.tolist() == [2.0, 0.25, 1.0]
    assert batch.base is not None and batch.base.tolist() == [0.5, -2.0, 0.0]
    _, _, _, _, plain = rows_of(tmp_path, "1 2 'x|a x\n1 |a x\n")
    assert plain[0].base is None  # no initial prediction: no array


def test_string_values_anonymous_features_and_namespace_scale(tmp_path: Path) -> None:
    text = ("1 |a x:foo y:2 :3 :4 z: w\n"
            "1 |a:0.5 x:foo y:2 :3 w\n"   # the scale applies to numbers, not to strings
            "1 |a x:foo|b y\n"            # a string value runs to the next blank: y is in a
            "1 |a x^foo :0 :5\n")         # the token name^value; :0 is counted, adds nothing
    rows, _, _, reg, _ = rows_of(tmp_path, text)
    a = reg.id("a")

    def tok(text: bytes) -> int:
        return ref_key(a, ref_token("a", text))

    def anon(k: int) -> int:
        return ref_key(a, ref_mix64(((ref_seed("a") ^ int(ANON_TAG)) + k) & M64))

    assert rows[0] == {BIAS: 1.0, tok(b"x^foo"): 1.0, tok(b"y"): 2.0, anon(0): 3.0,
                       anon(1): 4.0, tok(b"z"): 1.0, tok(b"w"): 1.0}
    assert rows[1] == {BIAS: 1.0, tok(b"x^foo"): 1.0, tok(b"y"): 1.0, anon(0): 1.5,
                       tok(b"w"): 0.5}
    assert rows[2] == {BIAS: 1.0, tok(b"x^foo|b"): 1.0, tok(b"y"): 1.0} and "b" not in reg
    assert rows[3] == {BIAS: 1.0, tok(b"x^foo"): 1.0, anon(1): 5.0}


@pytest.mark.parametrize(("line", "field", "words"), [
    ("1 |a x:nan", "a", "not a finite number"),  # VW reads NaN as 0: refused here
    ("1 |a x:-inf", "a", "not a finite number"),
    ("1 |a x:2.5e", "a", "not a finite number"),  # VW takes 2.5 and drops the rest
    ("1 1 1 1 |a x", "label", "syntax error"),  # label, importance, initial, then?
    ("1 1 inf |a x", "initial prediction", "not a finite number"),
])
def test_what_is_refused(tmp_path: Path, line: str, field: str, words: str) -> None:
    from ftrl_core.readers import BadLineError

    with pytest.raises(BadLineError, match=f"t.vw:1: field {field}: .*{words}"):
        rows_of(tmp_path, line + "\n")


def test_interactions_pair_namespaces_by_first_byte_with_self_products(
        tmp_path: Path) -> None:
    """VW's -q: `a:b` crosses every namespace that starts with a with every one that starts
    with b; `c:c` is each feature of the group with itself and with those after it."""
    reg = FieldRegistry()
    reg.add_interactions([("a", "b"), ("c", "c")])
    rows, _, _, reg, _ = rows_of(tmp_path, "1 |ads x |alpha y |bid z |cc u v:2 |d w\n", reg)
    ids = {n: reg.id(n) for n in reg.names}

    def h(ns: str, t: str) -> int:
        return ref_token(ns, t.encode())

    expect = {BIAS: 1.0}
    for ns, t, v in (("ads", "x", 1.0), ("alpha", "y", 1.0), ("bid", "z", 1.0),
                     ("cc", "u", 1.0), ("cc", "v", 2.0), ("d", "w", 1.0)):
        expect[ref_key(ids[ns], h(ns, t))] = v
    ab, cc = ref_seed("a:b"), ref_seed("c:c")
    for (na, ta), (nb, tb), pf, seed, v in (
            (("ads", "x"), ("bid", "z"), "a:b", ab, 1.0),
            (("alpha", "y"), ("bid", "z"), "a:b", ab, 1.0),
            (("cc", "u"), ("cc", "u"), "c:c", cc, 1.0),   # the self-product
            (("cc", "u"), ("cc", "v"), "c:c", cc, 2.0),
            (("cc", "v"), ("cc", "v"), "c:c", cc, 4.0)):
        expect[ref_key(ids[pf], ref_pair(h(na, ta), h(nb, tb), seed))] = v
    assert rows[0] == expect


def test_ctr_train_predicts_unlabelled_rows_in_place(tmp_path: Path) -> None:
    """One output row per input row (VW's -p), unlabelled rows predicted and not learned,
    counted in the metrics; the labelled rows get what training on them alone gives."""
    rng = np.random.default_rng(3)
    mixed, labelled, holes = [], [], []
    for i in range(600):
        feats = " ".join(f"f{j}" for j in rng.choice(40, 4, replace=False))
        line = f"{rng.choice(['1', '-1'])} |a {feats} |b g{rng.integers(0, 9)}"
        if i % 7 == 3:
            mixed.append(f"|a {feats}")
            holes.append(len(mixed) - 1)
        elif i % 50 == 9:
            mixed.append("   ")
            holes.append(len(mixed) - 1)
        else:
            mixed.append(line)
            labelled.append(line)
    (tmp_path / "mixed.vw").write_text("\n".join(mixed) + "\n\n")  # and an empty last line
    (tmp_path / "labelled.vw").write_text("\n".join(labelled) + "\n")
    for name in ("mixed", "labelled"):
        assert main(["train", str(tmp_path / f"{name}.vw"), "--quiet", "--alpha", "0.3",
                     "--predictions-out", str(tmp_path / f"{name}.p"),
                     "--metrics-json", str(tmp_path / f"{name}.json")]) == 0
    p_mixed = np.loadtxt(tmp_path / "mixed.p")
    p_labelled = np.loadtxt(tmp_path / "labelled.p")
    assert p_mixed.size == len(mixed)
    keep = np.ones(len(mixed), bool)
    keep[holes] = False
    np.testing.assert_array_equal(p_mixed[keep], p_labelled)
    m = json.loads((tmp_path / "mixed.json").read_text())
    assert m["unlabelled_rows"] == len(holes) and m["rows"] == len(mixed)
    assert m["logloss"] == json.loads((tmp_path / "labelled.json").read_text())["logloss"]


def test_the_initial_prediction_starts_the_margin(tmp_path: Path) -> None:
    (tmp_path / "b.vw").write_text("1 1 0.5 |a x\n-1 1 -2 |a x\n")
    assert main(["train", str(tmp_path / "b.vw"), "--quiet",
                 "--predictions-out", str(tmp_path / "b.p")]) == 0
    p = np.loadtxt(tmp_path / "b.p")
    assert p[0] == pytest.approx(1 / (1 + math.exp(-0.5)), rel=1e-15)  # nothing learned yet
    assert 1 / (1 + math.exp(2.0)) < p[1] < 0.5  # -2, and the weights learned pull it up


LINES_SENT = ["1 |a x y:1 z:0 q:foo", "-1 2 'e| x |n:1 q r:bar|s", "|a x", "   ", "1 'only",
              "1 0.5 0 |a x", "1 |ads x |alpha y:", "1\t'tag|a x"]


def test_replayed_events_get_the_keys_of_the_reader(tmp_path: Path) -> None:
    """`ctr replay` sends VW lines as JSON events: the server learns the keys `ctr train`
    gives the file (string values included), with the same field numbering."""
    path = write(tmp_path, "r.vw", "\n".join(LINES_SENT) + "\n")
    rows, labels, _, reg, _ = rows_of(tmp_path, "\n".join(LINES_SENT) + "\n")
    [body] = list(VWEventReader(str(path), labels=False))
    events = json.loads(body.body)["events"]
    jreg = FieldRegistry()
    res = parse_events("\n".join(json.dumps(e) for e in events).encode(),
                       JsonlFormat(jreg, FeatureOptions()), require_label=False)
    assert res.ok and jreg.names == reg.names
    assert batch_rows([res.batch]) == rows
    assert np.array_equal(res.batch.labels, labels, equal_nan=True)


@pytest.mark.parametrize(("line", "field", "words"), [
    ("1 |a :2", "a", "anonymous"),
    ("1 |a x:2", "a", "only tokens of value 1"),
    ("1 1 0.5 |a x", "initial", "initial prediction"),
])
def test_what_cannot_be_sent_as_an_event(line: str, field: str, words: str) -> None:
    with pytest.raises(VWLineError, match=words) as info:
        vw_event(line)
    assert info.value.field == field

"""The file readers (Criteo, Avazu, VW, JSON lines) against references written from the spec.

Expected keys are computed here in plain Python from the format descriptions (xxh64 from the
``xxhash`` package, the key layout of ``hashing``), never by the code under test. The
reference helpers are imported by the other ``test_readers_*`` files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest
import xxhash
from datagen import criteo_lines

from ftrl_core.batch import Batch
from ftrl_core.fields import (
    OVERFLOW_FIELD,
    OVERFLOW_NAME,
    OVERFLOW_SEED,
    FieldRegistry,
    TooManyFieldsError,
)
from ftrl_core.hashing import make_key, xxh64
from ftrl_core.readers import (
    FORMATS,
    BadLineError,
    FeatureOptions,
    InputError,
    Reader,
    detect_format,
    open_reader,
)
from ftrl_core.readers.criteo import FIELDS as CRITEO_FIELDS
from ftrl_core.readers.tokenhash import xxh64_small

M64 = (1 << 64) - 1
FIELD_SEED = 0xC7F1E1D5EED
NUMERIC_TAG = 0x6E756D6572696321
BIAS_HASH = 0xB1A5
P1 = 0x9E3779B185EBCA87
BIN_TAG = 0x6C6F6762696E

# ---------------------------------------------------------------- reference, from the spec


def ref_seed(name: str) -> int:
    return xxhash.xxh64_intdigest(name.encode(), FIELD_SEED)


def ref_mix64(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & M64
    return x ^ (x >> 33)


def ref_key(fid: int, h: int) -> int:
    return ((fid + 1) << 54) | (h & ((1 << 54) - 1))


def ref_token(name: str, value: bytes) -> int:
    return xxhash.xxh64_intdigest(value, ref_seed(name))


def ref_numeric(name: str) -> int:
    return ref_mix64(ref_seed(name) ^ NUMERIC_TAG)


def ref_pair(ha: int, hb: int, seed: int) -> int:
    rot = ((hb << 31) | (hb >> 33)) & M64
    return ref_mix64((ref_mix64(ha ^ seed) + rot * P1) & M64)


class RefRow:
    """One expected row: features as (field name, value hash, value) in first-seen order."""

    def __init__(self, label: float = float("nan"), weight: float = 1.0) -> None:
        self.label = label
        self.weight = weight
        self.feats: dict[tuple[str, int], float] = {}

    def add(self, field: str, h: int, value: float = 1.0) -> None:
        self.feats[(field, h)] = self.feats.get((field, h), 0.0) + value

    def keys(self, ids: dict[str, int], pairs: list[tuple[str, str]] = ()) -> dict[int, float]:  # type: ignore[assignment]
        out = {ref_key(0, BIAS_HASH): 1.0}
        items = list(self.feats.items())
        for (f, h), v in items:
            out[ref_key(ids[f], h)] = out.get(ref_key(ids[f], h), 0.0) + v
        for a, b in pairs:
            pf = f"{a}:{b}"
            for i, ((fa, ha), va) in enumerate(items):
                if fa != a:
                    continue
                for j, ((fb, hb), vb) in enumerate(items):
                    if fb != b or (a == b and j <= i):
                        continue
                    k = ref_key(ids[pf], ref_pair(ha, hb, ref_seed(pf)))
                    out[k] = out.get(k, 0.0) + va * vb
        return out


def ref_criteo(line: str, ints_log: bool = False, drop_missing: bool = False) -> RefRow:
    cols = line.split("\t")
    row = RefRow(float(cols[0]) if len(cols) == 40 else float("nan"))
    for name, v in zip(CRITEO_FIELDS, cols[-39:], strict=True):
        if not v and drop_missing:
            continue
        if v and ints_log and name.startswith("I"):
            n = int(v)
            b = n if n <= 2 else int(np.floor(np.log(n) ** 2))
            row.add(name, ref_mix64(ref_seed(name) ^ BIN_TAG ^ (b + 4096)))
        else:
            row.add(name, ref_token(name, v.encode()))
    return row


def ref_avazu(header: list[str], line: str, drop_missing: bool = False) -> RefRow:
    row = RefRow()
    for name, v in zip(header, line.split(","), strict=True):
        if name == "click":
            row.label = float(v)
        elif name != "id" and (v or not drop_missing):
            row.add(name, ref_token(name, v.encode()))
    return row


def ref_vw(line: str) -> tuple[RefRow, list[str]]:
    """A VW line (well-formed, with a label section of 'label [importance]')."""
    head, *spaces = line.split("|")
    toks = head.split()
    row = RefRow()
    if toks and not toks[-1].startswith("'") and not head.endswith(" ") and head:
        toks = toks[:-1]  # a tag touching the bar
    toks = [t for t in toks if not t.startswith("'")]
    if toks:
        row.label = 0.0 if float(toks[0]) == -1 else float(toks[0])
    if len(toks) > 1:
        row.weight = float(toks[1])
    order = []
    for sp in spaces:
        first, *feats = sp.split(" ") if not sp.startswith(" ") else ["", *sp.split(" ")]
        name, _, w = first.partition(":")
        name = name or " "
        order.append(name)
        nsw = float(w) if w else 1.0
        for f in feats:
            if not f:
                continue
            fname, colon, val = f.partition(":")
            v = (float(val) if colon else 1.0) * nsw
            if v != 0:
                row.add(name, ref_token(name, fname.encode()), v)
    return row, order


def ref_event(ev: dict, drop_missing: bool = False) -> tuple[RefRow, list[str]]:  # type: ignore[type-arg]
    """A decoded JSON event (msgspec's view of the bytes)."""
    lab = ev.get("label")
    row = RefRow(float("nan") if lab is None else float(lab == 1),
                 1.0 if ev.get("weight") is None else float(ev["weight"]))
    order = []
    for name, v in ev["features"].items():
        order.append(name)
        items = v if isinstance(v, list) else [v]
        for item in items:
            if isinstance(item, bool):
                raise TypeError(name)
            if item is None or item == "":
                if not drop_missing:
                    row.add(name, ref_token(name, b""))
            elif isinstance(item, str):
                row.add(name, ref_token(name, item.encode()))
            elif float(item) != 0:
                row.add(name, ref_numeric(name), float(item))
    return row, order


def batch_rows(batches: list[Batch]) -> list[dict[int, float]]:
    rows = []
    for b in batches:
        for r in range(b.rows):
            a, z = b.indptr[r], b.indptr[r + 1]
            keys = b.keys[a:z].tolist()
            assert len(set(keys)) == len(keys), "keys within a row must be distinct"
            rows.append(dict(zip(keys, b.values[a:z].tolist(), strict=True)))
    return rows


def read_all(path: Path | str, fmt: str, registry: FieldRegistry | None = None,
             options: FeatureOptions | None = None, **kw: object) -> tuple[list[Batch], Reader]:
    reg = FieldRegistry() if registry is None else registry
    reader = open_reader(path, fmt, reg, options or FeatureOptions(), **kw)  # type: ignore[arg-type]
    return list(reader), reader


def summary(batches: list[Batch]) -> tuple[list[dict[int, float]], list[float], list[float],
                                           list[int]]:
    labels = [x for b in batches for x in b.labels.tolist()]
    weights = [x for b in batches for x in b.weights.tolist()]
    lines = [x for b in batches for x in b.lines.tolist()]  # type: ignore[union-attr]
    return batch_rows(batches), labels, weights, lines


def same(a: list[float], b: list[float]) -> bool:
    return np.array_equal(np.array(a), np.array(b), equal_nan=True)


# ---------------------------------------------------------------- sample files per format

AVAZU_HEADER = ["id", "click", "hour", "C1", "banner_pos", "site_id", "device_ip"]


def avazu_text(rows: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    out = [",".join(AVAZU_HEADER)]
    for i in range(rows):
        vals = [str(10**12 + i), str(int(rng.random() < 0.2)), f"141021{rng.integers(0, 24):02d}",
                str(1005 + rng.integers(0, 3)), str(rng.integers(0, 2)),
                "" if rng.random() < 0.1 else f"{rng.integers(0, 2**32):08x}",
                f"{rng.integers(0, 50):x}" * int(rng.integers(1, 40))]
        out.append(",".join(vals))
    return "\n".join(out) + "\n"


def vw_text(rows: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rows):
        lab = ["1", "-1", "0"][rng.integers(0, 3)]
        head = lab + (f" {rng.integers(1, 4)}.5" if rng.random() < 0.3 else "")
        head += " 'tag1" if rng.random() < 0.2 else " "
        parts = [head]
        for ns in ("user", "ad", "ctx"):
            if ns != "user" and rng.random() < 0.2:
                continue
            w = ":0.5" if ns == "ctx" else ""
            feats = " ".join(f"f{rng.integers(0, 30)}" + (f":{rng.integers(1, 9)}.25"
                                                          if rng.random() < 0.3 else "")
                             for _ in range(rng.integers(1, 12)))
            parts.append(f"{ns}{w} {feats} ")
        out.append("|".join(parts).rstrip())
    return "\n".join(out) + "\n"


def jsonl_text(rows: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(rows):
        feats: dict[str, object] = {"site": f"s{rng.integers(0, 20)}.com",
                                    "price": round(float(rng.normal()), 3),
                                    "tags": [f"t{rng.integers(0, 5)}"
                                             for _ in range(rng.integers(0, 4))]}
        if rng.random() < 0.3:
            feats["banner"] = None if rng.random() < 0.5 else ""
        if rng.random() < 0.2:
            feats["café"] = "naïve ✓"
        if rng.random() < 0.1:
            feats["esc"] = 'say "hi"\\ \n\u00e9\U0001F600'
        ev = {"label": int(rng.random() < 0.3), "features": feats, "id": f"e{i}"}
        if rng.random() < 0.2:
            ev["weight"] = float(rng.integers(1, 4))
        out.append(msgspec.json.encode(ev).decode())
    return "\n".join(out) + "\n"


def sample(fmt: str, rows: int = 300, seed: int = 0) -> str:
    if fmt == "criteo":
        return "\n".join(criteo_lines(rows, seed)) + "\n"
    return {"avazu": avazu_text, "vw": vw_text, "jsonl": jsonl_text}[fmt](rows, seed)


EXT = {"criteo": ".tsv", "avazu": ".csv", "vw": ".vw", "jsonl": ".jsonl"}


def write(tmp_path: Path, name: str, text: str, gz: bool = False) -> Path:
    path = tmp_path / (name + (".gz" if gz else ""))
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# ---------------------------------------------------------------- hashing


def test_xxh64_is_bit_exact_with_the_reference() -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, size=300, dtype=np.uint8)
    seeds = [0, 1, FIELD_SEED, 2**63 + 12345, 2**64 - 1, *rng.integers(0, 2**63, 20).tolist()]
    for n in [*range(80), 100, 127, 128, 129, 255, 299]:
        for start in (0, 3):
            chunk = data[start:start + n]
            for seed in seeds:
                want = xxhash.xxh64_intdigest(chunk.tobytes(), seed)
                assert int(xxh64(data, start, start + chunk.size, np.uint64(seed))) == want
                if chunk.size < 32:
                    assert int(xxh64_small(data, start, start + chunk.size,
                                           np.uint64(seed))) == want


_DIGEST = """
import hashlib, sys
import numpy as np
from ftrl_core.fields import (
    OVERFLOW_FIELD,
    OVERFLOW_NAME,
    OVERFLOW_SEED,
    FieldRegistry,
    TooManyFieldsError,
)
from ftrl_core.readers import FeatureOptions, open_reader
h = hashlib.sha256()
for path in sys.argv[1:]:
    for b in open_reader(path, "auto", FieldRegistry(), FeatureOptions()):
        h.update(b.keys.tobytes()); h.update(b.values.tobytes()); h.update(b.indptr.tobytes())
print(h.hexdigest())
"""


def test_keys_are_stable_across_processes(tmp_path: Path) -> None:
    paths = [str(write(tmp_path, f"s{EXT[f]}", sample(f, 50, seed=4))) for f in FORMATS]
    h = hashlib.sha256()
    for path in paths:
        for b in read_all(path, "auto")[0]:
            h.update(b.keys.tobytes())
            h.update(b.values.tobytes())
            h.update(b.indptr.tobytes())
    out = subprocess.run([sys.executable, "-c", _DIGEST, *paths], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "123"},
                         cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == h.hexdigest()


# ---------------------------------------------------------------- each format vs the spec


def test_criteo_rows_match_the_spec(tmp_path: Path) -> None:
    lines = criteo_lines(200, seed=2)
    path = write(tmp_path, "c.tsv", "\n".join(lines) + "\n")
    for opts in (FeatureOptions(), FeatureOptions(ints="log"), FeatureOptions(drop_missing=True)):
        reg = FieldRegistry()
        batches, _ = read_all(path, "criteo", reg, opts)
        ids = {n: reg.id(n) for n in reg.names}
        want = [ref_criteo(x, opts.ints == "log", opts.drop_missing) for x in lines]
        rows, labels, weights, nums = summary(batches)
        assert rows == [w.keys(ids) for w in want]
        assert labels == [w.label for w in want]
        assert weights == [1.0] * len(lines) and nums == list(range(1, len(lines) + 1))


def test_avazu_rows_match_the_spec(tmp_path: Path) -> None:
    text = avazu_text(300, seed=3)
    path = write(tmp_path, "a.csv", text)
    data = text.splitlines()[1:]
    for drop in (False, True):
        reg = FieldRegistry()
        batches, _ = read_all(path, "avazu", reg, FeatureOptions(drop_missing=drop))
        assert reg.names == ["bias", *AVAZU_HEADER[2:]]  # header order; id and click are not
        ids = {n: reg.id(n) for n in reg.names}
        want = [ref_avazu(AVAZU_HEADER, x, drop) for x in data]
        rows, labels, _, nums = summary(batches)
        assert rows == [w.keys(ids) for w in want]
        assert labels == [w.label for w in want]
        assert nums == list(range(2, len(data) + 2))  # the header is line 1
    # without a click column (Avazu's test set) rows have no label
    path = write(tmp_path, "test.csv", "id,hour,site\n1,14102100,a\n2,14102101,b\n")
    batches, _ = read_all(path, "avazu")
    assert np.isnan(np.concatenate([b.labels for b in batches])).all()


def test_vw_rows_match_the_spec(tmp_path: Path) -> None:
    text = vw_text(300, seed=5)
    path = write(tmp_path, "v.vw", text)
    reg = FieldRegistry()
    batches, _ = read_all(path, "vw", reg)
    want, order = [], []
    for line in text.splitlines():
        row, names = ref_vw(line)
        want.append(row)
        order += [n for n in names if n not in order]
    assert reg.names == ["bias", *order]  # namespaces register in order of first appearance
    ids = {n: reg.id(n) for n in reg.names}
    rows, labels, weights, _ = summary(batches)
    assert rows == [w.keys(ids) for w in want]
    assert same(labels, [w.label for w in want]) and weights == [w.weight for w in want]


def test_vw_details() -> None:
    reg = FieldRegistry()
    fmt = FORMATS["vw"](reg, FeatureOptions())
    text = ("1 2.5 'id7|a x x y:0.5 z:0 |b:2 u u:3\n"  # repeats summed; value 0 adds nothing
            "-1 zebra| d\n"  # a tag touching the bar; the default namespace is " "
            "|a x\n"  # no label: predictable
            "1|a x\n"  # "1" touches the bar: it is a tag (VW's rule), so no label
            "0\t|c\tq:-1e-2\n")  # tabs separate
    rows = _parse_text(fmt, text)
    x = ref_token("a", b"x")
    assert rows[0][0] == {ref_key(0, BIAS_HASH): 1.0, ref_key(reg.id("a"), x): 2.0,
                          ref_key(reg.id("a"), ref_token("a", b"y")): 0.5,
                          ref_key(reg.id("b"), ref_token("b", b"u")): 8.0}
    assert rows[0][1:] == (1.0, 2.5)
    assert reg.names[:4] == ["bias", "a", "b", " "]
    assert rows[1][0][ref_key(reg.id(" "), ref_token(" ", b"d"))] == 1.0
    assert rows[1][1] == 0.0
    assert np.isnan(rows[2][1]) and np.isnan(rows[3][1])
    assert rows[4][0][ref_key(reg.id("c"), ref_token("c", b"q"))] == -0.01


def _parse_text(fmt: object, text: str) -> list[tuple[dict[int, float], float, float]]:
    from ftrl_core.readers.base import Outputs

    buf = np.frombuffer(text.encode(), dtype=np.uint8).copy()
    out = Outputs.allocate(64, 20_000)
    out.state[:] = (0, 0, 0, 0)
    status = fmt.parse(buf, 0, buf.size, True, out)  # type: ignore[attr-defined]
    fmt.after_parse(buf, out)  # type: ignore[attr-defined]
    assert status == 0, out.err
    b = out.batch(buf, 1)
    return [(r, lab, w) for r, lab, w in zip(batch_rows([b]), b.labels.tolist(),
                                               b.weights.tolist(), strict=True)]


def test_jsonl_rows_match_msgspec_and_the_spec(tmp_path: Path) -> None:
    text = jsonl_text(300, seed=6)
    path = write(tmp_path, "j.jsonl", text)
    reg = FieldRegistry()
    batches, _ = read_all(path, "jsonl", reg)
    want, order = [], []
    for line in text.splitlines():
        row, names = ref_event(msgspec.json.decode(line))
        want.append(row)
        order += [n for n in names if n not in order]
    assert reg.names == ["bias", *order]
    ids = {n: reg.id(n) for n in reg.names}
    rows, labels, weights, nums = summary(batches)
    assert rows == [w.keys(ids) for w in want]
    assert labels == [w.label for w in want] and weights == [w.weight for w in want]
    assert nums == list(range(1, 301))
    from ftrl_core.readers.jsonl import event_ids

    assert [i for b in batches for i in event_ids(b)] == [f"e{i}" for i in range(300)]


# ---------------------------------------------------------------- what every reader shares


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_gz_chunks_crlf_and_blank_lines_give_the_same_rows(tmp_path: Path, fmt: str) -> None:
    text = sample(fmt, 400, seed=8)
    base = summary(read_all(write(tmp_path, "a" + EXT[fmt], text), fmt)[0])
    assert len(base[0]) == 400
    gz = summary(read_all(write(tmp_path, "b" + EXT[fmt], text, gz=True), fmt)[0])
    tiny = summary(read_all(write(tmp_path, "c" + EXT[fmt], text), fmt, chunk_bytes=64)[0])
    odd = summary(read_all(write(tmp_path, "d" + EXT[fmt], text), fmt, chunk_bytes=1000)[0])
    for other in (gz, tiny, odd):
        assert other[0] == base[0] and same(other[1], base[1]) and other[2:] == base[2:]
    crlf = summary(read_all(write(tmp_path, "e" + EXT[fmt], text.replace("\n", "\r\n")),
                            fmt, chunk_bytes=64)[0])
    assert crlf[0] == base[0] and same(crlf[1], base[1])
    # blank lines are skipped but counted; no newline at the end is fine
    lines = text.splitlines()
    first = 1 if fmt == "avazu" else 0
    spaced = "\n".join([*lines[: first + 2], "", "", *lines[first + 2:]]) + "\n\n"
    got = summary(read_all(write(tmp_path, "f" + EXT[fmt], spaced.rstrip("\n")), fmt)[0])
    assert got[0] == base[0]
    assert got[3] == base[3][:2] + [n + 2 for n in base[3][2:]]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_hashed_mode_folds_the_exact_keys(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path, "h" + EXT[fmt], sample(fmt, 200, seed=10))
    exact = batch_rows(read_all(path, fmt)[0])
    folded = batch_rows(read_all(path, fmt, options=FeatureOptions(hash_bits=12))[0])
    tag = int(make_key(0, np.uint64(0), np.uint64(0xFFF)))  # the hashed-mode field tag
    for want, got in zip(exact, folded, strict=True):
        merged: dict[int, float] = {}
        for k, v in want.items():
            merged[tag | (k & 0xFFF)] = merged.get(tag | (k & 0xFFF), 0.0) + v
        assert got == pytest.approx(merged)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_detection_by_extension_and_by_content(tmp_path: Path, fmt: str) -> None:
    text = sample(fmt, 5, seed=9)
    assert detect_format(write(tmp_path, "x" + EXT[fmt], text)) == fmt
    assert detect_format(write(tmp_path, "x" + EXT[fmt], text, gz=True)) == fmt
    assert detect_format(write(tmp_path, "x.txt", text)) == fmt
    assert detect_format(write(tmp_path, "x.data", text, gz=True)) == fmt


def test_unknown_content_and_empty_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot tell"):
        detect_format(write(tmp_path, "x.txt", "hello world\n"))
    with pytest.raises(InputError, match="empty"):
        open_reader(write(tmp_path, "e.jsonl", ""), "auto", FieldRegistry(), FeatureOptions())


def test_interactions_pair_keys_are_deterministic_products(tmp_path: Path) -> None:
    lines = criteo_lines(50, seed=11, missing=0.0)
    path = write(tmp_path, "c.tsv", "\n".join(lines) + "\n")
    pairs = [("C1", "C2"), ("I1", "C3"), ("C4", "C4")]
    reg = FieldRegistry(CRITEO_FIELDS)  # Criteo's fields are ids 1..39: register them first
    reg.add_interactions(pairs)
    batches, _ = read_all(path, "criteo", reg, FeatureOptions(ints="log"))
    ids = {n: reg.id(n) for n in reg.names}
    rows = batch_rows(batches)
    assert rows == [ref_criteo(x, ints_log=True).keys(ids, pairs) for x in lines]
    again = batch_rows(read_all(path, "criteo", reg, FeatureOptions(ints="log"))[0])
    assert again == rows
    # the pair field holds one key per row with value va * vb (here 1 * 1)
    for row in rows:
        in_pair = [v for k, v in row.items() if (k >> 54) - 1 == reg.id("C1:C2")]
        assert in_pair == [1.0]
    # real values multiply: JSON numbers
    text = ('{"label": 1, "features": {"a": 2.5, "b": ["x", "y"], "c": -4}}\n')
    reg = FieldRegistry()
    reg.add_interactions([("a", "b"), ("a", "c")])
    batches, _ = read_all(write(tmp_path, "i.jsonl", text), "jsonl", reg)
    want = RefRow(1.0)
    want.add("a", ref_numeric("a"), 2.5)
    want.add("b", ref_token("b", b"x"))
    want.add("b", ref_token("b", b"y"))
    want.add("c", ref_numeric("c"), -4.0)
    ids = {n: reg.id(n) for n in reg.names}
    assert batch_rows(batches) == [want.keys(ids, [("a", "b"), ("a", "c")])]
    assert sorted(batch_rows(batches)[0].values()) == [-10.0, -4.0, 1.0, 1.0, 1.0, 2.5, 2.5, 2.5]


def test_duplicates_within_a_row_are_merged(tmp_path: Path) -> None:
    reg = FieldRegistry()
    batches, _ = read_all(write(tmp_path, "d.vw", "1 |a x x\n"), "vw", reg)
    assert batch_rows(batches) == [{ref_key(0, BIAS_HASH): 1.0,
                                    ref_key(reg.id("a"), ref_token("a", b"x")): 2.0}]
    reg = FieldRegistry()
    batches, _ = read_all(write(tmp_path, "d.jsonl", '{"features": {"a": ["x", "x"]}}\n'),
                          "jsonl", reg)
    assert batch_rows(batches) == [{ref_key(0, BIAS_HASH): 1.0,
                                    ref_key(reg.id("a"), ref_token("a", b"x")): 2.0}]


def test_missing_tokens_and_drop_missing(tmp_path: Path) -> None:
    text = '{"features": {"a": "", "b": null, "c": ["", "x"], "d": "y"}}\n'
    path = write(tmp_path, "m.jsonl", text)
    reg = FieldRegistry()
    rows = batch_rows(read_all(path, "jsonl", reg)[0])
    missing = {ref_key(reg.id(f), ref_token(f, b"")) for f in "abc"}
    assert missing <= set(rows[0]) and len(rows[0]) == 6
    rows = batch_rows(read_all(path, "jsonl", reg, FeatureOptions(drop_missing=True))[0])
    assert not missing & set(rows[0]) and len(rows[0]) == 3
    # an empty Avazu value is the same missing token as an empty JSON string
    apath = write(tmp_path, "m.csv", "click,a,b\n1,,z\n")
    rows = batch_rows(read_all(apath, "avazu", reg)[0])
    assert ref_key(reg.id("a"), ref_token("a", b"")) in rows[0]
    rows = batch_rows(read_all(apath, "avazu", reg, FeatureOptions(drop_missing=True))[0])
    assert len(rows[0]) == 2


# ---------------------------------------------------------------- bad lines

BAD = [
    # (format, bad line, field, message part)
    ("avazu", "1,0,x", "", "wrong number of columns"),
    ("avazu", "1,2,x,y", "click", "label is not 0/1"),
    ("avazu", "1,,x,y", "click", "label is not 0/1"),
    ("vw", "2 |a x", "label", "label is not"),
    ("vw", "1 -2 |a x", "importance", "importance weight"),
    ("vw", "1 nan |a x", "importance", "importance weight"),
    ("vw", "1 |a x:1e999", "a", "not a finite number"),
    ("vw", "1 |a x:nan", "a", "not a finite number"),
    ("vw", "1 |n:two x", "n", "not a finite number"),
    ("vw", "1 | x:1x", "' '", "not a finite number"),  # (VW drops the rest of the line)
    ("vw", "1 |a x:-y", "a", "not a finite number"),
    ("vw", "1 |a x:inf", "a", "not a finite number"),  # (VW takes infinity)
    ("vw", "1 1 1e10 |a x", "initial prediction", "not a finite number"),
    ("vw", "1 1e200 |a x", "importance", "above"),
    ("vw", "1 |a x:2e9", "a", "beyond"),
    ("vw", "1 |a:1e5 x:1e5", "a", "beyond"),  # the value times the namespace's weight
    ("vw", "1 |new x:6e8 x:6e8", "new", "beyond"),  # summed repeats
    ("vw", "1 1 1 1 'tag|a x", "label", "syntax error"),  # label, importance, initial, ?
    ("vw", "1 a b", "importance", "importance weight"),  # no bar: b is the tag
    ("jsonl", '{"label": 2, "features": {"a": "x"}}', "label", "label is not"),
    ("jsonl", '{"label": "1", "features": {"a": "x"}}', "label", "label is not"),
    ("jsonl", '{"label": 1, "weight": -1, "features": {"a": "x"}}', "weight", "weight"),
    ("jsonl", '{"label": 1, "weight": "2", "features": {"a": "x"}}', "weight", "weight"),
    ("jsonl", '{"features": {"a": true}}', "features.a", "wrong type"),
    ("jsonl", '{"features": {"a": {"b": 1}}}', "features.a", "wrong type"),
    ("jsonl", '{"features": {"tags": ["x", 1]}}', "features.tags", "wrong type"),
    ("jsonl", '{"features": {"a": "x"}, "id": 7}', "id", "wrong type"),
    ("jsonl", '{"features": {"a": 1e400}}', "features.a", "not a finite number"),
    ("jsonl", '{"features": {"a": -2e9}}', "features.a", "beyond"),
    ("jsonl", '{"label": 1, "weight": 1e200, "features": {"a": "x"}}', "weight", "above"),
    ("jsonl", '{"features": {"a": NaN}}', "features.a", "syntax error"),
    ("jsonl", '{"features": {"a": "x",}}', "features", "syntax error"),
    ("jsonl", '{"features": {"a": "x"}} x', "", "syntax error"),
    ("jsonl", '{"features": {"a": true}, "label": }', "", "syntax error"),  # syntax wins
    ("jsonl", '{"features": {}}', "features", "features map is empty"),
    ("jsonl", '{"label": 1}', "features", "features map is empty"),
    ("jsonl", '{"features": [1]}', "features", "wrong type"),
    ("jsonl", '["features"]', "", "syntax error"),
]


@pytest.mark.parametrize(("fmt", "line", "field", "message"), BAD)
def test_bad_lines_name_file_line_and_field(tmp_path: Path, fmt: str, line: str, field: str,
                                            message: str) -> None:
    good = {"avazu": ["1,0,a,b", "2,1,c,d"], "vw": ["1 |a x", "0 |b y"],
            "jsonl": ['{"label": 1, "features": {"a": "x"}}',
                      '{"label": 0, "features": {"b": "y"}}']}[fmt]
    header = ["id,click,a,b"] if fmt == "avazu" else []
    text = "\n".join([*header, good[0], line, good[1]]) + "\n"
    path = write(tmp_path, "bad" + EXT[fmt], text)
    reg = FieldRegistry()
    with pytest.raises(BadLineError) as info:
        read_all(path, fmt, reg)
    bad_line = 2 + len(header)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{bad_line}:"), msg
    assert message in msg
    if field:
        assert f"field {field}:" in msg
    assert info.value.bad.field == field
    # skipped and counted; the good rows stay, in order
    for chunk in (64, 1 << 20):
        reg = FieldRegistry()
        batches, reader = read_all(path, fmt, reg, skip_bad_lines=True, chunk_bytes=chunk)
        assert reader.bad_line_count == 1 and reader.bad_lines[0].line == bad_line
        assert [x for b in batches for x in b.lines.tolist()] == [bad_line - 1, bad_line + 1]
        # a bad line registers no field
        assert set(reg.names) <= {"bias", "a", "b"}


def test_too_many_features_and_fields(tmp_path: Path) -> None:
    opts = FeatureOptions(max_row_features=5)
    path = write(tmp_path, "t.vw", "1 |a w x y z v\n1 |a x\n")
    with pytest.raises(BadLineError, match=r"t\.vw:1: .*too many features"):
        read_all(path, "vw", options=opts)
    path = write(tmp_path, "t.jsonl", '{"features": {"a": ["w", "x", "y", "z", "v"]}}\n')
    with pytest.raises(BadLineError, match=r"t\.jsonl:1: .*too many features"):
        read_all(path, "jsonl", options=opts)
    path = write(tmp_path, "t.csv", "click,a,b,c,d,e\n1,1,2,3,4,5\n")
    with pytest.raises(BadLineError, match=r"t\.csv:2: .*too many features"):
        read_all(path, "avazu", options=opts)
    # interactions count too
    reg = FieldRegistry()
    reg.add_interactions([("a", "a")])
    with pytest.raises(BadLineError, match="too many features"):
        read_all(write(tmp_path, "p.vw", "1 |a w x y\n"), "vw", reg, opts)
    # fields: 1,100 namespaces in one line; the registry holds 1,022 with the bias, the
    # last being the overflow field that the namespaces past it share, keyed by their names
    many = "1 " + " ".join(f"|n{i} x" for i in range(1100)) + "\n1 |a x\n"
    reg = FieldRegistry()
    batches, reader = read_all(write(tmp_path, "f.vw", many), "vw", reg)
    assert reader.bad_line_count == 0 and len(reg) == 1022
    assert reg.names[-1] == OVERFLOW_NAME and reg.has_overflow and "a" not in reg
    assert int(OVERFLOW_SEED) == ref_seed(OVERFLOW_NAME) == int(reg.seeds[OVERFLOW_FIELD])
    row = batch_rows(batches)[0]
    assert len(row) == 1101  # 1,100 distinct features: the overflowed ones stay apart
    overflow = [k for k in row if (k >> 54) - 1 == OVERFLOW_FIELD]
    assert sorted(overflow) == sorted(
        ref_key(OVERFLOW_FIELD, ref_token(f"n{i}", b"x")) for i in range(1020, 1100))
    assert ref_key(OVERFLOW_FIELD, ref_token("a", b"x")) in batch_rows(batches)[1]
    events = "".join(f'{{"features": {{"k{i}": "x"}}}}\n' for i in range(1030))
    reg = FieldRegistry()
    batches, reader = read_all(write(tmp_path, "f.jsonl", events), "jsonl", reg)
    assert len(reg) == 1022 and reader.bad_line_count == 0
    rows = batch_rows(batches)
    assert [k for k in rows[1025] if (k >> 54) - 1 == OVERFLOW_FIELD] == [
        ref_key(OVERFLOW_FIELD, ref_token("k1025", b"x"))]
    # a model's registry read back keeps the overflow field at its id
    again = FieldRegistry.from_dict(reg.to_dict())
    assert again.names == reg.names and again.has_overflow
    assert again.seeds.tolist() == reg.seeds.tolist()
    with pytest.raises(TooManyFieldsError):
        again.add("another")


def test_avazu_header_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="repeats"):
        read_all(write(tmp_path, "h.csv", "id,click,a,a\n1,0,x,y\n"), "avazu")
    with pytest.raises(InputError, match="column names"):
        read_all(write(tmp_path, "h.csv", "id,click,,a\n1,0,x,y\n"), "avazu")

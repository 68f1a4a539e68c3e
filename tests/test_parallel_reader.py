"""Parsing in threads (``ParallelReader``) learns exactly what the sequential ``Reader`` does.

Small chunks make many of them, so the workers race; everything the learner sees (batch
boundaries, keys, line numbers) and everything it gives back (predictions, metrics, state)
must be the same bit for bit, and a bad line must be reported with the same FILE:LINE.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from datagen import criteo_lines, write_criteo

from ftrl_core.fields import FieldRegistry
from ftrl_core.model import Model
from ftrl_core.optimizers import FTRLProximal
from ftrl_core.readers import (
    BadLineError,
    FeatureOptions,
    ParallelReader,
    Reader,
    make_format,
)
from ftrl_core.readers.linechunks import LineChunks
from ftrl_core.trainer import RECYCLE, run_model

CHUNK = 4096  # about 16 Criteo rows a chunk


def _readers(path: Path, fmt: str = "criteo", skip: bool = False, chunk: int = CHUNK,
             threads: int = 2) -> tuple[Reader, ParallelReader]:
    opts = FeatureOptions()
    seq = Reader(path, make_format(fmt, FieldRegistry(), opts), chunk_bytes=chunk,
                 skip_bad_lines=skip, recycle=RECYCLE)
    par = ParallelReader(path, make_format(fmt, FieldRegistry(), opts), chunk_bytes=chunk,
                         skip_bad_lines=skip, threads=threads, recycle=True)
    return seq, par


def _train(reader: Reader) -> tuple[Model, str, list[tuple[int, ...]]]:
    """A model trained over ``reader`` through the trainer, its predictions and, per
    batch, (rows, nnz, first line, last line)."""
    model = Model(FTRLProximal(alpha=0.2), reader.format.registry, reader.format.options,
                  reader.format.name)
    shapes: list[tuple[int, ...]] = []

    def seen(batch: object, p: np.ndarray) -> None:
        lines = batch.lines  # type: ignore[attr-defined]
        shapes.append((batch.rows, batch.nnz, int(lines[0]), int(lines[-1])))  # type: ignore[attr-defined]

    out = io.StringIO()
    run_model(model, reader, predictions=out, on_batch=seen)
    return model, out.getvalue(), shapes


def _same_model(a: Model, b: Model) -> None:
    assert a.metrics.as_dict() == b.metrics.as_dict()
    sa, sb = a.optimizer.state(), b.optimizer.state()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(sa[k], sb[k], equal_nan=True), k
    assert a.names is not None and b.names is not None
    na, nb = a.names.state(), b.names.state()
    for k in na:
        assert np.array_equal(na[k], nb[k]), k


@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_learns_bit_for_bit_what_sequential_learns(tmp_path: Path,
                                                            threads: int) -> None:
    path = write_criteo(tmp_path / "d.tsv", 3000, seed=7)
    seq, par = _readers(path, threads=threads)
    m1, p1, s1 = _train(seq)
    m2, p2, s2 = _train(par)
    assert len(s1) > 100  # many chunks, so the workers interleave
    assert s1 == s2
    assert p1 == p2
    _same_model(m1, m2)
    assert (par.rows, par.lines, par.bad_line_count) == (seq.rows, seq.lines, 0)


def test_gzip_crlf_blank_lines_and_a_line_longer_than_a_chunk(tmp_path: Path) -> None:
    lines = criteo_lines(400, seed=3)
    lines[50] = lines[50] + "\r"
    lines[120] = ""
    # a line several chunks long: the buffers grow, in both readers alike
    long = lines[200].split("\t")
    long[20] = "x" * (3 * CHUNK)
    lines[200] = "\t".join(long)
    text = "\n".join(lines)  # and no newline at the end
    for name in ("d.tsv", "d.tsv.gz"):
        path = tmp_path / name
        if name.endswith(".gz"):
            import gzip

            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text)
        seq, par = _readers(path)
        m1, p1, s1 = _train(seq)
        m2, p2, s2 = _train(par)
        assert s1 == s2 and p1 == p2
        _same_model(m1, m2)
        assert par.lines == seq.lines == 400


def test_avazu_header_is_read_before_the_workers_start(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = ["id,click,hour,site_id,app_id,device_type"]
    for i in range(1500):
        rows.append(f"{i},{int(rng.random() < 0.2)},14102100,s{rng.integers(30)},"
                    f"a{rng.integers(50)},{rng.integers(3)}")
    path = tmp_path / "d.csv"
    path.write_text("\n".join(rows) + "\n")
    seq, par = _readers(path, "avazu")
    m1, p1, s1 = _train(seq)
    m2, p2, s2 = _train(par)
    assert s1 == s2 and p1 == p2 and s1[0][2] == 2  # the first row is line 2
    _same_model(m1, m2)


def _with_bad_line(tmp_path: Path, rows: int, bad_at: int) -> Path:
    lines = criteo_lines(rows, seed=5)
    cols = lines[bad_at].split("\t")
    cols[3] = "12x"  # I3 is an integer column
    lines[bad_at] = "\t".join(cols)
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_bad_line_in_the_second_chunk_has_the_same_file_line(tmp_path: Path) -> None:
    path = _with_bad_line(tmp_path, 200, 0)
    first_chunk_lines = path.read_bytes()[:CHUNK].count(b"\n")
    path = _with_bad_line(tmp_path, 200, first_chunk_lines + 3)  # in the second chunk
    line = first_chunk_lines + 4
    seq, par = _readers(path)
    with pytest.raises(BadLineError) as e1:
        _train(seq)
    with pytest.raises(BadLineError) as e2:
        _train(par)
    assert str(e2.value) == str(e1.value)
    assert f"bad.tsv:{line}: field I3:" in str(e2.value)
    # the rows before it were learned, in both
    assert par.rows == seq.rows == line - 1


def test_skip_bad_lines_skips_and_reports_the_same(tmp_path: Path) -> None:
    lines = criteo_lines(2000, seed=9)
    for i in (5, 40, 41, 700, 1999):
        lines[i] = lines[i].replace("\t", "\t\t", 1)  # one column too many
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(lines) + "\n")
    seq, par = _readers(path, skip=True)
    m1, p1, s1 = _train(seq)
    m2, p2, s2 = _train(par)
    assert s1 == s2 and p1 == p2
    _same_model(m1, m2)
    assert par.bad_line_count == seq.bad_line_count == 5
    assert [b.line for b in par.bad_lines] == [b.line for b in seq.bad_lines] == [
        6, 41, 42, 701, 2000]
    assert [vars(b) for b in par.bad_lines] == [vars(b) for b in seq.bad_lines]


def test_batches_can_be_kept_without_recycling(tmp_path: Path) -> None:
    path = write_criteo(tmp_path / "d.tsv", 500, seed=2)
    seq, _ = _readers(path)
    kept = ParallelReader(path, make_format("criteo", FieldRegistry(), FeatureOptions()),
                          chunk_bytes=CHUNK)
    a = [(b.keys.copy(), b.lines.copy()) for b in Reader(path, seq.format, chunk_bytes=CHUNK)]
    b = list(kept)
    assert len(a) == len(b)
    for (keys, lines), batch in zip(a, b, strict=True):
        assert np.array_equal(keys, batch.keys) and np.array_equal(lines, batch.lines)


def test_formats_with_fields_in_the_data_stay_sequential(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sequentially"):
        ParallelReader(tmp_path / "x.jsonl",
                       make_format("jsonl", FieldRegistry(), FeatureOptions()))


def test_line_chunks_end_at_the_last_newline(tmp_path: Path) -> None:
    data = b"ab\ncdefgh\n\nijklmnopqrstu\nv"
    chunks = LineChunks(io.BytesIO(data), 8)
    got = []
    while (c := chunks.next()) is not None:
        got.append((bytes(c.raw[:c.end]), c.final))
    # a buffer without a newline grows (to twice its carry); the end of the stream is read
    # whole into the last chunk, as Reader reads it
    assert got == [(b"ab\n", False), (b"cdefgh\n\n", False), (b"ijklmnopqrstu\nv", True)]


def test_recycled_sets_are_not_reused_early_after_a_parse_without_rows(tmp_path: Path) -> None:
    """``Reader(recycle=N)``: a parse that yields nothing (here a buffer that holds no whole
    line, a blank line, a skipped line) must not move the ring, or the set of a batch the
    caller still holds is written over (a bug the parallel comparison found)."""
    lines = criteo_lines(300, seed=4)
    for i in (30, 90):
        cols = lines[i].split("\t")
        cols[20] = "y" * (2 * CHUNK)
        lines[i] = "\t".join(cols)
    lines[150] = "bad"
    lines[151] = ""
    path = tmp_path / "d.tsv"
    path.write_text("\n".join(lines) + "\n")
    reader = Reader(path, make_format("criteo", FieldRegistry(), FeatureOptions()),
                    chunk_bytes=CHUNK, skip_bad_lines=True, recycle=2)
    held = None
    for batch in reader:  # the caller holds one batch while the next is read
        if held is not None:
            assert np.array_equal(held[0].keys, held[1])
        held = (batch, batch.keys.copy())
    assert reader.bad_line_count == 1


def test_ctr_train_over_chunks_matches_one_parse_thread(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """End to end: `ctr train` on a file of several 1 MiB chunks, with two parse threads
    and with one; a bad line past the first chunk, stopping the run or skipped."""
    from service.cli import main

    lines = criteo_lines(12000, seed=21)
    # a line that starts past the first chunk (1 MiB and a bit)
    ends = np.cumsum([len(line) + 1 for line in lines])
    bad_at = int(np.searchsorted(ends, (1 << 20) + 5000))
    cols = lines[bad_at].split("\t")
    cols[5] = "7.5"
    lines[bad_at] = "\t".join(cols)
    path = tmp_path / "big.tsv"
    path.write_text("\n".join(lines) + "\n")
    results = []
    for threads in (2, 1):
        flags = ["--quiet", "--parse-threads", str(threads)]
        assert main(["train", str(path), *flags]) == 2
        err = capsys.readouterr().err
        assert f"{path}:{bad_at + 1}: field I5: integer column" in err
        preds, metrics = tmp_path / f"p{threads}.txt", tmp_path / f"m{threads}.json"
        assert main(["train", str(path), *flags, "--skip-bad-lines", "--predictions-out",
                     str(preds), "--metrics-json", str(metrics)]) == 0
        skipped = capsys.readouterr().err
        m = json.loads(metrics.read_text())
        for k in ("seconds", "rows_per_second", "feature_updates_per_second"):
            del m[k]
        results.append((err, skipped, preds.read_text(), m))
    assert results[0] == results[1]
    assert results[0][3]["rows"] == 11999 and results[0][3]["bad_lines"] == 1
    assert f"line {bad_at + 1}: I5 integer column" in results[0][1]


def test_damaged_gzip_is_raised_in_order_and_threads_end(tmp_path: Path) -> None:
    import gzip
    import threading

    from ftrl_core.readers import InputError

    data = gzip.compress(("\n".join(criteo_lines(2000, seed=8)) + "\n").encode())
    path = tmp_path / "cut.tsv.gz"
    path.write_bytes(data[: len(data) * 2 // 3])  # truncated
    seq, par = _readers(path)
    with pytest.raises(InputError) as e1:
        _train(seq)
    before = threading.active_count()
    with pytest.raises(InputError) as e2:
        _train(par)
    assert str(e2.value) == str(e1.value) and "damaged gzip data" in str(e2.value)
    assert par.rows == seq.rows > 0  # the rows before the damage were learned, in both
    assert threading.active_count() == before  # the parse threads are gone

    # a caller that stops early: the threads end too
    path = write_criteo(tmp_path / "d.tsv", 2000, seed=8)
    _, par = _readers(path)
    for i, _batch in enumerate(par):
        if i == 3:
            break
    assert threading.active_count() == before

"""Snapshots in a data directory: a model, its shadow variants and the service's other
state, written whole and made current with one atomic rename.

A checkpoint is a folder ``snap-<log seq, 20 digits>/`` holding ``model.ctr``,
``variant-<name>.ctr`` files, one ``<part>.npz`` per extra part (idempotency keys, pending
impressions...) and ``meta.json``; ``CURRENT`` names the current one. Writing goes to
``snap-....tmp/`` (every file synced), which is renamed, then ``CURRENT`` is replaced by a
rename of its own (LevelDB's pattern): a process killed at any point leaves either the old
checkpoint or the new one current, never a mix. ``log_seq`` is the last write-ahead-log
record the checkpoint holds: start-up replays the records after it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ftrl_core.model import Model, ModelFileError

from .errors import StoreConfigError
from .wal.segments import fsync_dir

CURRENT = "CURRENT"
MODEL_FILE = "model.ctr"


@dataclass
class Checkpoint:
    """A consistent copy of everything a restart needs, taken between two batches."""

    model: Model
    log_seq: int
    #: file name (``variant-<name>.ctr``) -> the variant's model
    variants: dict[str, Model] = field(default_factory=dict)
    #: part name -> arrays (``np.savez``), for the learner's other state
    parts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _dir_name(seq: int) -> str:
    return f"snap-{seq:020d}"


def current(directory: Path) -> Path | None:
    """The current checkpoint folder, or None (a new data directory)."""
    pointer = directory / CURRENT
    try:
        name = pointer.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreConfigError(f"{pointer}: {exc}") from None
    path = directory / name
    if not name.startswith("snap-") or not (path / MODEL_FILE).is_file():
        raise StoreConfigError(f"{pointer} names {name!r}, which is not a checkpoint folder "
                               f"of {directory}")
    return path


def load(directory: Path) -> Checkpoint | None:
    """The current checkpoint, or None."""
    path = current(directory)
    if path is None:
        return None
    try:
        meta = json.loads((path / "meta.json").read_text())
        model = Model.load(path / MODEL_FILE)
        variants = {p.name: Model.load(p) for p in sorted(path.glob("variant-*.ctr"))}
    except (OSError, ValueError, ModelFileError) as exc:
        raise StoreConfigError(f"checkpoint {path}: {exc}") from None
    parts = {}
    for p in sorted(path.glob("*.npz")):
        with np.load(p, allow_pickle=False) as npz:
            parts[p.stem] = {k: npz[k] for k in npz.files}
    return Checkpoint(model, int(meta["log_seq"]), variants, parts, meta)


def write(directory: Path, cp: Checkpoint) -> Path:
    """Write ``cp`` and make it current; older checkpoints are then deleted."""
    name = _dir_name(cp.log_seq)
    final = directory / name
    tmp = directory / (name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cp.model.save(tmp / MODEL_FILE)
    for fname, m in cp.variants.items():
        m.save(tmp / fname)
    for part, arrays in cp.parts.items():
        _write_synced(tmp / f"{part}.npz", _npz(arrays))
    meta = {**cp.meta, "log_seq": cp.log_seq, "rows": cp.model.rows, "saved_at": time.time()}
    _write_synced(tmp / "meta.json", json.dumps(meta).encode())
    fsync_dir(tmp)
    if final.exists():  # the same log position written again (nothing learned since)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(directory)
    pointer_tmp = directory / (CURRENT + ".tmp")
    _write_synced(pointer_tmp, name.encode())
    os.replace(pointer_tmp, directory / CURRENT)
    fsync_dir(directory)
    for old in directory.glob("snap-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())

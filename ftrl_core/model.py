"""A model: the learner, its fields and feature options, names, and progressive metrics.

This is the object the trainer, the command line and the service drive. Model files hold
the config, the optimizer state and the step counters, with a format version, so that
resuming is exact: training on A, saving, loading and training on B predicts as training on
A then B in one run.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .batch import Batch
from .bounded import make_bounds
from .fields import FieldRegistry
from .metrics import ProgressiveMetrics
from .names import NameStore
from .optimizers import OPTIMIZERS, Optimizer
from .readers import FeatureOptions, Format, make_format
from .readers.rows import ERROR, OK
from .sparsity import Sparsity, SparsityCounter, top_weights

if TYPE_CHECKING:
    from .readers.jsonl import EventError, JsonlFormat, as_buffer, parse_event_array

#: the JSON reader's functions ``predict_json`` uses, bound as globals of this module on
#: first use: importing the JSON reader costs `ctr train` on a TSV file a twentieth of its
#: start-up (and tests replace them here)
_JSON_NAMES = ("as_buffer", "parse_event_array")


def _bind_json_reader() -> None:
    missing = [name for name in _JSON_NAMES if name not in globals()]
    if missing:
        from .readers import jsonl

        globals().update({name: getattr(jsonl, name) for name in missing})


def __getattr__(name: str) -> Any:
    if name in _JSON_NAMES:
        _bind_json_reader()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: 2 added bounded memory (the ``admit``, ``evict_idle``, ``max_coordinates`` config, the
#: filter's arrays, the records' ages); a version-1 file is a version-2 file without them,
#: so both load
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAGIC = "ctr-online-model"


class ModelFileError(Exception):
    """A model file that cannot be read (missing, corrupt, another format version)."""


class Model:
    """A learner over hashed features, with everything needed to resume or explain it."""

    def __init__(self, optimizer: Optimizer, registry: FieldRegistry | None = None,
                 options: FeatureOptions | None = None, data_format: str | None = None,
                 keep_names: bool = True) -> None:
        self.optimizer = optimizer
        self.registry = registry if registry is not None else FieldRegistry()
        self.options = options if options is not None else FeatureOptions()
        self.data_format = data_format
        self.names: NameStore | None = NameStore() if keep_names else None
        self.metrics = ProgressiveMetrics()

    # -- learning ----------------------------------------------------------------------------

    def learn(self, batch: Batch) -> np.ndarray:
        """Predict each row, then learn it; returns the predictions made before learning."""
        p, _ = self.optimizer.learn(batch)
        if self.names is not None:
            self.names.record(batch, self.optimizer.last_new_pos)
        self.metrics.update(p, batch.labels)
        return p

    def predict(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, uncertainty scores), without learning."""
        return self.optimizer.predict(batch)

    def predict_json(self, body: bytes | bytearray, fmt: JsonlFormat, events_only: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, list[EventError]] | None:
        """(probabilities, uncertainty scores, bad events) of a JSON body ``{"events":
        [...]}`` parsed with ``fmt`` (the errors of ``parse_event_array``; with any, nothing
        is predicted). The same as ``parse_event_array`` then ``predict``, with less Python
        on the way when the body scans in one kernel call (the service's single-event
        predictions spent more time building the ``Batch`` than scanning and scoring it):
        the two kernels run on the scanner's output arrays directly.

        ``events_only``: None, nothing predicted, if the body may hold a top-level key other
        than ``events`` (one was read, or the scan did not reach the body's end in one
        call), for a caller to whom such a key means something (the service's ``log``)."""
        _bind_json_reader()
        buf = as_buffer(body)
        out, ids = fmt.body_outputs(buf.size)
        with fmt.lock:  # labels are not read: a prediction ignores them, whatever they are
            status = fmt.scan_body(buf, True, False, out, ids, ignore_label=True)
        if events_only and status != ERROR and (status != OK or out.state[6]):
            return None
        if status != OK:  # bad events, or rows that outgrew the arrays: the general way
            result = parse_event_array(body, fmt, require_label=False, ignore_label=True)
            if result.errors:
                return np.empty(0), np.empty(0), result.errors
            return (*self.predict(result.batch), [])
        rows, nnz = int(out.state[1]), int(out.state[2])
        p, u = self.optimizer.predict_csr(out.indptr[: rows + 1], out.keys[:nnz],
                                          out.fields[:nnz], out.values[:nnz])
        return p, u, []

    def make_format(self, name: str | None = None) -> Format:
        """A reader format bound to this model's fields and options."""
        fmt = name or self.data_format
        if fmt is None:
            raise ValueError("the model does not know its data format: pass --format")
        return make_format(fmt, self.registry, self.options)

    # -- what it learned -----------------------------------------------------------------------

    @property
    def rows(self) -> int:
        return self.optimizer.steps

    def sparsity(self) -> Sparsity:
        counter = SparsityCounter()
        for keys in self.optimizer.table.iter_keys():
            counter.add(keys, self.optimizer.weights(keys))
        return counter.result(self.registry)

    def top_features(self, n: int) -> list[dict[str, Any]]:
        keys, w = self.optimizer.live_weights()
        tk, tw = top_weights(keys, w, n)
        out = []
        for k, wk in zip(tk.tolist(), tw.tolist(), strict=True):
            if wk == 0.0:
                break
            field, value = (self.names.describe(k, self.registry) if self.names is not None
                            else (self.registry.name((k >> 54) - 1), f"#{k:016x}"))
            out.append({"field": field, "value": value, "weight": wk, "key": f"{k:016x}"})
        return out

    def memory(self) -> dict[str, float]:
        table = self.optimizer.table
        live = max(table.size, 1)
        # the admission filter is memory spent per coordinate too
        bounds = self.optimizer.bounds
        filter_bytes = 0 if bounds is None else bounds.nbytes
        return {"table_bytes": table.nbytes, "live_coordinates": table.size,
                "table_capacity": table.capacity, "filter_bytes": filter_bytes,
                "bytes_per_coordinate": (table.nbytes + filter_bytes) / live,
                "names_bytes": 0 if self.names is None else self.names.nbytes}

    def config(self) -> dict[str, Any]:
        return {**self.optimizer.config(), "features": self.options.to_dict(),
                "format": self.data_format, "fields": self.registry.to_dict(),
                "keep_names": self.names is not None}

    # -- files -------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the model atomically (a temporary file in the same folder, then rename)."""
        path = Path(path)
        header = {"magic": MAGIC, "format_version": FORMAT_VERSION, "saved_at": time.time(),
                  "config": self.config(), "rows": self.rows}
        arrays: dict[str, np.ndarray] = {
            "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
        arrays.update(self.optimizer.state())
        arrays.update(self.metrics.state())
        if self.names is not None:
            arrays.update(self.names.state())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def to_bytes(self) -> bytes:
        """The model file's bytes (for downloads)."""
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "model.ctr"
            self.save(p)
            return p.read_bytes()

    @classmethod
    def load(cls, path: str | Path | io.BytesIO) -> Model:
        """Read a model file; whatever is wrong with it is a ``ModelFileError`` of one line
        (missing, empty, not an archive, an archive without a model, a damaged one)."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except FileNotFoundError:
            raise ModelFileError(f"{path}: no such model file") from None
        except IsADirectoryError:
            raise ModelFileError(f"{path}: is a directory, not a model file") from None
        except EOFError:
            raise ModelFileError(f"{path}: the file is empty, not a model file") from None
        except (OSError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
            # numpy's own message suggests unpickling an unknown file: never say that
            what = "it holds pickled data" if "pickle" in str(exc) else str(exc)
            raise ModelFileError(f"{path}: not a model file ({what[:200]})") from None
        try:
            header = json.loads(arrays.pop("header").tobytes())
        except (KeyError, ValueError):
            raise ModelFileError(f"{path}: not a model file (no header)") from None
        if not isinstance(header, dict) or header.get("magic") != MAGIC:
            raise ModelFileError(f"{path}: not a model file")
        if header.get("format_version") not in READABLE_VERSIONS:
            raise ModelFileError(f"{path}: model format version {header.get('format_version')}"
                                 f", this program reads version {FORMAT_VERSION}")
        try:
            return cls.from_config(header["config"], arrays)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ModelFileError(f"{path}: a damaged model file ({detail[:200]})") from None

    @classmethod
    def from_config(cls, config: dict[str, Any], arrays: dict[str, np.ndarray] | None = None
                    ) -> Model:
        if config["optimizer"] not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {config['optimizer']!r}")
        opt_cls = OPTIMIZERS[config["optimizer"]]
        params = dict(config["params"])
        params.update(config.get("extra", {}))
        optimizer = opt_cls(field_l1={int(k): v for k, v in config["field_l1"].items()},
                            field_l2={int(k): v for k, v in config["field_l2"].items()},
                            **params)
        optimizer.set_bounds(make_bounds(config.get("admit"), config.get("evict_idle"),
                                         config.get("max_coordinates")))
        model = cls(optimizer, FieldRegistry.from_dict(config["fields"]),
                    FeatureOptions(**config["features"]), config.get("format"),
                    keep_names=config.get("keep_names", True))
        if arrays is not None:
            optimizer.load_state(arrays)
            model.metrics.load_state(arrays)
            if model.names is not None and "names_key" in arrays:
                model.names = NameStore.from_state(arrays)
        return model

"""``memory://``: the model lives in this process only; snapshot files persist it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ftrl_core.batch import Batch
from ftrl_core.fields import FieldRegistry
from ftrl_core.model import Model


class MemoryStore:
    """The embedded store: nothing to share, nothing to push."""

    flush_interval = 0.0

    def __init__(self, url: str = "memory://") -> None:
        self.url = url

    def open(self, build: Callable[[], Model], model_in: Path | None) -> Model:
        return Model.load(model_in) if model_in is not None else build()

    def share_fields(self, registry: FieldRegistry, known: int) -> list[str] | None:
        return None

    def before_learn(self, model: Model, batch: Batch) -> None:
        pass

    def after_learn(self, model: Model, batch: Batch) -> None:
        pass

    def sync(self, model: Model) -> None:
        pass

    def shared_copy(self, model: Model) -> Model | None:
        return None

    def flush_wanted(self) -> bool:
        return False  # nothing is shared: no flush is ever begun

    def begin_flush(self, model: Model) -> None:
        return None

    def roundtrip(self, flush: object) -> None:
        return None

    def finish_flush(self, model: Model, flush: object, replies: object) -> None:
        pass

    def status(self) -> dict[str, object]:
        return {"url": self.url, "healthy": True}

    def close(self) -> None:
        pass

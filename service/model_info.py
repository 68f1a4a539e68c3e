"""``GET /v1/model``: what the model is and what it learned, as one JSON object."""

from __future__ import annotations

import math
from typing import Any

from .learner import LearnerService


async def describe(learner: LearnerService) -> dict[str, Any]:
    model = learner.model
    stats = await learner.stats()
    rows, unflushed = await learner.shared_rows()
    cfg = model.optimizer.config()
    registry = model.registry
    return {
        "optimizer": cfg["optimizer"],
        "params": {**cfg["params"], **cfg.get("extra", {})},
        "field_l1": {registry.name(int(k)): v for k, v in cfg["field_l1"].items()},
        "field_l2": {registry.name(int(k)): v for k, v in cfg["field_l2"].items()},
        "rows": rows,
        "unflushed_rows": unflushed,
        "nnz": stats.nnz,
        "coordinates": stats.coordinates,
        "l1_norm": stats.l1_norm,
        "logloss": _finite(model.metrics.logloss),
        "auc": _finite(model.metrics.auc),
        "model_version": rows,
        "state_store": learner.store.url,
        "worker": learner.store.status().get("worker"),
        "features": {**model.options.to_dict(), "strict": learner.settings.strict,
                     "interactions": [registry.name(p[2]) for p in registry.pairs]},
        "fields": list(registry.names),
        "memory": model.memory(),
    }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None

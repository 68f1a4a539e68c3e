"""One router per topic; routes stay thin and call the learner service."""

from __future__ import annotations

from . import dashboard, health, join, model, predict, train

ROUTERS = (train.router, predict.router, join.router, model.router, dashboard.router, health.router)

__all__ = ["ROUTERS"]

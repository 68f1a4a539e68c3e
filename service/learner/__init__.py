"""The learner service (``service``) and its parts: learning one request (``training``),
the field numbering (``fields``), predictions (``prediction``), idempotency keys, the log
records (``records``), recovery at start-up and consistent copies (``snapshots``)."""

from __future__ import annotations

from .service import LearnerService
from .training import Learned

__all__ = ["Learned", "LearnerService"]

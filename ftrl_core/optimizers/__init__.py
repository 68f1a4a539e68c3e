"""The learners, one file each, registered in one explicit dict."""

from __future__ import annotations

from .base import Optimizer
from .fobos import L1FOBOS
from .ftrl import FTRLProximal
from .rda import L1RDA
from .tg import TruncatedGradient

OPTIMIZERS: dict[str, type[Optimizer]] = {
    FTRLProximal.name: FTRLProximal,
    L1RDA.name: L1RDA,
    L1FOBOS.name: L1FOBOS,
    TruncatedGradient.name: TruncatedGradient,
}

__all__ = [
    "L1FOBOS",
    "L1RDA",
    "OPTIMIZERS",
    "FTRLProximal",
    "Optimizer",
    "TruncatedGradient",
]

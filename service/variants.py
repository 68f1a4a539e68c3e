"""Shadow variants: extra learners trained on the primary's stream (``--variants``).

McMahan et al. (2013, section 4) train "many similar models" on one stream to compare
learning rates and regularisation on real traffic. Here every accepted batch is parsed and
hashed once; the primary learns it, then each variant learns the same ``Batch`` object. The
primary answers predictions; each variant keeps its own progressive metrics, so its logloss
and AUC are measured on exactly the events the primary saw, in the same order.

Syntax (``--variants`` / ``CTR_VARIANTS``): variants separated by commas, each
``OPTIMIZER[:PARAM=VALUE;PARAM=VALUE...]``::

    rda:lambda=0.5,fobos:lambda=1,tg:gravity=0.5,ftrl:l1=5
    ftrl:alpha=0.1;l1=5;name=strong-l1, fobos:rate=global;eta=1

``PARAM`` is one of the optimizer's hyperparameters (``ctr train --help`` lists them), ``l1``
for its L1 strength whatever the paper calls it (ftrl ``l1``, rda/fobos ``lambda``, tg
``gravity``), ``rate`` (fobos, tg) or ``name``. Unnamed variants are called by their text
without spaces (``ftrl:l1=5``); ``primary`` is reserved. Unspecified hyperparameters take the
optimizer's defaults (not the primary's), and the primary's per-field L1/L2 overrides apply
to every variant (L2 ones only to learners with an L2 parameter).

Each variant shares the primary's field registry and feature options (it sees the same keys)
and records no feature names. With a shared state store (Redis), variants stay local to
their worker: they learn that worker's share of the traffic.

Checkpoints: a variant is saved beside the primary as ``variant-<slug>.ctr`` (the name with
every run of characters outside ``[A-Za-z0-9._]`` made ``-``). On a restart from a data
directory, or from ``--model-in DIR/model.ctr``, a variant resumes from its file when that
file has the same learner and has learned as many events as the primary; otherwise it
starts empty (and the log says why); the write-ahead log after the checkpoint is learned
by the variants as by the primary. A primary loaded from a shared store's state starts
every variant empty.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftrl_core.model import Model, ModelFileError
from ftrl_core.optimizers import OPTIMIZERS

log = logging.getLogger(__name__)

PRIMARY = "primary"
_SLUG = re.compile(r"[^A-Za-z0-9._]+")


@dataclass(frozen=True)
class VariantSpec:
    """One ``--variants`` entry: a name, a registered optimizer, its hyperparameters."""

    name: str
    optimizer: str
    params: dict[str, Any]

    @property
    def filename(self) -> str:
        return f"variant-{slug(self.name)}.ctr"


def slug(name: str) -> str:
    return _SLUG.sub("-", name).strip("-") or "variant"


def parse_variants(text: str | None) -> list[VariantSpec]:
    """The variants of ``text``; ValueError naming the bad part otherwise."""
    if text is None or not text.strip():
        return []
    specs: list[VariantSpec] = []
    for part in text.split(","):
        spec = _parse_one(part.strip(), text)
        for other in specs:
            if other.name == spec.name:
                raise ValueError(f"two variants are named {spec.name!r}: give one a "
                                 f"name=... parameter")
            if other.filename == spec.filename:
                raise ValueError(f"variants {other.name!r} and {spec.name!r} would share the "
                                 f"snapshot file {spec.filename}: rename one")
        specs.append(spec)
    return specs


def _parse_one(part: str, text: str) -> VariantSpec:
    if not part:
        raise ValueError(f"an empty variant in {text!r} (variants are separated by commas)")
    optimizer, _, rest = part.partition(":")
    optimizer = optimizer.strip()
    cls = OPTIMIZERS.get(optimizer)
    if cls is None:
        raise ValueError(f"{part!r}: unknown optimizer {optimizer!r} (known: "
                         f"{', '.join(sorted(OPTIMIZERS))})")
    params: dict[str, Any] = {}
    name: str | None = None
    canonical: list[str] = []
    for item in rest.split(";") if rest.strip() else []:
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key or not value:
            raise ValueError(f"{part!r}: {item.strip()!r} is not PARAM=VALUE (parameters of "
                             "one variant are separated by ';')")
        if key == "name":
            if name is not None:
                raise ValueError(f"{part!r}: name is given twice")
            name = value
            continue
        target = cls.l1_param if key == "l1" else key
        if target in params:
            raise ValueError(f"{part!r}: {target} is given twice")
        if target in cls.extra_params():
            params[target] = value
        elif target in cls.defaults:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{part!r}: {key}={value!r} is not a number") from None
            if math.isnan(number):
                raise ValueError(f"{part!r}: {key} is NaN")
            params[target] = number
        else:
            known = [*cls.defaults, *cls.extra_params(), "name"]
            if cls.l1_param != "l1":
                known.insert(0, "l1")
            raise ValueError(f"{part!r}: {optimizer} has no parameter {key!r} (known: "
                             f"{', '.join(known)})")
        canonical.append(f"{key}={value}")
    try:
        cls(**params)  # the optimizer's own range checks
    except ValueError as exc:
        raise ValueError(f"{part!r}: {exc}") from None
    if name is None:
        name = optimizer + (":" + ";".join(canonical) if canonical else "")
    if name == PRIMARY:
        raise ValueError(f"{part!r}: the name {PRIMARY!r} is reserved for the primary model")
    return VariantSpec(name, optimizer, params)


class Variant:
    """A shadow learner: a ``Model`` sharing the primary's fields and feature options."""

    def __init__(self, spec: VariantSpec, model: Model) -> None:
        self.spec = spec
        self.model = model

    @property
    def name(self) -> str:
        return self.spec.name


def build_variant(spec: VariantSpec, primary: Model) -> Variant:
    """A fresh variant of ``primary``: the spec's learner, the primary's per-field
    overrides, registry, feature options and memory bounds (its own filter and ages, so
    its memory is bounded as the primary's is)."""
    cls = OPTIMIZERS[spec.optimizer]
    prim = primary.optimizer
    field_l2 = prim.field_l2_overrides if cls.l2_param is not None else {}
    optimizer = cls(field_l1=prim.field_l1_overrides, field_l2=field_l2, **spec.params)
    if prim.bounds is not None:
        optimizer.set_bounds(prim.bounds.fresh())
    model = Model(optimizer, primary.registry, primary.options, primary.data_format,
                  keep_names=False)
    return Variant(spec, model)


def open_variants(specs: list[VariantSpec], primary: Model, folder: Path | None
                  ) -> list[Variant]:
    """The variants of ``specs``, resumed from ``folder`` where a matching file is there."""
    out = []
    for spec in specs:
        variant = build_variant(spec, primary)
        if folder is not None:
            resumed = _resume(variant, primary, folder / spec.filename)
            if resumed is not None:
                variant.model = resumed
        out.append(variant)
    return out


def resume_variants(specs: list[VariantSpec], primary: Model, saved: dict[str, Model]
                    ) -> list[Variant]:
    """The variants of ``specs``, resumed from a checkpoint's ``saved`` (file name ->
    model) where a matching one is there."""
    out = []
    for spec in specs:
        variant = build_variant(spec, primary)
        model = saved.get(spec.filename)
        if model is None:
            log.info("variant %s starts empty (not in the checkpoint)", variant.name)
        else:
            resumed = _adopt(variant, primary, model, "the checkpoint")
            if resumed is not None:
                variant.model = resumed
        out.append(variant)
    return out


def _resume(fresh: Variant, primary: Model, path: Path) -> Model | None:
    if not path.exists():
        log.info("variant %s starts empty (no %s)", fresh.name, path)
        return None
    try:
        saved = Model.load(path)
    except ModelFileError as exc:
        log.warning("variant %s starts empty: %s", fresh.name, exc)
        return None
    return _adopt(fresh, primary, saved, str(path))


def _adopt(fresh: Variant, primary: Model, saved: Model, where: str) -> Model | None:
    if saved.optimizer.config() != fresh.model.optimizer.config():
        log.warning("variant %s starts empty: %s holds another learner (%s)", fresh.name,
                    where, saved.optimizer.config())
        return None
    if saved.rows != primary.rows:
        log.warning("variant %s starts empty: %s learned %d events, the primary %d",
                    fresh.name, where, saved.rows, primary.rows)
        return None
    saved.registry = primary.registry
    saved.options = primary.options
    saved.names = None
    log.info("variant %s resumed from %s (%d events)", fresh.name, where, saved.rows)
    return saved

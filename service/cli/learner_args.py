"""Learner and feature flags shared by ``ctr train`` and ``ctr serve``; building a model."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ftrl_core.fields import FieldRegistry, parse_interactions
from ftrl_core.model import Model
from ftrl_core.optimizers import OPTIMIZERS
from ftrl_core.readers import FeatureOptions, make_format

#: flag -> (dest, help); values are floats unless listed in INT_FLAGS / STR_FLAGS
LEARNER_FLAGS = {
    "--alpha": "FTRL, and the adaptive rate of fobos/tg: alpha",
    "--beta": "FTRL, and the adaptive rate of fobos/tg: beta",
    "--l1": "L1 strength (ftrl l1; rda/fobos lambda; tg gravity)",
    "--l2": "L2 strength (ftrl)",
    "--lambda": "rda/fobos: L1 strength",
    "--gamma": "rda: gamma",
    "--rho": "rda: enhanced-RDA rho",
    "--eta": "fobos/tg: global learning rate eta (eta/sqrt(t))",
    "--gravity": "tg: gravity",
    "--theta": "tg: truncation threshold theta (inf allowed)",
    "--k": "tg: truncate every k steps",
}
FEATURE_FLAGS = ("hash_bits", "interactions", "drop_missing", "ints", "max_row_features")


def add_learner_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("learner")
    g.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=None,
                   help="the learner (default ftrl)")
    for flag, help_ in LEARNER_FLAGS.items():
        g.add_argument(flag, dest=f"opt_{flag[2:]}", type=float, default=None, help=help_)
    g.add_argument("--rate", choices=["global", "adaptive"], default=None,
                   help="fobos/tg: eta/sqrt(t) (global) or alpha/(beta+sqrt(n_i)) (adaptive)")
    g.add_argument("--field-l1", action="append", default=[], metavar="FIELD=VALUE",
                   help="per-field L1 override (repeat, or comma-separate)")
    g.add_argument("--field-l2", action="append", default=[], metavar="FIELD=VALUE",
                   help="per-field L2 override (ftrl)")
    f = p.add_argument_group("features")
    f.add_argument("--hash-bits", type=int, default=None,
                   help="fold keys into 2^B slots (VW's -b); default: exact 64-bit keys")
    f.add_argument("--interactions", default=None, metavar="F:G,...",
                   help="quadratic interactions between fields, like VW's -q")
    f.add_argument("--drop-missing", action="store_true", default=None,
                   help="drop empty fields instead of giving them a 'missing' token")
    f.add_argument("--ints", choices=["token", "log"], default=None,
                   help="Criteo integer columns as tokens (default) or log-binned tokens")
    f.add_argument("--max-row-features", type=int, default=None,
                   help="refuse rows with more features than this (default 10000)")
    f.add_argument("--no-names", dest="keep_names", action="store_false",
                   help="do not record feature names (saves ~30 bytes per coordinate)")


def add_state_arguments(p: argparse.ArgumentParser) -> None:
    """Where the model's state lives (``ctr train``, ``ctr load-state``)."""
    g = p.add_argument_group("state store")
    g.add_argument("--state", default="memory://", metavar="URL",
                   help="memory:// (default) or redis://host:port[/db][,redis://...] (shards, "
                        "in a fixed order); rediss:// for TLS; "
                        "redis+cluster://host:port[,host:port...] for a Redis Cluster")
    g.add_argument("--model-name", default="default",
                   help="the model's name in the shared store (default 'default')")
    g.add_argument("--sync-every-events", type=int, default=0, metavar="N",
                   help="flush deltas to the store after N learned rows (default: every batch)")
    g.add_argument("--buckets", type=int, default=None,
                   help="exact-key layout: hashes the coordinates are spread over, fixed when "
                        "the model is created (aim at live coordinates / 100; default 16384)")


def _parse_overrides(items: list[str], flag: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.rpartition("=")
            if not sep or not name:
                raise ValueError(f"{flag}: {part!r} is not FIELD=VALUE")
            try:
                v = float(value)
            except ValueError:
                raise ValueError(f"{flag}: {value!r} is not a number (in {part!r})") from None
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{flag}: {name} must be finite and >= 0, got {value}")
            out[name] = v
    return out


def learner_params(args: argparse.Namespace, optimizer: str) -> dict[str, Any]:
    """The hyperparameters given on the command line for ``optimizer``."""
    cls = OPTIMIZERS[optimizer]
    params: dict[str, Any] = {}
    for flag in LEARNER_FLAGS:
        name = flag[2:]
        value = getattr(args, f"opt_{name}")
        if value is None:
            continue
        target = cls.l1_param if name == "l1" else name
        if target not in cls.defaults:
            raise ValueError(f"--{name} does not apply to --optimizer {optimizer} "
                             f"(its parameters: {', '.join(cls.defaults)})")
        if name == "l1" and getattr(args, f"opt_{cls.l1_param}", None) is not None \
                and cls.l1_param != "l1":
            raise ValueError(f"give --l1 or --{cls.l1_param}, not both")
        params[target] = value
    if args.rate is not None:
        if "rate" not in cls.extra_params():
            raise ValueError(f"--rate does not apply to --optimizer {optimizer}")
        params["rate"] = args.rate
    return params


def explicit_learner_flags(args: argparse.Namespace) -> list[str]:
    given = [f for f in LEARNER_FLAGS if getattr(args, f"opt_{f[2:]}") is not None]
    for name in ("optimizer", "rate", *FEATURE_FLAGS):
        if getattr(args, name, None) is not None:
            given.append("--" + name.replace("_", "-"))
    if args.field_l1 or args.field_l2:
        given.append("--field-l1/--field-l2")
    return given


def build_model(args: argparse.Namespace, data_format: str) -> Model:
    """A fresh model from the learner and feature flags, for data in ``data_format``."""
    options = FeatureOptions(
        drop_missing=bool(args.drop_missing), ints=args.ints or "token",
        hash_bits=args.hash_bits or 0,
        max_row_features=args.max_row_features or FeatureOptions.max_row_features)
    registry = FieldRegistry()
    make_format(data_format, registry, options)  # fixed-schema formats register their fields
    if args.interactions:
        registry.add_interactions(parse_interactions(args.interactions))
    optimizer = args.optimizer or "ftrl"
    field_l1 = {registry.add(k): v
                for k, v in _parse_overrides(args.field_l1, "--field-l1").items()}
    field_l2 = {registry.add(k): v
                for k, v in _parse_overrides(args.field_l2, "--field-l2").items()}
    opt = OPTIMIZERS[optimizer](field_l1=field_l1, field_l2=field_l2,
                                **learner_params(args, optimizer))
    return Model(opt, registry, options, data_format, keep_names=args.keep_names)

"""The learner and feature options, declared once: the command line's flags
(``add_arguments``), the service's ``CTR_`` settings (``Settings`` makes its fields from
these) and the model builder (``build_model``) all read this class.

A field's flag is its name with dashes (``--hash-bits``; ``lambda_`` is ``--lambda``) unless
its ``flag`` says otherwise; ``None`` means "not given": the learner's own default applies,
and a model file or stored model supplies it instead. Plain dataclasses, not pydantic:
``ctr train`` reads them and should not pay pydantic's import (0.17 s here).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ftrl_core.bounded import make_bounds
from ftrl_core.fields import FieldRegistry, parse_interactions
from ftrl_core.model import Model
from ftrl_core.optimizers import OPTIMIZERS
from ftrl_core.readers import FeatureOptions, make_format


def _option(help_: str, group: str = "learner", **extra: Any) -> Any:
    return dataclasses.field(default=None, metadata={"help": help_, "group": group, **extra})


@dataclass
class LearnerOptions:
    optimizer: Literal["ftrl", "rda", "fobos", "tg"] | None = _option(
        "the learner (default ftrl)", choices=("fobos", "ftrl", "rda", "tg"))
    alpha: float | None = _option("FTRL, and the adaptive rate of fobos/tg: alpha", param=True)
    beta: float | None = _option("FTRL, and the adaptive rate of fobos/tg: beta", param=True)
    l1: float | None = _option("L1 strength (ftrl l1; rda/fobos lambda; tg gravity)",
                               param=True)
    l2: float | None = _option("L2 strength (ftrl)", param=True)
    lambda_: float | None = _option("rda/fobos: L1 strength", param=True, env="CTR_LAMBDA")
    gamma: float | None = _option("rda: gamma", param=True)
    rho: float | None = _option("rda: enhanced-RDA rho", param=True)
    eta: float | None = _option("fobos/tg: global learning rate eta (eta/sqrt(t))", param=True)
    gravity: float | None = _option("tg: gravity", param=True)
    theta: float | None = _option("tg: truncation threshold theta (inf allowed)", param=True)
    k: float | None = _option("tg: truncate every k steps", param=True)
    rate: Literal["global", "adaptive"] | None = _option(
        "fobos/tg: eta/sqrt(t) (global) or alpha/(beta+sqrt(n_i)) (adaptive)",
        choices=("global", "adaptive"))
    field_l1: str | None = _option("per-field L1 override FIELD=VALUE (repeat, or "
                                   "comma-separate)", append=True)
    field_l2: str | None = _option("per-field L2 override FIELD=VALUE (ftrl)", append=True)
    hash_bits: int | None = _option("fold keys into 2^B slots (VW's -b); default: exact "
                                    "64-bit keys", "features", type=int)
    interactions: str | None = _option("quadratic interactions between fields, F:G,...",
                                       "features")
    drop_missing: bool | None = _option("drop empty fields instead of giving them a "
                                        "'missing' token", "features", action="store_true")
    ints: Literal["token", "log"] | None = _option(
        "Criteo integer columns as tokens (default) or log-binned tokens", "features",
        choices=("token", "log"))
    max_row_features: int | None = _option("refuse rows with more features than this "
                                           "(default 10000)", "features", type=int)
    keep_names: bool | None = _option("do not record feature names (saves ~30 bytes per "
                                      "coordinate)", "features", flag="--no-names",
                                      action="store_false")
    fields: str | None = _option("jsonl and the service: the declared fields (a list, or a "
                                 "file of one name a line); an event that leaves one out "
                                 "gets its missing token, as an empty TSV column",
                                 "features", metavar="NAME,...|@FILE")
    admit: str | None = _option("feature admission: bloom:N[:INSERTS] (a feature gets a "
                                "coordinate at its N-th occurrence, counted in a rolling "
                                "counting Bloom filter of INSERTS insertions a generation) "
                                "or poisson:P (each occurrence admits it with probability P)",
                                "memory", metavar="bloom:N|poisson:P")
    evict_idle: str | None = _option("drop a coordinate untouched for N learned events, or "
                                     "for N seconds/hours/days with a suffix s, h or d",
                                     "memory", metavar="N[s|h|d]")
    max_coordinates: int | None = _option("at most N coordinates after each learned batch: "
                                          "drop approximately least-recently-used ones "
                                          "(the oldest of 5 sampled)", "memory", type=int,
                                          metavar="N")
    strict_fields: bool | None = _option("with --fields: a field that is not declared is "
                                         "an error", "features", action="store_true")

    @staticmethod
    def options() -> tuple[dataclasses.Field[Any], ...]:
        """The dataclass fields: one per option."""
        return dataclasses.fields(LearnerOptions)

    @staticmethod
    def types() -> dict[str, Any]:
        """Each field's type (the annotations, resolved)."""
        return typing.get_type_hints(LearnerOptions)

    # -- the command line ---------------------------------------------------------------------

    @staticmethod
    def flag(name: str) -> str:
        meta = _meta(name)
        return str(meta.get("flag") or "--" + name.rstrip("_").replace("_", "-"))

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        groups = {"learner": p.add_argument_group("learner"),
                  "features": p.add_argument_group("features"),
                  "memory": p.add_argument_group("bounded memory")}
        for f in cls.options():
            meta = f.metadata
            kw: dict[str, Any] = {"dest": f.name, "default": None, "help": meta["help"]}
            if "action" in meta:
                kw["action"] = meta["action"]
            elif meta.get("append"):
                kw.update(action="append", metavar="FIELD=VALUE")
            elif "choices" in meta:
                kw["choices"] = list(meta["choices"])
            else:
                kw["type"] = float if meta.get("param") else meta.get("type", str)
            if "metavar" in meta:
                kw["metavar"] = meta["metavar"]
            groups[meta["group"]].add_argument(cls.flag(f.name), **kw)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LearnerOptions:
        values = {f.name: getattr(args, f.name, None) for f in cls.options()}
        for name in ("field_l1", "field_l2"):
            given = values[name]
            if isinstance(given, list):
                values[name] = ",".join(given) or None
        return cls(**values)

    def given(self) -> dict[str, Any]:
        """The options that were given, by field name."""
        return {f.name: getattr(self, f.name) for f in self.options()
                if getattr(self, f.name) is not None}

    def explicit(self) -> list[str]:
        """The flags given (``--no-names`` aside: it changes no learning)."""
        return [self.flag(k) for k in self.given() if k != "keep_names"]

    # -- the model ----------------------------------------------------------------------------

    def params_for(self, optimizer: str) -> dict[str, Any]:
        """The hyperparameters given for ``optimizer`` (ValueError naming a flag that does
        not apply to it)."""
        cls = OPTIMIZERS[optimizer]
        params: dict[str, Any] = {}
        for name in (f.name for f in self.options() if f.metadata.get("param")):
            value = getattr(self, name)
            if value is None:
                continue
            plain = name.rstrip("_")
            target = cls.l1_param if plain == "l1" else plain
            if target not in cls.defaults:
                raise ValueError(f"--{plain} does not apply to --optimizer {optimizer} "
                                 f"(its parameters: {', '.join(cls.defaults)})")
            if plain == "l1" and cls.l1_param != "l1" \
                    and getattr(self, _field_name(cls.l1_param)) is not None:
                raise ValueError(f"give --l1 or --{cls.l1_param}, not both")
            params[target] = value
        if self.rate is not None:
            if "rate" not in cls.extra_params():
                raise ValueError(f"--rate does not apply to --optimizer {optimizer}")
            params["rate"] = self.rate
        return params

    def build_model(self, data_format: str) -> Model:
        """A fresh model from these options, for data in ``data_format``."""
        fields = parse_fields(self.fields)
        if fields and data_format != "jsonl":
            raise ValueError(f"--fields declares JSON fields; {data_format} data has its own")
        options = FeatureOptions(
            drop_missing=bool(self.drop_missing), ints=self.ints or "token",
            hash_bits=self.hash_bits or 0,
            max_row_features=self.max_row_features or FeatureOptions.max_row_features,
            fields=fields, strict_fields=bool(self.strict_fields))
        registry = FieldRegistry(fields)  # declared fields take ids 1..n
        make_format(data_format, registry, options)  # fixed-schema formats register fields
        if self.interactions:
            registry.add_interactions(parse_interactions(self.interactions))
        optimizer = self.optimizer or "ftrl"
        field_l1 = {registry.add(k): v for k, v in _overrides(self.field_l1, "--field-l1")}
        field_l2 = {registry.add(k): v for k, v in _overrides(self.field_l2, "--field-l2")}
        opt = OPTIMIZERS[optimizer](field_l1=field_l1, field_l2=field_l2,
                                    **self.params_for(optimizer))
        # parsed here, and refused with the flag's name
        opt.set_bounds(make_bounds(self.admit, self.evict_idle, self.max_coordinates))
        return Model(opt, registry, options, data_format,
                     keep_names=self.keep_names is not False)


def _meta(name: str) -> dict[str, Any]:
    return dict(next(f.metadata for f in LearnerOptions.options() if f.name == name))


def _field_name(param: str) -> str:
    return "lambda_" if param == "lambda" else param


def parse_fields(text: str | None) -> tuple[str, ...]:
    """``--fields``: ``NAME,NAME,...`` or ``@FILE`` (one name a line; blank lines and
    lines starting with # are skipped)."""
    if not text:
        return ()
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--fields {text}: cannot read it ({exc})") from None
        names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    else:
        names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError(f"--fields {text[:80]!r}: no field names")
    return tuple(names)


def _overrides(text: str | None, flag: str) -> list[tuple[str, float]]:
    out: dict[str, float] = {}
    for part in (text or "").split(","):
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
    return list(out.items())


#: the options that bound memory
BOUNDED_MEMORY_OPTIONS = ("admit", "evict_idle", "max_coordinates")


def refuse_bounded_flags(options: LearnerOptions, state_url: str) -> None:
    """A ValueError of one line naming the first bounded-memory flag given with a state
    store that cannot bound memory: the Redis store does it with redis:// shards or a
    cluster's slot groups in exact-key mode (``service.stores.redis.sweep``), not with
    --hash-bits (whose dense chunks are bounded by the bits already)."""
    scheme = state_url.split("://")[0]
    if scheme == "memory" or (scheme in ("redis", "redis+cluster") and not options.hash_bits):
        return
    for name in BOUNDED_MEMORY_OPTIONS:
        if getattr(options, name) is not None:
            flag = LearnerOptions.flag(name)
            where = "--hash-bits" if scheme in ("redis", "redis+cluster") \
                else f"--state {scheme}://"
            raise ValueError(f"{flag} does not work with {where}: use memory://, redis:// "
                             "shards or redis+cluster:// in exact-key mode")

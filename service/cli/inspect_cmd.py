"""Show what a model file holds: its config, size, sparsity per field, and top weights.

Example:
  ctr inspect m.ctr --top 20
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ftrl_core.model import Model


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="model file")
    p.add_argument("--top", type=int, default=20, help="how many top weights (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    if args.top < 0:
        raise ValueError(f"--top must be >= 0, got {args.top}")
    model = Model.load(args.model)
    sp = model.sparsity()
    top = model.top_features(args.top)
    cfg = model.optimizer.config()
    if args.json:
        print(json.dumps({"config": model.config(), "rows": model.rows,
                          "metrics": model.metrics.as_dict(), "sparsity": sp.as_dict(),
                          "memory": model.memory(), "top": top}, indent=1))
        return 0
    params = ", ".join(f"{k}={v:g}" for k, v in cfg["params"].items())
    extra = "".join(f", {k}={v}" for k, v in cfg.get("extra", {}).items())
    print(f"model      {args.model}")
    print(f"optimizer  {cfg['optimizer']} ({params}{extra})")
    feats = model.options.to_dict()
    print(f"features   format={model.data_format} hash_bits={feats['hash_bits'] or 'exact'} "
          f"drop_missing={feats['drop_missing']} ints={feats['ints']} "
          f"interactions={[model.registry.name(p[2]) for p in model.registry.pairs]}")
    for label, overrides in (("field l1", cfg["field_l1"]), ("field l2", cfg["field_l2"])):
        if overrides:
            print(f"{label:<10} " + ", ".join(f"{model.registry.name(int(k))}={v:g}"
                                             for k, v in overrides.items()))
    m = model.metrics.as_dict()
    print(f"rows       {model.rows:,}  (progressive logloss {m['logloss']:.6f}, "
          f"auc {m['auc']:.5f})")
    print(f"stored     {sp.coordinates:,} coordinates, nnz {sp.nnz:,}, L1 norm {sp.l1_norm:.4f}")
    print()
    print(f"{'field':<16}{'coordinates':>12}{'nnz':>10}{'L1':>12}")
    for name, st in sp.fields.items():
        print(f"{name:<16}{st['coordinates']:>12,}{st['nnz']:>10,}{st['l1']:>12.4f}")
    if top:
        print()
        print(f"top {len(top)} weights by |w|")
        print(f"{'weight':>12}  {'field':<16}value")
        for t in top:
            print(f"{t['weight']:>12.6f}  {t['field']:<16}{t['value']}")
    return 0

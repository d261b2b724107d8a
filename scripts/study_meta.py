"""Study: which Level-1/Level-2 layout to default to, judged on validation folds only.

    .venv/bin/python scripts/study_meta.py --models WF_MODELS --data ../shared/data/binance-1h

WF_MODELS is the models folder of one ``rstack train DATA --walk-forward K``. For folds 1..K-1 (their
test periods end before the final test segment starts) the study rebuilds each fold's training
table, takes the fold's own Level-0 holdout predictions from its checkpoints, and refits Levels 1
and 2 in every variant below through the product's own ``fit_levels_1_2``. It prints each variant's
ROC-AUC of Level 1 and Level 2 on each fold's test period and their mean. The last fold (whose test
segment is the final one) is never read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rstack.cluster.runtime import Runtime
from rstack.config import build_config, load_config
from rstack.data.discover import discover
from rstack.features.table import build_training_table
from rstack.features.vol import scaled_names
from rstack.models.meta import base_rows, fit_levels_1_2

CONTEXT = ["lrv_1d", "lrv_7d", "lseas_h", "tod_sin", "tod_cos"]
VARIANTS: dict[str, dict[str, Any]] = {
    "seed layout (L1 on L0, L2 on L1)": {"level1.context": [], "level2.skip": False},
    "L1 + context": {"level1.context": CONTEXT, "level2.skip": False},
    "L2 skip": {"level1.context": [], "level2.skip": True},
    "L1 + context, L2 skip": {"level1.context": CONTEXT, "level2.skip": True},
    "L1 + context, L2 skip, L1 depth 5": {"level1.context": CONTEXT, "level2.skip": True, "level1.max_depth": 5},
    "L1 + context, L2 skip, L1 depth 3": {"level1.context": CONTEXT, "level2.skip": True, "level1.max_depth": 3},
    "L1 + context, L1 depth 5": {"level1.context": CONTEXT, "level2.skip": False, "level1.max_depth": 5},
}


def _fold(spark: Any, state: dict, run_dir: str, data_dir: str, variants: dict[str, dict[str, Any]]) -> dict:
    run = Path(run_dir)
    manifest = json.loads((run / "manifest.json").read_text())
    cfg = build_config(manifest["config"])
    table, summary = build_training_table(spark, discover(Path(data_dir)), cfg)
    try:
        base = base_rows(table, tuple(c for c in scaled_names(cfg.features) if c in table.columns))
        # A batch's predictions: a folder of Parquet parts (a single file in runs of older versions).
        l0 = [spark.read.parquet(str(p)) for p in sorted((run / "checkpoints" / "level0").glob("batch_*.parquet"))]
        prior = summary["positive_rate_by_segment"]["l0_train"]
        out: dict[str, dict[str, float]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, over in variants.items():
                result, test, l2_fit = fit_levels_1_2(base, l0, cfg.replace(over), f"{tmp}/l1", f"{tmp}/l2", prior)
                test.unpersist()
                l2_fit.unpersist()
                m = result["metrics"]
                out[name] = {"level1": m["level1"]["roc_auc"], "level2": m["level2"]["roc_auc"]}
        out["_baselines"] = {
            n: v["roc_auc"] for n, v in manifest["metrics"].items() if n.startswith(("baseline", "batch"))
        }
        return out
    finally:
        table.unpersist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    args = ap.parse_args()
    last = json.loads((args.models / "latest" / "manifest.json").read_text())
    folds = last["walk_forward"]["folds"][:-1]  # the last fold's test segment is the final one: not read
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "laptop.yaml", {"runtime.dashboard": False})
    results = []
    with Runtime(cfg.runtime, max_concurrency=4) as rt:
        for f in folds:
            run_dir = args.models / f["run_id"]
            results.append(rt.get(rt.call(_fold, str(run_dir), str(args.data), VARIANTS, name=f"fold-{f['fold']}")))
            print(f"fold {f['fold']}: {json.dumps(results[-1])}", flush=True)
    print(f"\nvalidation ROC-AUC, folds 1..{len(folds)} (test periods before the final test segment)")
    print(f"{'variant':<40}{'L1 mean':>9}{'L2 mean':>9}   per fold L2")
    for name in VARIANTS:
        l1 = [r[name]["level1"] for r in results]
        l2 = [r[name]["level2"] for r in results]
        per = " ".join(f"{x:.4f}" for x in l2)
        print(f"{name:<40}{statistics.fmean(l1):>9.4f}{statistics.fmean(l2):>9.4f}   {per}")
    for name in sorted(results[0]["_baselines"]):
        vals = [r["_baselines"].get(name) for r in results]
        print(f"{name:<40}{'':>9}{statistics.fmean(v for v in vals if v is not None):>9.4f}")


if __name__ == "__main__":
    main()

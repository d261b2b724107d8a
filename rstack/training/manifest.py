"""The run's manifest: what was trained on what, with which versions, and how well it did."""

from __future__ import annotations

import platform
import subprocess
from typing import TYPE_CHECKING, Any

import pyarrow as pa

import rstack
from rstack._io import utc_text
from rstack.config import Config
from rstack.data.discover import Dataset
from rstack.models.bundle import FORMAT_VERSION
from rstack.models.level0 import BatchSpec
from rstack.training.runs import RunDir

if TYPE_CHECKING:
    from rstack.cluster.runtime import Runtime


def _versions(java: str | None) -> dict[str, str | None]:
    import numpy
    import pandas
    import pyspark
    import ray
    import raydp

    return {
        "rstack": rstack.__version__,
        "ray": ray.__version__,
        "raydp": getattr(raydp, "__version__", None),
        "pyspark": pyspark.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pa.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "java": java,
    }


def _java_version() -> str | None:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        return out.stderr.splitlines()[0] if out.stderr else None
    except (OSError, subprocess.SubprocessError):
        return None


def build_manifest(
    run: RunDir,
    cfg: Config,
    dataset: Dataset,
    summary: dict[str, Any],
    batches: list[BatchSpec],
    metas: list[dict[str, Any]],
    meta_result: dict[str, Any],
    runtime: Runtime,
    overlap: int,
) -> dict[str, Any]:
    t0 = min(m["started"] for m in metas)
    return {
        "format_version": FORMAT_VERSION,
        "run_id": run.run_id,
        "created_utc": utc_text(),
        "config": cfg.to_dict(),
        "data": dataset.fingerprint(),
        "versions": _versions(runtime.info.get("java_version") or _java_version()),
        "runtime": {
            k: runtime.info.get(k)
            for k in ("spark_version", "spark_conf", "app_id", "ui_url", "dashboard_url", "ray_session_dir")
        },
        "logs": {"rstack": "logs/rstack.log", "ray_session_dir": runtime.info.get("ray_session_dir")},
        "features": summary["feature_columns"],
        "symbols": summary["symbols"],
        "excluded_symbols": summary["excluded_symbols"],
        "batches": {b.name: list(b.symbols) for b in batches},
        "cutoffs": summary["cutoffs"],
        # Set for walk-forward folds: no candle at or after this instant was read.
        "until_ms": summary.get("until_ms"),
        "purged_rows": summary["purged_rows"],
        "rows_by_segment": summary["rows_by_segment"],
        "positive_rate_by_segment": summary["positive_rate_by_segment"],
        "label_thresholds": summary["label_thresholds"],
        "baseline_medians": summary["baseline_medians"],
        "input_rows": summary["totals"],
        "per_symbol": summary["per_symbol"],
        "level0": [
            {
                **{k: v for k, v in m.items() if k not in ("started", "ended")},
                # With level0.refit the saved (serving) model was fitted on L0-train..L2-fit.
                "train_rows": sum(
                    summary["per_symbol"][s]["segments"][seg]
                    for s in m["symbols"]
                    for seg in (("l0_train", "l1_fit", "l2_fit") if cfg.level0.refit else ("l0_train",))
                ),
                "refit": cfg.level0.refit,
                "start_offset": m["started"] - t0,
                "end_offset": m["ended"] - t0,
            }
            for m in metas
        ],
        "level0_max_concurrent": overlap,
        "models": {"level0": {b.name: f"level0/{b.name}" for b in batches}, "level1": "level1", "level2": "level2"},
        "predictions": "predictions/test.parquet",
        "predictions_l2_fit": "predictions/l2_fit.parquet",
        "level1": meta_result["level1"],
        "level2": meta_result["level2"],
        "metrics": meta_result["metrics"],
        "metrics_l2_fit": meta_result["metrics_l2_fit"],
    }

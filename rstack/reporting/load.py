"""Reading a run folder for the report: the manifest, the saved predictions, and the checks on them.

Only ``manifest.json`` and ``predictions/*.parquet`` are read, so a copied run folder needs no Spark or Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rstack._io import MANIFEST, load_manifest
from rstack.errors import InputError
from rstack.models.metrics import finite, roc_auc
from rstack.reporting.names import column_for, ordered_models

TEST_PREDICTIONS = Path("predictions") / "test.parquet"
L2_FIT_PREDICTIONS = Path("predictions") / "l2_fit.parquet"
# Manifest metrics and metrics recomputed from the predictions file should agree to float noise.
AUC_TOLERANCE = 1e-6
# The most prediction rows the report reads into memory: above it, a systematic sample (load_predictions).
REPORT_ROWS = 1_000_000

# Scores per model: (labels, probabilities) of the rows where both are finite.
Scores = tuple[np.ndarray, np.ndarray]
# Level 2's coefficients: (input names, coefficients, intercept).
Coefficients = tuple[list[str], list[float], float | None]


def load_run_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest of a finished run (one with a metrics section)."""
    manifest = load_manifest(run_dir)
    if not isinstance(manifest.get("metrics"), dict):
        raise InputError(
            f"{run_dir / MANIFEST} has no 'metrics' section; it is not a finished rstack run, train it again"
        )
    return manifest


def load_predictions(path: Path, max_rows: int = REPORT_ROWS) -> pd.DataFrame:
    """A predictions file written by rstack train, with its key, label and Level-2 columns checked.

    A file of more than ``max_rows`` rows is read as every k-th row (k = ceil(rows / max_rows)), a row
    group at a time, so the report's process holds at most ``max_rows`` rows whatever the run's size;
    ``frame.attrs["sampled_from"]`` then gives the file's row count (the metrics tables come from the
    manifest, which holds every row's figures)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise InputError(
            f"{path} not found; the run folder is incomplete. Re-create it with `rstack train` "
            "(or restore the predictions folder from the copy you took the run from)"
        )
    try:
        source = pq.ParquetFile(path)
        total = source.metadata.num_rows
        if total <= max_rows:
            frame = source.read().to_pandas()
        else:
            step = -(-total // max_rows)
            kept, start = [], 0
            for i in range(source.num_row_groups):
                group = source.read_row_group(i)
                first = (-start) % step  # the group's first row whose file index is a multiple of step
                kept.append(group.take(pa.array(range(first, group.num_rows, step))))
                start += group.num_rows
            frame = pa.concat_tables(kept).to_pandas()
            frame.attrs["sampled_from"] = total
        frame.attrs["open_time_range"] = _open_time_range(source)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"{path} is not a readable Parquet file ({exc}); retrain the run to re-create it") from exc
    missing = [c for c in ("symbol", "open_time", "label", "l2") if c not in frame.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {missing}; it was not written by rstack train, retrain the run")
    return frame


def _open_time_range(source: Any) -> tuple[int, int] | None:
    """(min, max) open_time of the whole file from its row groups' statistics, or by reading that one
    column a row group at a time where a writer left no statistics; None for an empty file."""
    import pyarrow.compute as pc

    col = source.schema_arrow.get_field_index("open_time")
    if col < 0:
        return None  # load_predictions names the missing column
    lows, highs = [], []
    for i in range(source.num_row_groups):
        stats = source.metadata.row_group(i).column(col).statistics
        if stats is not None and stats.has_min_max:
            lows.append(int(stats.min))
            highs.append(int(stats.max))
        else:
            bounds = pc.min_max(source.read_row_group(i, columns=["open_time"]).column(0))
            if bounds["min"].is_valid:
                lows.append(int(bounds["min"].as_py()))
                highs.append(int(bounds["max"].as_py()))
    return (min(lows), max(highs)) if lows else None


def scores(frame: pd.DataFrame, column: str) -> Scores:
    """Labels and scores of the rows where both are finite."""
    y = frame["label"].to_numpy(dtype=float)
    p = frame[column].to_numpy(dtype=float)
    keep = np.isfinite(y) & np.isfinite(p)
    return y[keep], p[keep]


def model_scores(test: pd.DataFrame, metrics: dict[str, dict[str, Any]]) -> tuple[dict[str, Scores], list[str]]:
    """Test scores of every model in the metrics that has a predictions column, and notes on the ones that
    are missing or whose recomputed ROC-AUC disagrees with the manifest."""
    found: dict[str, Scores] = {}
    notes: list[str] = []
    for model in ordered_models(metrics):
        col = column_for(model)
        if col not in test.columns:
            notes.append(f"{model}: no column {col!r} in {TEST_PREDICTIONS}; left out of the plots.")
            continue
        y, p = scores(test, col)
        found[model] = (y, p)
        if test.attrs.get("sampled_from"):
            continue  # a sample's ROC-AUC differs from the manifest's by sampling noise, not by a mismatch
        recomputed, stored = finite(roc_auc(y, p)), finite(metrics[model].get("roc_auc"))
        if recomputed is not None and stored is not None and abs(recomputed - stored) > AUC_TOLERANCE:
            notes.append(
                f"{model}: test ROC-AUC from {TEST_PREDICTIONS} is {recomputed:.4f}, the manifest says "
                f"{stored:.4f}; the predictions file does not match this run's metrics."
            )
    return found, notes


def l2_fit_overlap(l2_fit: pd.DataFrame, test: pd.DataFrame, manifest: dict[str, Any]) -> str | None:
    """Why the L2-fit rows may not be used to pick a threshold, or None when they are safe to use.

    Decided on the whole files, not on a sample: the files' open_time ranges (``load_predictions``
    reads them from the Parquet footers) show L2-fit ending before the test cutoff and before the first
    test row; rows are compared one by one only where both files were read whole."""
    l2_range = l2_fit.attrs.get("open_time_range") or _frame_range(l2_fit)
    test_range = test.attrs.get("open_time_range") or _frame_range(test)
    cutoffs = manifest.get("cutoffs", {}).get("cutoffs_ms") or []
    if len(cutoffs) == 3 and l2_range and l2_range[1] >= int(cutoffs[2]):
        return f"its rows reach past the test cutoff {manifest['cutoffs'].get('cutoffs_utc', cutoffs)[2]}"
    if l2_range is None or test_range is None or l2_range[1] < test_range[0]:
        return None  # one is empty, or every L2-fit row is older than every test row: none can be shared
    if l2_fit.attrs.get("sampled_from") or test.attrs.get("sampled_from"):
        return "their times overlap the test rows' and the files are too large to compare row by row here"
    shared = l2_fit[["symbol", "open_time"]].merge(test[["symbol", "open_time"]], on=["symbol", "open_time"])
    if len(shared):
        return f"{len(shared)} of its rows are also test rows"
    return None


def _frame_range(frame: pd.DataFrame) -> tuple[int, int] | None:
    if not len(frame):
        return None
    return int(frame["open_time"].min()), int(frame["open_time"].max())


def level0_importances(manifest: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """(batch name, feature importances) of every Level-0 model the manifest gives importances for."""
    return [
        (str(entry.get("name", f"batch_{i:03d}")), entry["feature_importances"])
        for i, entry in enumerate(manifest.get("level0") or [])
        if isinstance(entry, dict)
        and isinstance(entry.get("feature_importances"), dict)
        and entry["feature_importances"]
    ]


def meta_models(manifest: dict[str, Any]) -> tuple[dict[str, float] | None, Coefficients | None]:
    """Level 1's feature importances and Level 2's coefficients, each None when the manifest lacks it."""
    l1_section: dict[str, Any] = manifest["level1"] if isinstance(manifest.get("level1"), dict) else {}
    l2_section: dict[str, Any] = manifest["level2"] if isinstance(manifest.get("level2"), dict) else {}
    l1_imp = l1_section.get("feature_importances")
    importances = {str(k): float(v) for k, v in l1_imp.items()} if isinstance(l1_imp, dict) and l1_imp else None
    coefs = l2_section.get("coefficients")
    coefficients: Coefficients | None = None
    if isinstance(coefs, list) and coefs:
        inputs = l2_section.get("inputs") or l2_section.get("features")
        if not (isinstance(inputs, list) and len(inputs) == len(coefs)):
            # Level 2 is fitted on the L1 probability alone (rstack/models/meta.py); name it when that holds.
            inputs = ["l1"] if len(coefs) == 1 else [f"coef[{i}]" for i in range(len(coefs))]
        coefficients = ([str(n) for n in inputs], [float(c) for c in coefs], finite(l2_section.get("intercept")))
    return importances, coefficients

"""Walk-forward validation: the whole stack refitted on K expanding time windows.

Fold k (1..K) uses only the candles before ``until_k = (1 - f) ** (K - k)`` of the time range,
f being the test fraction, and splits that prefix with the usual purged L0-train / L1-fit / L2-fit /
test segments. So the last fold is the ordinary full run, and each fold's test segment ends about
where the next one's begins: K consecutive, non-overlapping out-of-sample periods. Every fold is a
complete run of its own; the last one's manifest also carries the per-fold table and mean ± std.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack.config import Config
from rstack.errors import ConfigError
from rstack.runs import write_manifest
from rstack.train import TrainResult, train

if TYPE_CHECKING:
    from rstack.runtime import Runtime

log = logging.getLogger("rstack")


def fold_ends(folds: int, test_fraction: float) -> list[float]:
    return [round((1.0 - test_fraction) ** (folds - k), 6) for k in range(1, folds + 1)]


def _utc(ms: int | None) -> str | None:
    return None if ms is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def summarize(folds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    names = sorted(set.intersection(*(set(f["metrics"]) for f in folds)))
    out = {}
    for name in names:
        values = [f["metrics"][name]["roc_auc"] for f in folds if f["metrics"][name]["roc_auc"] is not None]
        if values:
            out[name] = {
                "roc_auc_mean": statistics.fmean(values),
                "roc_auc_std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "folds": len(values),
            }
    return out


def walk_forward(data_dir: Path, models_dir: Path, cfg: Config, runtime: Runtime, folds: int) -> TrainResult:
    if folds < 2:
        raise ConfigError(f"--walk-forward {folds}: use 2 or more folds (1 is a plain `rstack train`)")
    if cfg.split.until != 1.0:
        raise ConfigError("split.until is set by --walk-forward itself; leave it at 1.0")
    ends = fold_ends(folds, cfg.split.fractions[3])
    table: list[dict[str, Any]] = []
    result: TrainResult | None = None
    for k, until in enumerate(ends, start=1):
        log.info("walk-forward: fold %d of %d, candles before %.3f of the time range", k, folds, until)
        result = train(data_dir, models_dir, cfg.replace({"split.until": until}), runtime)
        m = result.manifest
        table.append(
            {
                "fold": k,
                "run_id": m["run_id"],
                "until": until,
                "test_start_utc": m["cutoffs"]["cutoffs_utc"][2],
                "test_end_utc": _utc(max(s["last_ms"] for s in m["per_symbol"].values())),
                "test_rows": m["rows_by_segment"]["test"],
                "metrics": {n: {"roc_auc": v["roc_auc"], "pr_auc": v["pr_auc"]} for n, v in m["metrics"].items()},
            }
        )
    assert result is not None
    summary = summarize(table)
    result.manifest["walk_forward"] = {"folds": table, "summary": summary}
    # The fold runs are complete and verified already; this adds the cross-fold table to the last one.
    write_manifest(result.run_dir, result.manifest)
    return result


def format_walk_forward(wf: dict[str, Any]) -> str:
    folds = wf["folds"]
    names = [n for n in ("level2", "level1") if n in wf["summary"]]
    names += sorted(n for n in wf["summary"] if n.startswith("baseline_") and n != "baseline_prior")
    head = f"{'fold':<6}{'test from':<22}{'rows':>8}" + "".join(f"{n:>24}" for n in names)
    lines = [head, "-" * len(head)]

    def cell(v: float | None) -> str:
        return f"{'-' if v is None else f'{v:.4f}':>24}"

    for f in folds:
        cells = "".join(cell(f["metrics"].get(n, {}).get("roc_auc")) for n in names)
        lines.append(f"{f['fold']:<6}{f['test_start_utc']:<22}{f['test_rows']:>8}{cells}")
    mean = "".join(f"{wf['summary'][n]['roc_auc_mean']:>15.4f} ± {wf['summary'][n]['roc_auc_std']:.4f}" for n in names)
    lines.append(f"{'mean ± std':<36}{mean}")
    return "\n".join(lines)

"""Walk-forward validation: the whole stack refitted on K expanding time windows.

Fold k (1..K) uses only the candles before ``until_k = (1 - f) ** (K - k)`` of the time range,
f being the test fraction, and splits that prefix with the usual purged L0-train / L1-fit / L2-fit /
test segments. So the last fold is the ordinary full run, and each fold's test segment ends about
where the next one's begins: K consecutive, non-overlapping out-of-sample periods. Folds 1..K-1 are
shrunk by a few bars (``validation_folds``) so that they end before the final test segment begins
whatever the feature warm-up. Every fold is a
complete run of its own; the last one's manifest also carries the per-fold table and mean ± std.

The last fold's test segment is the full run's test segment, so a mean over all folds ("summary") has
seen test. Comparing or choosing between configs must use "validation", the mean over folds 1..K-1,
whose test periods all end before the final test segment begins.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack._io import utc_text, write_manifest
from rstack.config import Config
from rstack.data.discover import TimeSpan, discover
from rstack.errors import ConfigError, InputError
from rstack.features.segments import compute_cutoffs
from rstack.models.metrics import finite
from rstack.training.driver import TrainResult, train
from rstack.training.host import host_time_span

if TYPE_CHECKING:
    from rstack.cluster.runtime import Runtime

log = logging.getLogger("rstack")


def fold_ends(folds: int, test_fraction: float) -> list[float]:
    return [round((1.0 - test_fraction) ** (folds - k), 6) for k in range(1, folds + 1)]


def validation_folds(cfg: Config, folds: int, span: TimeSpan | None = None) -> list[float]:
    """The ``split.until`` of folds 1..K-1, so that every one ends before the final test segment begins.

    A fold cuts the raw candles' time range [first, last]; the final run's cutoffs split its usable
    rows' range, which starts a feature warm-up after the first candle and ends at the last labelled
    row or earlier (``horizon`` rows before a symbol's last candle, more with gaps at the end). With a
    short warm-up and a long horizon its test segment can begin a few bars before fold K-1's cut, so
    with ``span`` the folds are shrunk until K-1 ends a bar before the earliest test start any feature
    config can have (no warm-up at all). The one case not covered: when every symbol's last labelled
    rows are invalid candles, the usable range ends earlier still.
    """
    if folds < 2:
        raise ConfigError(f"{folds} folds: use 2 or more (fold K is the ordinary run, which reads test)")
    if cfg.split.until != 1.0:
        raise ConfigError("split.until is set by each walk-forward fold itself; leave it at 1.0")
    ends = fold_ends(folds, cfg.split.fractions[3])[:-1]
    if span is None:
        return ends
    lo, hi, bar = span.first_ms, span.last_ms, span.bar_ms
    earliest = compute_cutoffs(lo, span.last_labelled_ms, bar, cfg.split.fractions).cutoffs_ms[2] - bar
    scale = min(1.0, (earliest - lo) / ((hi - lo) * ends[-1]))
    if scale <= 0:
        raise InputError(
            f"the data's candles ({utc_text(lo)} to {utc_text(hi)}) leave no time for a validation fold "
            f"before the test segment; use more candles or a shorter label.horizon ({cfg.label.horizon})"
        )
    return [e * scale for e in ends]


def _utc_or_none(ms: int | None) -> str | None:
    return None if ms is None else utc_text(ms)


def summarize(folds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean ± std of each model's per-fold ROC-AUC (and mean PR-AUC), over the folds where it is defined.

    A fold whose test segment holds one label class has ROC-AUC None (read back from JSON) or NaN (in
    memory); it is left out rather than turning the mean into NaN, and "folds" says how many were used.
    """
    if not folds:
        return {}
    names = sorted(set.intersection(*(set(f["metrics"]) for f in folds)))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        used = [f["metrics"][name] for f in folds if finite(f["metrics"][name].get("roc_auc")) is not None]
        if not used:
            continue
        values = [float(m["roc_auc"]) for m in used]
        pr = [v for v in (finite(m.get("pr_auc")) for m in used) if v is not None]
        out[name] = {
            "roc_auc_mean": statistics.fmean(values),
            "roc_auc_std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "pr_auc_mean": statistics.fmean(pr) if pr else None,
            "folds": len(values),
        }
    return out


def summaries(folds: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The manifest's two summaries: over all folds (includes the final test segment) and over folds 1..K-1."""
    return {"summary": summarize(folds), "validation": summarize(folds[:-1])}


def walk_forward(data_dir: Path, models_dir: Path, cfg: Config, runtime: Runtime, folds: int) -> TrainResult:
    if folds < 2:
        raise ConfigError(f"--walk-forward {folds}: use 2 or more folds (1 is a plain `rstack train`)")
    if cfg.split.until != 1.0:
        raise ConfigError("split.until is set by --walk-forward itself; leave it at 1.0")
    runtime.start()
    span = runtime.get(
        runtime.call(host_time_span, discover(data_dir), cfg.label.horizon, name="walk-forward-time-span")
    )
    ends = [*validation_folds(cfg, folds, span), 1.0]
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
                "test_end_utc": _utc_or_none(max(s["last_ms"] for s in m["per_symbol"].values())),
                "test_rows": m["rows_by_segment"]["test"],
                "metrics": {n: {"roc_auc": v["roc_auc"], "pr_auc": v["pr_auc"]} for n, v in m["metrics"].items()},
            }
        )
    assert result is not None
    # "summary" includes the last fold, i.e. the final test segment; "validation" is what to choose on.
    result.manifest["walk_forward"] = {"folds": table, **summaries(table)}
    # The fold runs are complete and verified already; this adds the cross-fold table to the last one.
    write_manifest(result.run_dir, result.manifest)
    return result


def _validation_label(folds: int) -> str:
    return "validation (fold 1)" if folds == 2 else f"validation (folds 1..{folds - 1})"


def format_walk_forward(wf: dict[str, Any]) -> str:
    """Per-fold test ROC-AUC, then the validation mean ± std (folds 1..K-1) and the all-fold one."""
    folds = wf["folds"]
    summary, validation = wf["summary"], wf.get("validation")
    names = [n for n in ("level2", "level1") if n in summary]
    names += sorted(n for n in summary if n.startswith("baseline_") and n != "baseline_prior")
    head = f"{'fold':<6}{'test from':<22}{'rows':>8}" + "".join(f"{n:>24}" for n in names)
    lines = [head, "-" * len(head)]

    def cell(v: Any) -> str:
        value = finite(v)
        return f"{'-' if value is None else f'{value:.4f}':>24}"

    def mean_row(label: str, stats: dict[str, dict[str, Any]]) -> str:
        cells = "".join(
            f"{stats[n]['roc_auc_mean']:>15.4f} ± {stats[n]['roc_auc_std']:.4f}" if n in stats else f"{'-':>24}"
            for n in names
        )
        return f"{label:<36}{cells}"

    for f in folds:
        cells = "".join(cell(f["metrics"].get(n, {}).get("roc_auc")) for n in names)
        lines.append(f"{f['fold']:<6}{f['test_start_utc']:<22}{f['test_rows']:>8}{cells}")
    lines.append("-" * len(head))
    # A manifest written before "validation" existed has only the all-fold summary.
    if validation is not None:
        lines.append(mean_row(_validation_label(len(folds)), validation))
    lines.append(mean_row("all folds (incl. final test)", summary))
    # Say which means left out folds whose ROC-AUC is undefined, so a mean over fewer folds is not mistaken.
    for label, stats, total in (("validation", validation, len(folds) - 1), ("all folds", summary, len(folds))):
        if stats is None:
            continue
        used = {n: stats.get(n, {}).get("folds", 0) for n in names}
        short = [f"{n} {k} of {total}" for n, k in used.items() if k < total]
        if short:
            lines.append(f"{label}: folds used (ROC-AUC undefined on one label class): {', '.join(short)}")
    return "\n".join(lines)

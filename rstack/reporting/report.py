"""A self-contained HTML evaluation report for a saved run folder: plots, verdict and leakage audit.

Reads only ``manifest.json`` and ``predictions/*.parquet`` (rstack.reporting.load), so it works on a copied
run folder without Spark or Ray. Every number shown about models comes from the test segment, except the F1
threshold, which is chosen on the L2-fit segment so that the test rows never influence a reported operating
point. This module decides what goes in the report; the figures are drawn in rstack.reporting.plots and the
page is assembled in rstack.reporting.html.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from rstack._io import write_bytes_atomic
from rstack.models.metrics import confusion, finite, roc_auc
from rstack.reporting import plots
from rstack.reporting.curves import f1_threshold, verdict
from rstack.reporting.html import Image, render_page
from rstack.reporting.load import (
    L2_FIT_PREDICTIONS,
    REPORT_ROWS,
    TEST_PREDICTIONS,
    Scores,
    l2_fit_overlap,
    level0_importances,
    load_predictions,
    load_run_manifest,
    meta_models,
    model_scores,
    scores,
)
from rstack.reporting.names import TRAILING_VOL, TRAILING_VOL_COL, ordered_models
from rstack.reporting.tables import fmt, text_line

REPORT_DIR = "report"
REPORT_HTML = "report.html"
IMAGE_NAMES = (
    "roc.png",
    "pr.png",
    "calibration.png",
    "confusion.png",
    "per_symbol_auc.png",
    "l0_importances.png",
    "meta_models.png",
    "walk_forward.png",
)
# summary_table's columns: the model name, then ROC-AUC, PR-AUC and Brier.
SUMMARY_WIDTHS = (26, 9, 9, 9)


def _curve_images(plt: Any, curves: dict[str, Scores]) -> dict[str, Image]:
    images: dict[str, Image] = {}
    if curves:
        images["roc.png"] = Image(
            plots.plot_roc(plt, curves),
            "ROC curves",
            "ROC curves on the test segment for every level and baseline; the legend gives each ROC-AUC.",
        )
        images["pr.png"] = Image(
            plots.plot_pr(plt, curves),
            "Precision-recall curves",
            "Precision-recall curves on the test segment; the legend gives each average precision (AP).",
        )
    calib = {m: curves[m] for m in ("level2", "level1", TRAILING_VOL) if m in curves}
    if calib:
        images["calibration.png"] = Image(
            plots.plot_calibration(plt, calib),
            "Reliability diagram",
            "Observed positive rate against mean predicted probability in 10 equal-width bins (test segment), "
            "with each model's Brier score; the lower panel shows where the predictions fall.",
        )
    return images


def _confusion_image(
    plt: Any,
    test: pd.DataFrame,
    l2_fit: pd.DataFrame | None,
    manifest: dict[str, Any],
    threshold: float,
    notes: list[str],
) -> tuple[Image, tuple[float, float] | None]:
    """Level 2's confusion matrices at the configured threshold and at the F1-best one chosen on L2-fit rows
    only, and that (threshold, F1); notes say why the second is missing."""
    y_t, p_t = scores(test, "l2")
    panels = [(f"threshold {threshold:.4g} (config.eval.threshold)", confusion(y_t, p_t, threshold))]
    f1_choice: tuple[float, float] | None = None
    if l2_fit is None:
        notes.append(
            f"{L2_FIT_PREDICTIONS} not found (runs trained before it was written lack it): no F1-optimal "
            "threshold; retrain the run to get the second confusion matrix."
        )
    elif (why := l2_fit_overlap(l2_fit, test, manifest)) is not None:
        notes.append(f"{L2_FIT_PREDICTIONS} was not used to choose a threshold: {why}.")
    else:
        f1_choice = f1_threshold(*scores(l2_fit, "l2"))
        if f1_choice is None:
            notes.append(f"{L2_FIT_PREDICTIONS} has no positive label; no F1-optimal threshold.")
        else:
            panels.append((f"threshold {f1_choice[0]:.4g} (max F1 on L2-fit rows)", confusion(y_t, p_t, f1_choice[0])))
    caption = f"Level-2 confusion matrices on the test segment at config.eval.threshold = {threshold:.4g}"
    if f1_choice is not None:
        caption += (
            f" and at {f1_choice[0]:.4f}, the threshold maximising F1 (F1 {f1_choice[1]:.3f}) on the "
            f"L2-fit segment's predictions ({len(l2_fit) if l2_fit is not None else 0} rows, "
            "chosen on the L2-fit segment, never on test)"
        )
    return Image(plots.plot_confusions(plt, panels), "Level-2 confusion matrices", caption + "."), f1_choice


def _per_symbol_image(plt: Any, test: pd.DataFrame) -> Image | None:
    """Level 2's test ROC-AUC per symbol next to the trailing-vol baseline's: a single good symbol can carry
    the pooled number; this shows the spread."""
    per_symbol: list[tuple[str, float, float | None]] = []
    one_class: list[str] = []
    for sym, grp in test.groupby("symbol", sort=True):
        auc = finite(roc_auc(*scores(grp, "l2")))
        if auc is None:
            one_class.append(str(sym))
            continue
        base = finite(roc_auc(*scores(grp, TRAILING_VOL_COL))) if TRAILING_VOL_COL in grp.columns else None
        per_symbol.append((str(sym), auc, base))
    if not per_symbol:
        return None
    above = sum(1 for _, a, b in per_symbol if b is not None and a > b)
    caption = (
        f"Test ROC-AUC of level2 per symbol (bars, sorted) and of {TRAILING_VOL} (markers); level2 is "
        f"ahead on {above} of {len(per_symbol)} symbols."
    )
    if one_class:
        caption += f" Left out (one label class in test): {', '.join(one_class)}."
    return Image(plots.plot_per_symbol(plt, per_symbol), "Per-symbol ROC-AUC", caption)


def _model_images(plt: Any, manifest: dict[str, Any], notes: list[str]) -> dict[str, Image]:
    """What the models learned: Level-0 importances, Level-1 importances and Level-2 coefficients."""
    images: dict[str, Image] = {}
    level0 = level0_importances(manifest)
    if level0:
        layout = "a heatmap, one column per batch" if len(level0) > plots.MAX_L0_SUBPLOTS else "one panel per batch"
        images["l0_importances.png"] = Image(
            plots.plot_l0_importances(plt, level0),
            "Level-0 feature importances",
            f"Random-forest feature importances of each Level-0 model ({layout}); features ordered by mean "
            "importance across batches.",
        )
    else:
        notes.append("manifest.json has no level0[].feature_importances; Level-0 importance plot left out.")
    l1_imp, l2_coef = meta_models(manifest)
    if l1_imp is None:
        notes.append("manifest.json has no level1.feature_importances; Level-1 importances not shown.")
    if l2_coef is None:
        notes.append("manifest.json has no level2.coefficients; Level-2 coefficients not shown.")
    if l1_imp is not None or l2_coef is not None:
        images["meta_models.png"] = Image(
            plots.plot_meta(plt, l1_imp, l2_coef),
            "Level-1 importances and Level-2 coefficients",
            "What the meta-learners use: Level-1 random-forest importances over the Level-0 probabilities, and "
            "the Level-2 logistic-regression coefficient(s) and intercept.",
        )
    return images


def _walk_forward_image(plt: Any, folds: list[dict[str, Any]], wf_summary: dict[str, Any]) -> Image:
    return Image(
        plots.plot_walk_forward(plt, folds, wf_summary),
        "Walk-forward ROC-AUC",
        f"Test ROC-AUC per walk-forward fold ({len(folds)} folds) for level2, level1 and the baselines, "
        "placed at each fold's test start; the legend gives mean ± std over all folds, the last of which "
        "is the final test segment (the validation mean, folds 1..K-1, is in the summary table).",
    )


def write_report(run_dir: Path) -> dict[str, Any]:
    """Write ``run_dir/report/*.png`` and a self-contained ``run_dir/report.html``; return a summary."""
    run_dir = Path(run_dir)
    manifest = load_run_manifest(run_dir)
    test = load_predictions(run_dir / TEST_PREDICTIONS)
    # Optional: runs trained before the L2-fit predictions were saved still get a report.
    l2_fit = load_predictions(run_dir / L2_FIT_PREDICTIONS) if (run_dir / L2_FIT_PREDICTIONS).is_file() else None
    plt = plots.pyplot()

    metrics: dict[str, dict[str, Any]] = manifest["metrics"]
    cfg = manifest.get("config") or {}
    eval_threshold = finite((cfg.get("eval") or {}).get("threshold"))
    eval_threshold = 0.5 if eval_threshold is None else eval_threshold
    notes: list[str] = []
    if (evaluation := manifest.get("evaluation")) is not None:
        notes.append(
            f"An evaluation of run {evaluation['run_id']} on {evaluation['data']['root']}, "
            f'{evaluation["period_utc"][0]} to {evaluation["period_utc"][1]}: every "test" figure below is '
            "that period's, scored by the saved models with the run's own thresholds."
        )
    for frame, rel in ((test, TEST_PREDICTIONS), (l2_fit, L2_FIT_PREDICTIONS)):
        if frame is not None and (total := frame.attrs.get("sampled_from")):
            notes.append(
                f"{rel} holds {total:,} rows: the curves, per-symbol figures and confusion matrices below are "
                f"drawn from every {-(-total // REPORT_ROWS)}-th row ({len(frame):,}); the metrics tables use all rows."
            )
    curves, score_notes = model_scores(test, metrics)
    notes += score_notes
    sentence, beats, best_baseline = verdict(metrics)

    images = _curve_images(plt, curves)
    f1_choice: tuple[float, float] | None = None
    if "l2" in test.columns:
        images["confusion.png"], f1_choice = _confusion_image(plt, test, l2_fit, manifest, eval_threshold, notes)
    if "level2" in curves and (per_symbol := _per_symbol_image(plt, test)) is not None:
        images["per_symbol_auc.png"] = per_symbol
    images.update(_model_images(plt, manifest, notes))
    walk = manifest.get("walk_forward")
    folds = walk.get("folds") if isinstance(walk, dict) else None
    wf_summary = (walk.get("summary") or {}) if isinstance(walk, dict) else {}
    if isinstance(folds, list) and folds:
        images["walk_forward.png"] = _walk_forward_image(plt, folds, wf_summary)

    report_dir = run_dir / REPORT_DIR
    report_dir.mkdir(exist_ok=True)
    for name in IMAGE_NAMES:
        # A stale plot from an earlier report (e.g. walk-forward) must not look like part of this one.
        if name not in images and (report_dir / name).exists():
            (report_dir / name).unlink()
    for name, image in images.items():
        write_bytes_atomic(report_dir / name, image.png)

    page = render_page(manifest, eval_threshold, sentence, beats, notes, images, wf_summary)
    html_path = run_dir / REPORT_HTML
    write_bytes_atomic(html_path, page.encode("utf-8"))

    return {
        "run_id": manifest.get("run_id"),
        "html": str(html_path),
        "report_dir": str(report_dir),
        "images": list(images),
        "roc_auc": {m: finite(metrics[m].get("roc_auc")) for m in ordered_models(metrics)},
        "metrics": {
            m: {k: finite(metrics[m].get(k)) for k in ("roc_auc", "pr_auc", "brier")} for m in ordered_models(metrics)
        },
        "eval_threshold": eval_threshold,
        "f1_threshold": None if f1_choice is None else f1_choice[0],
        "f1_on_l2_fit": None if f1_choice is None else f1_choice[1],
        "verdict": sentence,
        "beats_baselines": beats,
        "best_baseline": best_baseline,
        "notes": notes,
    }


def summary_table(summary: dict[str, Any]) -> str:
    """Fixed-width model table of a write_report summary and the verdict, for the command line."""
    head = text_line(["model", "ROC-AUC", "PR-AUC", "Brier"], SUMMARY_WIDTHS)
    lines = [head, "-" * len(head)]
    for name, m in (summary.get("metrics") or {}).items():
        lines.append(text_line([name, *(fmt(m.get(k)) for k in ("roc_auc", "pr_auc", "brier"))], SUMMARY_WIDTHS))
    if summary.get("f1_threshold") is not None:
        lines.append(f"F1-optimal threshold (chosen on L2-fit rows): {summary['f1_threshold']:.4f}")
    lines.append(f"verdict: {summary.get('verdict', 'n/a')}")
    return "\n".join(lines)


__all__: list[str] = ["summary_table", "write_report"]

"""The report's figures, drawn with matplotlib (headless) and returned as PNG bytes.

Each ``plot_*`` takes the pyplot module from :func:`pyplot` and plain data, so none of them reads a file.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from rstack._io import parse_utc
from rstack.errors import RstackError
from rstack.models.metrics import average_precision, brier, finite, roc_auc
from rstack.reporting.curves import CALIBRATION_BINS, calibration_bins, f1_of, pr_points, roc_points
from rstack.reporting.load import Coefficients, Scores
from rstack.reporting.names import BASELINE, LEVEL0, LEVEL1, LEVEL2, TRAILING_VOL, model_kind, ordered_models
from rstack.reporting.tables import fmt

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Above this many Level-0 batches one subplot each becomes unreadable; a heatmap scales instead.
MAX_L0_SUBPLOTS = 8
DPI = 110


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or a RstackError saying how to install matplotlib."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RstackError(
            "the evaluation report needs matplotlib; install it with `.venv/bin/python -m pip install "
            "'matplotlib>=3.8,<4'`"
        ) from exc
    # Headless: no display on servers and CI, and no GUI event loop to leak figures into.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(plt: Any, fig: Figure) -> bytes:
    """The figure as PNG bytes; the figure is closed either way, so a long report does not pile them up."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def _style(model: str) -> dict[str, Any]:
    """Line style by model kind, the same in every plot: the stack stands out, baselines are dotted."""
    kind = model_kind(model)
    # L2 is a monotone map of L1 alone, so their ranking curves coincide: L1 is drawn thin on top of L2.
    if kind == LEVEL2:
        return {"color": "#c0392b", "linewidth": 3.2, "zorder": 4}
    if kind == LEVEL1:
        return {"color": "#2c3e50", "linewidth": 1.3, "zorder": 5}
    if kind == LEVEL0:
        return {"linewidth": 1.0, "alpha": 0.75, "linestyle": "--"}
    if model == TRAILING_VOL:
        return {"color": "#27ae60", "linewidth": 2.0, "linestyle": ":", "zorder": 3}
    return {"linewidth": 1.4, "linestyle": ":"}


def _unit_square(plt: Any, fig: Figure, ax: Any, x: str, y: str, title: str, legend: str) -> bytes:
    """The ROC and PR plots' shared frame: both axes 0..1, the legend, a light grid."""
    ax.set(xlabel=x, ylabel=y, title=f"{title}, test segment")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc=legend, fontsize=8)
    ax.grid(alpha=0.3)
    return _png(plt, fig)


def plot_roc(plt: Any, curves: dict[str, Scores]) -> bytes:
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    for model, (y, p) in curves.items():
        fpr, tpr = roc_points(y, p)
        ax.plot(fpr, tpr, label=f"{model} (AUC {fmt(roc_auc(y, p))})", **_style(model))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="-", label="chance (AUC 0.5)")
    return _unit_square(plt, fig, ax, "false positive rate", "true positive rate", "ROC curves", "lower right")


def plot_pr(plt: Any, curves: dict[str, Scores]) -> bytes:
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    base_rate = None
    for model, (y, p) in curves.items():
        recall, precision = pr_points(y, p)
        # By decreasing recall, steps-post holds each precision over its own recall step: the AP's area.
        ax.plot(
            recall,
            precision,
            drawstyle="steps-post",
            label=f"{model} (AP {fmt(average_precision(y, p))})",
            **_style(model),
        )
        base_rate = float(y.mean()) if len(y) else base_rate
    if base_rate is not None:
        ax.axhline(base_rate, color="grey", linewidth=0.8, label=f"positive rate {base_rate:.3f}")
    return _unit_square(plt, fig, ax, "recall", "precision", "Precision-recall curves", "lower left")


def plot_calibration(plt: Any, curves: dict[str, Scores]) -> bytes:
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(7, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    for model, (y, p) in curves.items():
        mean_p, rate = calibration_bins(y, p)
        style = _style(model)
        ax.plot(mean_p, rate, marker="o", label=f"{model} (Brier {fmt(brier(y, p))})", **style)
        # The histogram shows where predictions sit; a well-placed curve over one crowded bin says little.
        hist.hist(p, bins=edges, histtype="step", color=style.get("color"), linewidth=1.5, label=model)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="perfect calibration")
    title = f"Reliability diagram ({CALIBRATION_BINS} equal-width bins), test segment"
    ax.set(ylabel="observed positive rate", title=title)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    hist.set(xlabel="predicted probability", ylabel="rows")
    hist.set_xlim(0, 1)
    hist.grid(alpha=0.3)
    return _png(plt, fig)


def plot_confusions(plt: Any, panels: list[tuple[str, dict[str, int]]]) -> bytes:
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    for ax, (title, c) in zip(axes[0], panels, strict=True):
        grid = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]], dtype=float)
        total = max(grid.sum(), 1.0)
        ax.imshow(grid, cmap="Blues", vmin=0, vmax=max(grid.max(), 1.0))
        for (i, j), n in np.ndenumerate(grid):
            colour = "white" if n > grid.max() / 2 else "black"
            ax.text(j, i, f"{int(n)}\n{100 * n / total:.1f}%", ha="center", va="center", color=colour, fontsize=11)
        ax.set_xticks([0, 1], ["pred 0", "pred 1"])
        ax.set_yticks([0, 1], ["true 0", "true 1"])
        ax.set_title(f"{title}\nF1 {fmt(f1_of(c), 3)}", fontsize=10)
    fig.suptitle("Level-2 confusion matrices, test segment", fontsize=11, y=1.06)
    return _png(plt, fig)


def plot_per_symbol(plt: Any, rows: list[tuple[str, float, float | None]]) -> bytes:
    rows = sorted(rows, key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(7.5, max(3.0, 0.32 * len(rows) + 1.5)))
    pos = np.arange(len(rows))
    ax.barh(pos, [r[1] for r in rows], color="#c0392b", alpha=0.8, label="level2")
    marked = [(i, r[2]) for i, r in enumerate(rows) if r[2] is not None]
    if marked:
        ax.scatter(
            [m[1] for m in marked], [m[0] for m in marked], marker="D", color="#27ae60", zorder=5, label=TRAILING_VOL
        )
    ax.axvline(0.5, color="grey", linewidth=0.8)
    ax.set_yticks(pos, [r[0] for r in rows], fontsize=8 if len(rows) > 30 else 9)
    lo = min([0.4, *[r[1] for r in rows], *[m[1] for m in marked]])
    ax.set_xlim(max(0.0, lo - 0.05), 1.0)
    ax.set(xlabel="test ROC-AUC", title="Per-symbol test ROC-AUC (sorted by level2)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(plt, fig)


def plot_l0_importances(plt: Any, models: list[tuple[str, dict[str, float]]]) -> bytes:
    features = sorted({f for _, imp in models for f in imp})
    mean = {f: float(np.mean([imp.get(f, 0.0) for _, imp in models])) for f in features}
    # One feature order for every panel, most important overall on top, so panels compare at a glance.
    features.sort(key=lambda f: mean[f])
    if len(models) > MAX_L0_SUBPLOTS:
        grid = np.array([[imp.get(f, 0.0) for _, imp in models] for f in features])
        fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(models) + 3), max(4.0, 0.3 * len(features) + 1.5)))
        im = ax.imshow(grid, aspect="auto", cmap="viridis", origin="lower")
        ax.set_xticks(np.arange(len(models)), [n for n, _ in models], rotation=90, fontsize=8)
        ax.set_yticks(np.arange(len(features)), features, fontsize=8)
        fig.colorbar(im, ax=ax, label="importance")
        ax.set_title("Level-0 feature importances (one column per batch)")
        return _png(plt, fig)
    ncols = min(len(models), 4)
    nrows = math.ceil(len(models) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.6 * ncols + 1.2, max(3.5, 0.22 * len(features) + 1.2) * nrows),
        sharey=True,
        sharex=True,
        squeeze=False,
    )
    pos = np.arange(len(features))
    for k, ax in enumerate(axes.flat):
        if k >= len(models):
            ax.set_visible(False)
            continue
        name, imp = models[k]
        ax.barh(pos, [imp.get(f, 0.0) for f in features], color="#2980b9")
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if k % ncols == 0:
            ax.set_yticks(pos, features, fontsize=8)
    fig.suptitle("Level-0 random-forest feature importances", fontsize=11)
    return _png(plt, fig)


def plot_meta(plt: Any, l1: dict[str, float] | None, l2: Coefficients | None) -> bytes:
    n = (l1 is not None) + (l2 is not None)
    fig, axes = plt.subplots(1, n, figsize=(6.0 * n, 4.5), squeeze=False)
    panels = iter(axes[0])
    if l1 is not None:
        ax = next(panels)
        names = sorted(l1)
        ax.barh(np.arange(len(names)), [l1[n] for n in names], color="#2c3e50")
        ax.set_yticks(np.arange(len(names)), names, fontsize=8)
        ax.set(xlabel="importance", title="Level-1 RF importances over L0 probabilities")
        ax.grid(axis="x", alpha=0.3)
    if l2 is not None:
        ax = next(panels)
        names, coefs, intercept = l2
        labels, values = list(names), list(coefs)
        if intercept is not None:
            labels.append("intercept")
            values.append(intercept)
        colours = ["#c0392b"] * len(coefs) + (["#95a5a6"] if intercept is not None else [])
        ax.barh(np.arange(len(labels)), values, color=colours)
        ax.set_yticks(np.arange(len(labels)), labels, fontsize=9)
        ax.axvline(0, color="grey", linewidth=0.8)
        # Room beside the bars for the value labels, so they do not run into the tick labels.
        ax.margins(x=0.25)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.3f} ", va="center", ha="left" if v >= 0 else "right", fontsize=9)
        ax.set(xlabel="coefficient (log-odds)", title="Level-2 logistic regression")
        ax.grid(axis="x", alpha=0.3)
    return _png(plt, fig)


def plot_walk_forward(plt: Any, folds: list[dict[str, Any]], summary: dict[str, Any]) -> bytes:
    starts = [parse_utc(f.get("test_start_utc")) for f in folds]
    use_dates = all(s is not None for s in starts)
    xs: list[Any] = starts if use_dates else [f.get("fold", i) for i, f in enumerate(folds)]
    names = ordered_models({n for f in folds for n in (f.get("metrics") or {})})
    names = [n for n in names if model_kind(n) in (LEVEL2, LEVEL1, BASELINE)]
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for model in names:
        ys = [finite(((f.get("metrics") or {}).get(model) or {}).get("roc_auc")) for f in folds]
        s = summary.get(model) or {}
        mean, std = finite(s.get("roc_auc_mean")), finite(s.get("roc_auc_std"))
        seen = [v for v in ys if v is not None]
        if mean is None and seen:
            mean, std = float(np.mean(seen)), float(np.std(seen))
        label = model if mean is None else f"{model} (mean {mean:.4f} ± {fmt(std)})"
        ax.plot(xs, [np.nan if v is None else v for v in ys], marker="o", label=label, **_style(model))
    ax.axhline(0.5, color="grey", linewidth=0.8)
    ax.set(
        ylabel="test ROC-AUC",
        xlabel="fold test start (UTC)" if use_dates else "fold",
        title="Walk-forward test ROC-AUC per fold",
    )
    if use_dates:
        fig.autofmt_xdate()
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return _png(plt, fig)

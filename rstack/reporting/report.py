"""A self-contained HTML evaluation report for a saved run folder: plots, verdict and leakage audit.

Reads only ``manifest.json`` and ``predictions/*.parquet``, so it works on a copied run folder without
Spark or Ray. Every number shown about models comes from the test segment, except the F1 threshold,
which is chosen on the L2-fit segment so that the test rows never influence a reported operating point.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rstack._io import MANIFEST, load_manifest, parse_utc, utc_text, write_bytes_atomic
from rstack.errors import InputError, RstackError
from rstack.models.metrics import average_precision, brier, confusion, finite, roc_auc

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TEST_PREDICTIONS = Path("predictions") / "test.parquet"
L2_FIT_PREDICTIONS = Path("predictions") / "l2_fit.parquet"
REPORT_DIR = "report"
REPORT_HTML = "report.html"
# The trailing-volatility baseline is stored under its historical column name (rstack/features/table.py).
TRAILING_VOL = "baseline_trailing_vol"
TRAILING_VOL_COL = "baseline_p"
# Above this many Level-0 batches one subplot each becomes unreadable; a heatmap scales instead.
MAX_L0_SUBPLOTS = 8
DPI = 110
# Manifest metrics and metrics recomputed from the predictions file should agree to float noise.
AUC_TOLERANCE = 1e-6

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


# --------------------------------------------------------------------------- model names and columns


def column_for(model: str) -> str:
    """The predictions column that holds a metrics entry's probabilities."""
    if model == "level2":
        return "l2"
    if model == "level1":
        return "l1"
    if model.startswith("batch_"):
        return f"l0_{model}"
    if model == TRAILING_VOL:
        return TRAILING_VOL_COL
    return model


def _kind(model: str) -> int:
    if model == "level2":
        return 0
    if model == "level1":
        return 1
    if model.startswith("batch_"):
        return 2
    if model.startswith("baseline_"):
        return 3
    return 4


def ordered_models(names: Iterable[str]) -> list[str]:
    """Stack first (L2, L1, L0 batches), then baselines with trailing volatility leading, then the rest."""
    return sorted(names, key=lambda n: (_kind(n), n != TRAILING_VOL, n))


def _fmt(value: Any, digits: int = 4) -> str:
    f = finite(value)
    return "n/a" if f is None else f"{f:.{digits}f}"


# --------------------------------------------------------------------------- verdict


def verdict(metrics: dict[str, dict[str, Any]]) -> tuple[str, bool | None, str | None]:
    """(sentence, whether level2 beats every baseline on test ROC-AUC, best baseline name).

    Strictly greater is required: a tie with a baseline means the stack added nothing.
    """
    l2 = finite(metrics.get("level2", {}).get("roc_auc"))
    baselines = {
        name: auc
        for name in ordered_models(metrics)
        if name.startswith("baseline_") and (auc := finite(metrics[name].get("roc_auc"))) is not None
    }
    if l2 is None:
        return "No verdict: level2 has no test ROC-AUC in the manifest (one-class test segment?).", None, None
    if not baselines:
        return "No verdict: the manifest's metrics hold no baseline with a test ROC-AUC.", None, None
    best = max(baselines, key=lambda n: baselines[n])
    b = baselines[best]
    margin = l2 - b
    if l2 > b:
        sentence = (
            f"The stack beats every baseline on test ROC-AUC: {l2:.4f} vs {b:.4f} for the best, {best} "
            f"(margin {margin:+.4f})."
        )
        return sentence, True, best
    return f"The stack does NOT beat {best}: {l2:.4f} vs {b:.4f} test ROC-AUC (margin {margin:+.4f}).", False, best


# --------------------------------------------------------------------------- curves and thresholds


def _ranked(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative tp, fp and the score at each distinct threshold, highest score first."""
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last_of_tie = np.concatenate([np.flatnonzero(np.diff(ps)), [len(ps) - 1]]).astype(int)
    tp = np.cumsum(ys)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    return tp, fp, ps[last_of_tie]


def roc_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp, fp, _ = _ranked(y, p)
    pos, neg = max(float(y.sum()), 1.0), max(float(len(y) - y.sum()), 1.0)
    return np.concatenate([[0.0], fp / neg]), np.concatenate([[0.0], tp / pos])


def pr_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp, fp, _ = _ranked(y, p)
    recall = tp / max(float(y.sum()), 1.0)
    precision = tp / (tp + fp)
    # Start at recall 0 with the first precision, the usual convention for a step-drawn PR curve.
    return np.concatenate([[0.0], recall]), np.concatenate([[precision[0]], precision])


def f1_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float] | None:
    """(threshold, F1) maximising F1 for the rule ``p >= threshold``; ties go to the higher threshold."""
    pos = float(y.sum())
    if len(y) == 0 or pos == 0:
        return None
    tp, fp, scores = _ranked(y, p)
    f1 = 2 * tp / (tp + fp + pos)
    best = int(np.argmax(f1))
    return float(scores[best]), float(f1[best])


def _f1_of(c: dict[str, int]) -> float:
    denom = 2 * c["tp"] + c["fp"] + c["fn"]
    return 2 * c["tp"] / denom if denom else float("nan")


def calibration_bins(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean prediction, observed positive rate and count per non-empty equal-width bin on [0, 1]."""
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y, minlength=bins)
    keep = count > 0
    return sum_p[keep] / count[keep], sum_y[keep] / count[keep], count[keep]


# --------------------------------------------------------------------------- loading


def _load_manifest(run_dir: Path) -> dict[str, Any]:
    manifest = load_manifest(run_dir)
    if not isinstance(manifest.get("metrics"), dict):
        raise InputError(
            f"{run_dir / MANIFEST} has no 'metrics' section; it is not a finished rstack run, train it again"
        )
    return manifest


def _load_predictions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(
            f"{path} not found; the run folder is incomplete. Re-create it with `rstack train` "
            "(or restore the predictions folder from the copy you took the run from)"
        )
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable Parquet file ({exc}); retrain the run to re-create it") from exc
    missing = [c for c in ("symbol", "open_time", "label", "l2") if c not in frame.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {missing}; it was not written by rstack train, retrain the run")
    return frame


def _scores(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of the rows where both are finite."""
    y = frame["label"].to_numpy(dtype=float)
    p = frame[column].to_numpy(dtype=float)
    keep = np.isfinite(y) & np.isfinite(p)
    return y[keep], p[keep]


def _l2_fit_is_disjoint(l2_fit: pd.DataFrame, test: pd.DataFrame, manifest: dict[str, Any]) -> str | None:
    """Why the L2-fit rows may not be used to pick a threshold, or None when they are safe to use."""
    cutoffs = manifest.get("cutoffs", {}).get("cutoffs_ms") or []
    if len(cutoffs) == 3 and len(l2_fit) and int(l2_fit["open_time"].max()) >= int(cutoffs[2]):
        return f"its rows reach past the test cutoff {manifest['cutoffs'].get('cutoffs_utc', cutoffs)[2]}"
    shared = l2_fit[["symbol", "open_time"]].merge(test[["symbol", "open_time"]], on=["symbol", "open_time"])
    if len(shared):
        return f"{len(shared)} of its rows are also test rows"
    return None


# --------------------------------------------------------------------------- plotting


def _pyplot() -> Any:
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
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def _style(model: str) -> dict[str, Any]:
    kind = _kind(model)
    # L2 is a monotone map of L1 alone, so their ranking curves coincide: L1 is drawn thin on top of L2.
    if kind == 0:
        return {"color": "#c0392b", "linewidth": 3.2, "zorder": 4}
    if kind == 1:
        return {"color": "#2c3e50", "linewidth": 1.3, "zorder": 5}
    if kind == 2:
        return {"linewidth": 1.0, "alpha": 0.75, "linestyle": "--"}
    if model == TRAILING_VOL:
        return {"color": "#27ae60", "linewidth": 2.0, "linestyle": ":", "zorder": 3}
    return {"linewidth": 1.4, "linestyle": ":"}


def plot_roc(plt: Any, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    for model, (y, p) in curves.items():
        fpr, tpr = roc_points(y, p)
        ax.plot(fpr, tpr, label=f"{model} (AUC {_fmt(roc_auc(y, p))})", **_style(model))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="-", label="chance (AUC 0.5)")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curves, test segment")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(plt, fig)


def plot_pr(plt: Any, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    base_rate = None
    for model, (y, p) in curves.items():
        recall, precision = pr_points(y, p)
        ax.plot(
            recall,
            precision,
            drawstyle="steps-post",
            label=f"{model} (AP {_fmt(average_precision(y, p))})",
            **_style(model),
        )
        base_rate = float(y.mean()) if len(y) else base_rate
    if base_rate is not None:
        ax.axhline(base_rate, color="grey", linewidth=0.8, label=f"positive rate {base_rate:.3f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curves, test segment")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(plt, fig)


def plot_calibration(plt: Any, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(7, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges = np.linspace(0, 1, 11)
    for model, (y, p) in curves.items():
        mean_p, rate, _ = calibration_bins(y, p)
        style = _style(model)
        ax.plot(mean_p, rate, marker="o", label=f"{model} (Brier {_fmt(brier(y, p))})", **style)
        # The histogram shows where predictions sit; a well-placed curve over one crowded bin says little.
        hist.hist(p, bins=edges, histtype="step", color=style.get("color"), linewidth=1.5, label=model)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="perfect calibration")
    ax.set(ylabel="observed positive rate", title="Reliability diagram (10 equal-width bins), test segment")
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
        ax.set_title(f"{title}\nF1 {_fmt(_f1_of(c), 3)}", fontsize=10)
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


def plot_meta(plt: Any, l1: dict[str, float] | None, l2: tuple[list[str], list[float], float | None] | None) -> bytes:
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
    names = [n for n in names if _kind(n) in (0, 1, 3)]
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for model in names:
        ys = [finite(((f.get("metrics") or {}).get(model) or {}).get("roc_auc")) for f in folds]
        s = summary.get(model) or {}
        mean, std = finite(s.get("roc_auc_mean")), finite(s.get("roc_auc_std"))
        seen = [v for v in ys if v is not None]
        if mean is None and seen:
            mean, std = float(np.mean(seen)), float(np.std(seen))
        label = model if mean is None else f"{model} (mean {mean:.4f} ± {_fmt(std)})"
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


# --------------------------------------------------------------------------- HTML

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.level2 td { font-weight: bold; background: #fdf2f1; }
.verdict { font-size: 1.1em; padding: 0.8em 1em; border-radius: 4px; margin: 1em 0; }
.verdict.good { background: #eafaf1; border-left: 6px solid #27ae60; }
.verdict.bad { background: #fdf2f1; border-left: 6px solid #c0392b; }
.verdict.none { background: #f4f6f7; border-left: 6px solid #7f8c8d; }
.notes { background: #fef9e7; border-left: 6px solid #f1c40f; padding: 0.5em 1em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; margin-top: 0.3em; }
.muted { color: #777; font-size: 0.85em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(head: list[str], rows: list[list[Any]], numeric_from: int = 1, row_class: list[str] | None = None) -> str:
    th = "".join(f'<th class="{"num" if i >= numeric_from else ""}">{_e(h)}</th>' for i, h in enumerate(head))
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{_e(row_class[k])}"' if row_class and row_class[k] else ""
        tds = "".join(f'<td class="{"num" if i >= numeric_from else ""}">{_e(v)}</td>' for i, v in enumerate(row))
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table><tbody>{body}</tbody></table>"


def _metrics_rows(metrics: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for name in ordered_models(metrics):
        m = metrics[name] or {}
        c = m.get("confusion") or {}
        pos = finite(m.get("positive_rate"))
        rows.append(
            [
                name,
                _fmt(m.get("roc_auc")),
                _fmt(m.get("pr_auc")),
                _fmt(m.get("log_loss")),
                _fmt(m.get("brier")),
                m.get("rows", "n/a"),
                "n/a" if pos is None else f"{100 * pos:.1f}",
                "/".join(str(c.get(k, "?")) for k in ("tp", "fp", "tn", "fn")),
            ]
        )
    return rows


def _audit_rows(manifest: dict[str, Any]) -> list[tuple[str, Any]]:
    cfg = manifest.get("config") or {}
    cut = manifest.get("cutoffs") or {}
    split, label = cfg.get("split") or {}, cfg.get("label") or {}
    bar_ms = cut.get("bar_ms")
    bar = f"{int(bar_ms) // 60000} min" if isinstance(bar_ms, int | float) else "n/a"
    rows: list[tuple[str, Any]] = [("data span (UTC)", f"{cut.get('start_utc', 'n/a')} → {cut.get('end_utc', 'n/a')}")]
    names = ("L0-train | L1-fit", "L1-fit | L2-fit", "L2-fit | test")
    for i, c in enumerate(cut.get("cutoffs_utc") or []):
        rows.append((f"cutoff {i + 1} ({names[i] if i < len(names) else '?'}), UTC", c))
    purged = manifest.get("purged_rows") or {}
    for key in sorted(purged):
        rows.append((f"purged rows at {key}", purged[key]))
    rows += [
        ("bar size", bar),
        ("embargo (bars dropped after each cutoff)", split.get("embargo", "n/a")),
        ("label horizon (bars; rows whose label reaches a cutoff are purged)", label.get("horizon", "n/a")),
        ("label quantile", label.get("label_quantile", "n/a")),
        ("label thresholds fitted on", "L0-train rows only, per symbol"),
        ("trailing-vol baseline medians fitted on", "L0-train rows only, per symbol"),
        ("split fractions", split.get("fractions", "n/a")),
    ]
    pos_rate = manifest.get("positive_rate_by_segment") or {}
    for seg, n in (manifest.get("rows_by_segment") or {}).items():
        rate = finite(pos_rate.get(seg))
        rows.append((f"rows in {seg}", f"{n}" + ("" if rate is None else f" (positive rate {rate:.3f})")))
    excluded = manifest.get("excluded_symbols") or {}
    if excluded:
        for sym in sorted(excluded):
            rows.append((f"excluded symbol {sym}", excluded[sym]))
    else:
        rows.append(("excluded symbols", "none"))
    return rows


def _figure(name: str, png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="fig-{_e(Path(name).stem)}"><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


# --------------------------------------------------------------------------- entry points


def write_report(run_dir: Path) -> dict[str, Any]:
    """Write ``run_dir/report/*.png`` and a self-contained ``run_dir/report.html``; return a summary."""
    run_dir = Path(run_dir)
    manifest = _load_manifest(run_dir)
    test = _load_predictions(run_dir / TEST_PREDICTIONS)
    # Optional: runs trained before the L2-fit predictions were saved still get a report.
    l2_fit = _load_predictions(run_dir / L2_FIT_PREDICTIONS) if (run_dir / L2_FIT_PREDICTIONS).is_file() else None
    plt = _pyplot()

    metrics: dict[str, dict[str, Any]] = manifest["metrics"]
    cfg = manifest.get("config") or {}
    eval_threshold = finite((cfg.get("eval") or {}).get("threshold"))
    eval_threshold = 0.5 if eval_threshold is None else eval_threshold
    notes: list[str] = []
    if (evaluation := manifest.get("evaluation")) is not None:
        notes.append(
            f"An evaluation of run {evaluation['run_id']} on {evaluation['data']['root']}, "
            f"{evaluation['period_utc'][0]} to {evaluation['period_utc'][1]}: every \"test\" figure below is "
            "that period's, scored by the saved models with the run's own thresholds."
        )

    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for model in ordered_models(metrics):
        col = column_for(model)
        if col not in test.columns:
            notes.append(f"{model}: no column {col!r} in {TEST_PREDICTIONS}; left out of the plots.")
            continue
        y, p = _scores(test, col)
        curves[model] = (y, p)
        recomputed, stored = finite(roc_auc(y, p)), finite(metrics[model].get("roc_auc"))
        if recomputed is not None and stored is not None and abs(recomputed - stored) > AUC_TOLERANCE:
            notes.append(
                f"{model}: test ROC-AUC from {TEST_PREDICTIONS} is {recomputed:.4f}, the manifest says "
                f"{stored:.4f}; the predictions file does not match this run's metrics."
            )

    sentence, beats, best_baseline = verdict(metrics)
    images: dict[str, tuple[bytes, str, str]] = {}

    if curves:
        images["roc.png"] = (
            plot_roc(plt, curves),
            "ROC curves",
            ("ROC curves on the test segment for every level and baseline; the legend gives each ROC-AUC."),
        )
        images["pr.png"] = (
            plot_pr(plt, curves),
            "Precision-recall curves",
            ("Precision-recall curves on the test segment; the legend gives each average precision (AP)."),
        )
    calib = {m: curves[m] for m in ("level2", "level1", TRAILING_VOL) if m in curves}
    if calib:
        images["calibration.png"] = (
            plot_calibration(plt, calib),
            "Reliability diagram",
            (
                "Observed positive rate against mean predicted probability in 10 equal-width bins (test segment), "
                "with each model's Brier score; the lower panel shows where the predictions fall."
            ),
        )

    # Confusion matrices: the configured threshold, and the F1-best one chosen on L2-fit rows only.
    f1_choice: tuple[float, float] | None = None
    if "l2" in test.columns:
        y_t, p_t = _scores(test, "l2")
        panels = [(f"threshold {eval_threshold:.4g} (config.eval.threshold)", confusion(y_t, p_t, eval_threshold))]
        if l2_fit is None:
            notes.append(
                f"{L2_FIT_PREDICTIONS} not found (runs trained before it was written lack it): no F1-optimal "
                "threshold; retrain the run to get the second confusion matrix."
            )
        elif (why := _l2_fit_is_disjoint(l2_fit, test, manifest)) is not None:
            notes.append(f"{L2_FIT_PREDICTIONS} was not used to choose a threshold: {why}.")
        else:
            y_f, p_f = _scores(l2_fit, "l2")
            f1_choice = f1_threshold(y_f, p_f)
            if f1_choice is None:
                notes.append(f"{L2_FIT_PREDICTIONS} has no positive label; no F1-optimal threshold.")
            else:
                panels.append(
                    (f"threshold {f1_choice[0]:.4g} (max F1 on L2-fit rows)", confusion(y_t, p_t, f1_choice[0]))
                )
        caption = f"Level-2 confusion matrices on the test segment at config.eval.threshold = {eval_threshold:.4g}"
        if f1_choice is not None:
            caption += (
                f" and at {f1_choice[0]:.4f}, the threshold maximising F1 (F1 {f1_choice[1]:.3f}) on the "
                f"L2-fit segment's predictions ({len(l2_fit) if l2_fit is not None else 0} rows, "
                "chosen on the L2-fit segment, never on test)"
            )
        images["confusion.png"] = (plot_confusions(plt, panels), "Level-2 confusion matrices", caption + ".")

    # Per-symbol ROC-AUC: a single good symbol can carry the pooled number; this shows the spread.
    if "level2" in curves:
        per_symbol: list[tuple[str, float, float | None]] = []
        one_class: list[str] = []
        for sym, grp in test.groupby("symbol", sort=True):
            auc = finite(roc_auc(*_scores(grp, "l2")))
            if auc is None:
                one_class.append(str(sym))
                continue
            base = finite(roc_auc(*_scores(grp, TRAILING_VOL_COL))) if TRAILING_VOL_COL in grp.columns else None
            per_symbol.append((str(sym), auc, base))
        if per_symbol:
            above = sum(1 for _, a, b in per_symbol if b is not None and a > b)
            caption = (
                f"Test ROC-AUC of level2 per symbol (bars, sorted) and of {TRAILING_VOL} (markers); level2 is "
                f"ahead on {above} of {len(per_symbol)} symbols."
            )
            if one_class:
                caption += f" Left out (one label class in test): {', '.join(one_class)}."
            images["per_symbol_auc.png"] = (plot_per_symbol(plt, per_symbol), "Per-symbol ROC-AUC", caption)

    level0 = [
        (str(entry.get("name", f"batch_{i:03d}")), entry["feature_importances"])
        for i, entry in enumerate(manifest.get("level0") or [])
        if isinstance(entry, dict)
        and isinstance(entry.get("feature_importances"), dict)
        and entry["feature_importances"]
    ]
    if level0:
        layout = "a heatmap, one column per batch" if len(level0) > MAX_L0_SUBPLOTS else "one panel per batch"
        images["l0_importances.png"] = (
            plot_l0_importances(plt, level0),
            "Level-0 feature importances",
            (
                f"Random-forest feature importances of each Level-0 model ({layout}); features ordered by mean "
                "importance across batches."
            ),
        )
    else:
        notes.append("manifest.json has no level0[].feature_importances; Level-0 importance plot left out.")

    l1_section = manifest.get("level1") if isinstance(manifest.get("level1"), dict) else {}
    l2_section = manifest.get("level2") if isinstance(manifest.get("level2"), dict) else {}
    l1_imp = l1_section.get("feature_importances")
    l1_imp = {str(k): float(v) for k, v in l1_imp.items()} if isinstance(l1_imp, dict) and l1_imp else None
    coefs = l2_section.get("coefficients")
    l2_coef: tuple[list[str], list[float], float | None] | None = None
    if isinstance(coefs, list) and coefs:
        inputs = l2_section.get("inputs") or l2_section.get("features")
        if not (isinstance(inputs, list) and len(inputs) == len(coefs)):
            # Level 2 is fitted on the L1 probability alone (rstack/models/meta.py); name it when that holds.
            inputs = ["l1"] if len(coefs) == 1 else [f"coef[{i}]" for i in range(len(coefs))]
        l2_coef = ([str(n) for n in inputs], [float(c) for c in coefs], finite(l2_section.get("intercept")))
    if l1_imp is None:
        notes.append("manifest.json has no level1.feature_importances; Level-1 importances not shown.")
    if l2_coef is None:
        notes.append("manifest.json has no level2.coefficients; Level-2 coefficients not shown.")
    if l1_imp is not None or l2_coef is not None:
        images["meta_models.png"] = (
            plot_meta(plt, l1_imp, l2_coef),
            "Level-1 importances and Level-2 coefficients",
            (
                "What the meta-learners use: Level-1 random-forest importances over the Level-0 probabilities, and "
                "the Level-2 logistic-regression coefficient(s) and intercept."
            ),
        )

    walk = manifest.get("walk_forward")
    folds = walk.get("folds") if isinstance(walk, dict) else None
    wf_summary = (walk.get("summary") or {}) if isinstance(walk, dict) else {}
    if isinstance(folds, list) and folds:
        images["walk_forward.png"] = (
            plot_walk_forward(plt, folds, wf_summary),
            "Walk-forward ROC-AUC",
            (
                f"Test ROC-AUC per walk-forward fold ({len(folds)} folds) for level2, level1 and the baselines, "
                "placed at each fold's test start; the legend gives mean ± std over all folds, the last of which "
                "is the final test segment (the validation mean, folds 1..K-1, is in the summary table)."
            ),
        )

    report_dir = run_dir / REPORT_DIR
    report_dir.mkdir(exist_ok=True)
    for name in IMAGE_NAMES:
        # A stale plot from an earlier report (e.g. walk-forward) must not look like part of this one.
        if name not in images and (report_dir / name).exists():
            (report_dir / name).unlink()
    for name, (png, _, _) in images.items():
        write_bytes_atomic(report_dir / name, png)

    page = _html(manifest, metrics, sentence, beats, notes, images, wf_summary)
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


def _html(
    manifest: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    sentence: str,
    beats: bool | None,
    notes: list[str],
    images: dict[str, tuple[bytes, str, str]],
    wf_summary: dict[str, Any],
) -> str:
    cfg = manifest.get("config") or {}
    inputs = manifest.get("input_rows") or {}
    segments = manifest.get("rows_by_segment") or {}
    header = _kv_table(
        [
            ("run id", manifest.get("run_id", "n/a")),
            ("created (UTC)", manifest.get("created_utc", "n/a")),
            (
                "data rows",
                f"{inputs.get('rows', 'n/a')} read, {inputs.get('usable', 'n/a')} usable, "
                f"{sum(int(v) for v in segments.values())} in segments",
            ),
            (
                "symbols",
                f"{len(manifest.get('symbols') or [])} trained, {len(manifest.get('excluded_symbols') or {})} excluded",
            ),
            ("feature set", (cfg.get("features") or {}).get("feature_set", "n/a")),
            ("label horizon (bars)", (cfg.get("label") or {}).get("horizon", "n/a")),
            (
                "test period (UTC)",
                f"{((manifest.get('cutoffs') or {}).get('cutoffs_utc') or ['?'] * 3)[-1]} → "
                f"{(manifest.get('cutoffs') or {}).get('end_utc', 'n/a')}",
            ),
        ]
    )
    threshold = (cfg.get("eval") or {}).get("threshold", 0.5)
    table = _table(
        ["model", "ROC-AUC", "PR-AUC", "log loss", "Brier", "rows", "pos %", f"tp/fp/tn/fn @{threshold}"],
        _metrics_rows(metrics),
        row_class=["level2" if m == "level2" else "" for m in ordered_models(metrics)],
    )
    verdict_class = {True: "good", False: "bad", None: "none"}[beats]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rstack report {_e(manifest.get('run_id', ''))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>rstack evaluation report: run {_e(manifest.get('run_id', 'n/a'))}</h1>",
        header,
        f'<p class="verdict {verdict_class}" id="verdict">{_e(sentence)}</p>',
    ]
    if notes:
        parts.append('<div class="notes"><strong>Notes</strong><ul>')
        parts += [f"<li>{_e(n)}</li>" for n in notes]
        parts.append("</ul></div>")
    parts += [
        "<h2>Test metrics</h2>",
        '<p class="muted">All rows are the test segment (after the third cutoff). Confusion counts use '
        "config.eval.threshold.</p>",
        table,
    ]
    if wf_summary:
        # Validation = folds 1..K-1, whose test periods end before the final test segment: the figure to
        # choose by. The all-fold mean includes the final test segment (the last fold is this run).
        walk = manifest.get("walk_forward")
        validation = (walk.get("validation") or {}) if isinstance(walk, dict) else {}

        def cells(summary: dict[str, Any], m: str) -> list[str]:
            s = summary.get(m) or {}
            return [_fmt(s.get("roc_auc_mean")), _fmt(s.get("roc_auc_std")), str(s.get("folds", "-"))]

        rows = [[m, *cells(validation, m), *cells(wf_summary, m)] for m in ordered_models(wf_summary)]
        head = ["model", "validation mean", "std", "folds", "all folds (incl. final test) mean", "std", "folds"]
        parts += ["<h2>Walk-forward summary</h2>", _table(head, rows)]
    parts.append("<h2>Plots</h2>")
    parts += [_figure(name, png, alt, caption) for name, (png, alt, caption) in images.items()]
    parts += [
        '<h2 id="leakage-audit">Leakage audit</h2>',
        '<p class="muted">Segments are cut at the same instants for every symbol; rows whose label window '
        "reaches a cutoff are purged, and an embargo drops bars after each cutoff.</p>",
        _kv_table(_audit_rows(manifest)),
        f'<p class="muted">Generated {utc_text()} by '
        "rstack.reporting.report from manifest.json and predictions/.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def summary_table(summary: dict[str, Any]) -> str:
    """Fixed-width model table and the verdict, for the command line."""
    head = f"{'model':<26}{'ROC-AUC':>9}{'PR-AUC':>9}{'Brier':>9}"
    lines = [head, "-" * len(head)]
    for name, m in (summary.get("metrics") or {}).items():
        lines.append(f"{name:<26}{_fmt(m.get('roc_auc')):>9}{_fmt(m.get('pr_auc')):>9}{_fmt(m.get('brier')):>9}")
    if summary.get("f1_threshold") is not None:
        lines.append(f"F1-optimal threshold (chosen on L2-fit rows): {summary['f1_threshold']:.4f}")
    lines.append(f"verdict: {summary.get('verdict', 'n/a')}")
    return "\n".join(lines)


__all__: list[str] = ["column_for", "summary_table", "verdict", "write_report"]

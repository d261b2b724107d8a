"""The report page: one self-contained HTML file (inline CSS, images as data URIs), nothing to fetch."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, NamedTuple

from rstack._io import utc_text
from rstack.models.metrics import finite
from rstack.reporting.names import ordered_models
from rstack.reporting.tables import fmt, metrics_head, metrics_row

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


class Image(NamedTuple):
    """One plot of the report: its PNG bytes, the img alt text and the caption under it."""

    png: bytes
    alt: str
    caption: str


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


def _figure(name: str, image: Image) -> str:
    data = base64.b64encode(image.png).decode("ascii")
    return (
        f'<figure id="fig-{_e(Path(name).stem)}"><img src="data:image/png;base64,{data}" alt="{_e(image.alt)}">'
        f"<figcaption>{_e(image.caption)}</figcaption></figure>"
    )


def _header_rows(manifest: dict[str, Any]) -> list[tuple[str, Any]]:
    cfg = manifest.get("config") or {}
    inputs = manifest.get("input_rows") or {}
    segments = manifest.get("rows_by_segment") or {}
    cutoffs = manifest.get("cutoffs") or {}
    return [
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
            f"{(cutoffs.get('cutoffs_utc') or ['?'] * 3)[-1]} → {cutoffs.get('end_utc', 'n/a')}",
        ),
    ]


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


def _walk_forward_table(manifest: dict[str, Any], wf_summary: dict[str, Any]) -> str:
    # Validation = folds 1..K-1, whose test periods end before the final test segment: the figure to
    # choose by. The all-fold mean includes the final test segment (the last fold is this run).
    walk = manifest.get("walk_forward")
    validation = (walk.get("validation") or {}) if isinstance(walk, dict) else {}

    def cells(summary: dict[str, Any], m: str) -> list[str]:
        s = summary.get(m) or {}
        return [fmt(s.get("roc_auc_mean")), fmt(s.get("roc_auc_std")), str(s.get("folds", "-"))]

    rows = [[m, *cells(validation, m), *cells(wf_summary, m)] for m in ordered_models(wf_summary)]
    head = ["model", "validation mean", "std", "folds", "all folds (incl. final test) mean", "std", "folds"]
    return _table(head, rows)


def render_page(
    manifest: dict[str, Any],
    threshold: float,
    sentence: str,
    beats: bool | None,
    notes: list[str],
    images: dict[str, Image],
    wf_summary: dict[str, Any],
) -> str:
    """The whole report page; ``threshold`` is the one the manifest's confusion counts use."""
    metrics: dict[str, dict[str, Any]] = manifest["metrics"]
    order = ordered_models(metrics)
    table = _table(
        metrics_head(threshold),
        [metrics_row(name, metrics[name]) for name in order],
        row_class=["level2" if m == "level2" else "" for m in order],
    )
    verdict_class = {True: "good", False: "bad", None: "none"}[beats]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rstack report {_e(manifest.get('run_id', ''))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>rstack evaluation report: run {_e(manifest.get('run_id', 'n/a'))}</h1>",
        _kv_table(_header_rows(manifest)),
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
        parts += ["<h2>Walk-forward summary</h2>", _walk_forward_table(manifest, wf_summary)]
    parts.append("<h2>Plots</h2>")
    parts += [_figure(name, image) for name, image in images.items()]
    parts += [
        '<h2 id="leakage-audit">Leakage audit</h2>',
        '<p class="muted">Segments are cut at the same instants for every symbol; rows whose label window '
        "reaches a cutoff are purged, and an embargo drops bars after each cutoff.</p>",
        _kv_table(_audit_rows(manifest)),
        f'<p class="muted">Generated {utc_text()} by rstack.reporting.report from manifest.json and predictions/.</p>',
        "</body></html>",
    ]
    return "\n".join(parts)

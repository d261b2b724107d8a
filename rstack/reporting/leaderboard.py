"""``rstack runs``: the runs in a models folder as a leaderboard, and one run in full.

Runs are never ranked on test, since picking the best run by its test figure makes that figure optimistic.
The ranking figure is Level 2's walk-forward validation mean (folds 1..K-1, whose test periods end before
the final test segment) when the run has one, else Level 1's ROC-AUC on the L2-fit segment. Level 2's
own L2-fit figure is in-sample (it is fitted there), so it is not used. Test ROC-AUC is shown, not ranked on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rstack._io import MANIFEST, load_manifest, utc_text
from rstack.config import Config, result_config
from rstack.models.metrics import finite
from rstack.training.runs import FAILED_PREFIX, LATEST, TMP_PREFIX

LEVELS = ("level2", "level1")


def config_diff(config: dict[str, Any]) -> dict[str, Any]:
    """Result-relevant settings that differ from rstack's defaults, as dotted keys."""
    default, got = result_config(Config()), result_config(config)
    return {
        f"{section}.{key}": value
        for section, values in sorted(got.items())
        for key, value in sorted(values.items())
        if default.get(section, {}).get(key) != value
    }


def rank_figure(manifest: dict[str, Any]) -> tuple[float | None, str | None]:
    """The figure a run is ranked by and its tag: ("val" | "l2fit" | None); never a test figure."""
    walk = manifest.get("walk_forward")
    validation = walk.get("validation") if isinstance(walk, dict) else None
    if isinstance(validation, dict):
        value = finite((validation.get("level2") or {}).get("roc_auc_mean"))
        if value is not None:
            return value, "val"
    l2_fit = manifest.get("metrics_l2_fit")
    if isinstance(l2_fit, dict):
        # Level 1 only: Level 2 is fitted on these rows, so its figure here is in-sample.
        value = finite((l2_fit.get("level1") or {}).get("roc_auc"))
        if value is not None:
            return value, "l2fit"
    return None, None


def _row(run_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    metrics = manifest.get("metrics", {})
    l0 = [m["roc_auc"] for name, m in metrics.items() if name.startswith("batch_") and m.get("roc_auc") is not None]
    baselines = {n: m.get("roc_auc") for n, m in metrics.items() if n.startswith("baseline_") and n != "baseline_prior"}
    rank_by, rank_tag = rank_figure(manifest)
    return {
        "run_id": manifest.get("run_id", run_dir.name),
        "folder": run_dir.name,
        "state": "complete",
        "created_utc": manifest.get("created_utc"),
        "data_sha256": manifest.get("data", {}).get("sha256", "")[:12],
        "data_rows": manifest.get("data", {}).get("total_rows"),
        "config_diff": config_diff(manifest.get("config", {})),
        **{level: metrics.get(level, {}).get("roc_auc") for level in LEVELS},
        "best_level0": max(l0) if l0 else None,
        "best_baseline": max((v for v in baselines.values() if v is not None), default=None),
        "resumed": bool(manifest.get("resumed")),
        "rank_by": rank_by,
        "rank_tag": rank_tag,
    }


def list_runs(models_dir: Path) -> list[dict[str, Any]]:
    """Complete runs by :func:`rank_figure`, best first (runs without one last, newest first), then unfinished."""
    models_dir = Path(models_dir)
    done, unfinished = [], []
    for path in sorted(models_dir.iterdir()) if models_dir.is_dir() else []:
        if path.name == LATEST or path.is_symlink() or not path.is_dir():
            continue
        if path.name.startswith((TMP_PREFIX, FAILED_PREFIX)):
            state = "interrupted" if path.name.startswith(TMP_PREFIX) else "failed"
            created = utc_text(path.stat().st_mtime * 1000)
            run_id = path.name.split("-", 1)[1]
            unfinished.append(
                {"run_id": run_id, "folder": path.name, "state": state, "created_utc": created, "config_diff": {}}
            )
        elif (path / MANIFEST).is_file():
            done.append(_row(path, load_manifest(path)))
    # Two stable sorts: newest first breaks ties and orders the runs that have no ranking figure.
    done.sort(key=lambda r: r["created_utc"] or "", reverse=True)
    done.sort(key=lambda r: (r["rank_by"] is None, -(r["rank_by"] or 0.0)))
    return done + unfinished


def _f(value: float | None) -> str:
    number = finite(value)
    return "-" if number is None else f"{number:.4f}"


def format_runs(rows: list[dict[str, Any]], latest: str | None) -> str:
    head = f"{'run':<28}{'created (UTC)':<22}{'data':<14}{'rank by':<15}{'L2 test':>8}{'L1 test':>8}"
    head += f"{'best L0':>9}{'baseline':>10}  config vs default"
    lines = [head, "-" * len(head)]
    for r in rows:
        mark = "*" if r["folder"] == latest else " "
        if r["state"] != "complete":
            lines.append(f"{mark}{r['run_id']:<27}{r['state']:<22}(rstack train --resume {r['run_id']})")
            continue
        diff = ", ".join(f"{k}={v}" for k, v in r["config_diff"].items()) or "default"
        rank = f"{_f(r.get('rank_by'))} {r.get('rank_tag') or ''}"
        lines.append(
            f"{mark}{r['run_id']:<27}{(r['created_utc'] or '-'):<22}{r['data_sha256']:<14}{rank:<15}"
            f"{_f(r['level2']):>8}{_f(r['level1']):>8}{_f(r['best_level0']):>9}{_f(r['best_baseline']):>10}  {diff}"
        )
    lines.append(
        "rank by (never test): val = L2 walk-forward validation mean ROC-AUC, folds 1..K-1; "
        "l2fit = L1 ROC-AUC on the L2-fit segment; - = neither, listed last"
    )
    lines.append("L2 test, L1 test, best L0, baseline: test ROC-AUC (baseline = best naive baseline); * = latest")
    return "\n".join(lines)

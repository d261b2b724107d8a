"""``rstack runs``: the runs in a models folder as a leaderboard, and one run in full."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rstack.config import Config, result_config
from rstack.runs import FAILED_PREFIX, LATEST, MANIFEST, TMP_PREFIX, load_manifest

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


def _row(run_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    metrics = manifest.get("metrics", {})
    l0 = [m["roc_auc"] for name, m in metrics.items() if name.startswith("batch_") and m.get("roc_auc") is not None]
    baselines = {n: m.get("roc_auc") for n, m in metrics.items() if n.startswith("baseline_") and n != "baseline_prior"}
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
    }


def list_runs(models_dir: Path) -> list[dict[str, Any]]:
    """Complete runs best level-2 ROC-AUC first, then unfinished ones (resumable with --resume)."""
    models_dir = Path(models_dir)
    done, unfinished = [], []
    for path in sorted(models_dir.iterdir()) if models_dir.is_dir() else []:
        if path.name == LATEST or path.is_symlink() or not path.is_dir():
            continue
        if path.name.startswith((TMP_PREFIX, FAILED_PREFIX)):
            state = "interrupted" if path.name.startswith(TMP_PREFIX) else "failed"
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))
            run_id = path.name.split("-", 1)[1]
            unfinished.append(
                {"run_id": run_id, "folder": path.name, "state": state, "created_utc": created, "config_diff": {}}
            )
        elif (path / MANIFEST).is_file():
            done.append(_row(path, load_manifest(path)))
    done.sort(key=lambda r: -(r["level2"] if r["level2"] is not None else -1.0))
    return done + unfinished


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_runs(rows: list[dict[str, Any]], latest: str | None) -> str:
    head = f"{'run':<28}{'created (UTC)':<22}{'data':<14}{'L2':>8}{'L1':>8}{'best L0':>9}{'baseline':>10}"
    head += "  config vs default"
    lines = [head, "-" * len(head)]
    for r in rows:
        mark = "*" if r["folder"] == latest else " "
        if r["state"] != "complete":
            lines.append(f"{mark}{r['run_id']:<27}{r['state']:<22}(rstack train --resume {r['run_id']})")
            continue
        diff = ", ".join(f"{k}={v}" for k, v in r["config_diff"].items()) or "default"
        lines.append(
            f"{mark}{r['run_id']:<27}{(r['created_utc'] or '-'):<22}{r['data_sha256']:<14}{_f(r['level2']):>8}"
            f"{_f(r['level1']):>8}{_f(r['best_level0']):>9}{_f(r['best_baseline']):>10}  {diff}"
        )
    lines.append("test ROC-AUC; baseline = best naive baseline; * = latest")
    return "\n".join(lines)

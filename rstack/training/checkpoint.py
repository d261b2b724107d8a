"""Per-batch Level-0 checkpoints inside a run's work folder, so a resumed run refits nothing finished.

A batch is finished when ``checkpoints/level0/<batch>.json`` exists. It is written last, after the
model folder and the predictions (``<batch>.parquet``, a folder of Parquet parts the executors
wrote), each of which is complete by then; the JSON records the model files' sha256, so a model
changed or cut short later is refitted rather than trusted. Only JSON and Parquet are read back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rstack._io import write_json_atomic
from rstack.models.bundle import model_checksums

CHECKPOINTS = ("checkpoints", "level0")


def _dir(run_work: Path) -> Path:
    return Path(run_work).joinpath(*CHECKPOINTS)


def predictions_path(run_work: Path, name: str) -> Path:
    """Where a batch's Level-0 predictions are written (``fit_level0_batch``'s ``predictions_path``)."""
    folder = _dir(run_work)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.parquet"


def save_batch(run_work: Path, name: str, model_rel: str, meta: dict[str, Any]) -> float:
    """Checkpoint a fitted batch whose model and predictions are written; returns the seconds it took."""
    t0 = time.time()
    folder = _dir(run_work)
    record = {"meta": meta, "model": model_rel, "checksums": model_checksums(Path(run_work), [model_rel])}
    write_json_atomic(folder / f"{name}.json", record, indent=1)
    return time.time() - t0


def load_batch(run_work: Path, name: str) -> tuple[dict[str, Any], str] | None:
    """(meta, predictions' path) of a finished batch, or None if it must be (re)fitted."""
    folder = _dir(run_work)
    record_path = folder / f"{name}.json"
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    actual = model_checksums(Path(run_work), [record["model"]])
    if not record["checksums"] or actual != record["checksums"]:
        return None
    predictions = folder / f"{name}.parquet"
    if not predictions.exists():
        return None
    return record["meta"], str(predictions)


def finished(run_work: Path) -> list[str]:
    return sorted(p.stem for p in _dir(run_work).glob("*.json"))

"""Opening a run: a new folder, or an unfinished one checked to be the same job, with its finished batches."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rstack.config import Config, result_config
from rstack.data.discover import Dataset
from rstack.errors import ConfigError, InputError
from rstack.models.level0 import BatchSpec
from rstack.training.checkpoint import load_batch
from rstack.training.runs import RUN_RECORD, RunDir

log = logging.getLogger("rstack")


def open_run(models_dir: Path, cfg: Config, dataset: Dataset, resume: str | None, run_id: str | None = None) -> RunDir:
    """A new run folder, or the unfinished one named by ``resume`` after checking it is the same job."""
    if resume is None:
        run = RunDir(models_dir, run_id)
        run.write_record({"run_id": run.run_id, "config": cfg.to_dict(), "data": dataset.fingerprint()})
        return run
    run = RunDir(models_dir, resume, resume=True)
    try:
        record = run.record()
        if record is None:
            raise InputError(f"{run.work} has no {RUN_RECORD}, so it cannot be checked for resuming; train anew")
        before, now = result_config(record["config"]), result_config(cfg)
        diff = sorted(
            f"{sec}.{key}: {before.get(sec, {}).get(key)!r} -> {now.get(sec, {}).get(key)!r}"
            for sec in set(before) | set(now)
            for key in set(before.get(sec, {})) | set(now.get(sec, {}))
            if before.get(sec, {}).get(key) != now.get(sec, {}).get(key)
        )
        if diff:
            raise ConfigError(
                f"run {resume} was started with another config ({'; '.join(diff)}); resume it with the same "
                "settings (runtime.* and level0.concurrency may differ) or train anew"
            )
        if not dataset.matches(record["data"]):
            raise InputError(
                f"run {resume} was started on other data ({record['data']['root']}, "
                f"{record['data']['total_rows']} rows); resume it on the same files or train anew"
            )
    except BaseException:
        run.fail()
        raise
    return run


def restored_batches(run: RunDir, batches: list[BatchSpec]) -> dict[int, tuple[dict[str, Any], str]]:
    out = {}
    for batch in batches:
        found = load_batch(run.work, batch.name)
        if found is not None and found[0]["symbols"] == list(batch.symbols):
            out[batch.batch_id] = found
            log.info("level0: %s restored from its checkpoint, not refitted", batch.name)
    return out

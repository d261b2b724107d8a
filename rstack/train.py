"""``rstack train``: the driver that fans Level-0 batches out as Ray tasks and stacks the results.

The ``_host_*`` functions run inside the Spark host actor (see ``runtime.py``); everything else runs
in the Ray driver, which only moves object references and small metadata.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

import rstack
from rstack.bundle import FORMAT_VERSION, Bundle, model_checksums
from rstack.config import Config, Level0Config
from rstack.data import Dataset, discover, make_batches
from rstack.errors import RstackError, TrainingError
from rstack.level0 import BatchSpec, fit_level0_batch
from rstack.prepare import build_training_table
from rstack.runs import RunDir, write_manifest
from rstack.stack import base_rows, fit_levels_1_2

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from rstack.runtime import Runtime

log = logging.getLogger("rstack")

# -- functions shipped to the Spark host -----------------------------------------------------------


def _host_prepare(
    spark: SparkSession, state: dict[str, Any], run_key: str, dataset: Dataset, cfg: Config
) -> dict[str, Any]:
    table, summary = build_training_table(spark, dataset, cfg)
    state[run_key] = table
    return summary


def _host_level0(
    spark: SparkSession,
    state: dict[str, Any],
    run_key: str,
    batch: BatchSpec,
    feature_cols: list[str],
    cfg: Level0Config,
    model_path: str,
) -> tuple[dict[str, Any], pa.Table]:
    return fit_level0_batch(state[run_key], batch, feature_cols, cfg, model_path)


def _host_meta(
    spark: SparkSession,
    state: dict[str, Any],
    run_key: str,
    cfg: Config,
    run_path: str,
    prior: float,
    *l0_tables: pa.Table,
) -> dict[str, Any]:
    base = base_rows(state[run_key])
    result, test = fit_levels_1_2(spark, base, list(l0_tables), cfg, f"{run_path}/level1", f"{run_path}/level2", prior)
    Path(run_path, "predictions").mkdir(exist_ok=True)
    test.to_parquet(Path(run_path, "predictions", "test.parquet"), index=False)
    return result


def _host_release(spark: SparkSession, state: dict[str, Any], run_key: str) -> None:
    table = state.pop(run_key, None)
    if table is not None:
        table.unpersist()


# -- driver ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    manifest: dict[str, Any]


def _versions(java: str | None) -> dict[str, str | None]:
    import numpy
    import pandas
    import pyspark
    import ray
    import raydp

    return {
        "rstack": rstack.__version__,
        "ray": ray.__version__,
        "raydp": getattr(raydp, "__version__", None),
        "pyspark": pyspark.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pa.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "java": java,
    }


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def _drain(refs: list[Any]) -> None:
    """Cancel Level-0 tasks still in flight and wait for them, so none writes into a failed run."""
    import ray

    for ref in refs:
        try:
            ray.cancel(ref)
        except Exception as exc:  # noqa: BLE001 - a running task may not be cancellable; we wait below
            log.debug("could not cancel a Level-0 task: %s", exc)
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=120)


def _run_level0(
    runtime: Runtime, run_key: str, batches: list[BatchSpec], feature_cols: list[str], cfg: Config, run: RunDir
) -> tuple[list[dict[str, Any]], list[Any]]:
    import ray

    queue = list(batches)
    pending: dict[Any, tuple[BatchSpec, Any]] = {}
    metas: dict[int, dict[str, Any]] = {}
    tables: dict[int, Any] = {}
    n = len(batches)
    while queue or pending:
        while queue and len(pending) < cfg.level0.concurrency:
            batch = queue.pop(0)
            meta_ref, table_ref = runtime.call(
                _host_level0,
                run_key,
                batch,
                feature_cols,
                cfg.level0,
                run.path("level0", batch.name),
                name=f"level0-{batch.name}",
                num_returns=2,
                pool=batch.name,
            )
            pending[meta_ref] = (batch, table_ref)
            log.info("level0: %s (%d of %d) started: %s", batch.name, batch.batch_id + 1, n, ", ".join(batch.symbols))
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            batch, table_ref = pending.pop(ref)
            try:
                meta = runtime.get(ref)
            except RstackError:
                _drain(list(pending))
                raise
            except Exception as exc:
                _drain(list(pending))
                raise TrainingError(f"level0 {batch.name} ({', '.join(batch.symbols)}) failed: {exc}") from exc
            metas[batch.batch_id] = meta
            tables[batch.batch_id] = table_ref
            log.info(
                "level0: %s done in %.1fs (fit %.1fs), %d of %d finished",
                batch.name,
                meta["seconds"],
                meta["fit_seconds"],
                len(metas),
                n,
            )
    ordered = sorted(metas)
    return [metas[i] for i in ordered], [tables[i] for i in ordered]


def train(data_dir: Path, models_dir: Path, cfg: Config, runtime: Runtime) -> TrainResult:
    """Train, evaluate and save a 3-level stack; the run appears in ``models_dir`` only when complete."""
    t_start = time.time()
    dataset = discover(Path(data_dir))
    run = RunDir(models_dir)
    handler = logging.FileHandler(run.path("logs", "rstack.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    log.addHandler(handler)
    run_key = run.run_id
    timings: dict[str, float] = {}
    committed = False
    try:
        log.info(
            "run %s: %d files, %d rows from %s",
            run.run_id,
            len(dataset.files),
            sum(f.rows for f in dataset.files),
            dataset.root,
        )
        t = time.time()
        runtime.start()
        timings["startup"] = time.time() - t
        log.info(
            "runtime: Ray + Spark on Ray ready in %.1fs; Spark UI %s; Ray dashboard %s",
            timings["startup"],
            runtime.info.get("ui_url"),
            runtime.info.get("dashboard_url"),
        )
        import ray

        t = time.time()
        log.info("features: computing and persisting the training table")
        summary = runtime.get(runtime.call(_host_prepare, run_key, dataset, cfg, name="prepare-features"))
        timings["features"] = time.time() - t
        for sym, why in summary["excluded_symbols"].items():
            log.warning("features: symbol %s excluded: %s", sym, why)
        log.info(
            "features: %d symbols, rows by segment %s, purged %s (%.1fs)",
            len(summary["symbols"]),
            summary["rows_by_segment"],
            summary["purged_rows"],
            timings["features"],
        )

        batches = [
            BatchSpec(i, tuple(s)) for i, s in enumerate(make_batches(summary["symbols"], cfg.level0.batch_size))
        ]
        t = time.time()
        metas, table_refs = _run_level0(runtime, run_key, batches, summary["feature_columns"], cfg, run)
        timings["level0"] = time.time() - t
        overlap = max_overlap([(m["started"], m["ended"]) for m in metas])
        log.info("level0: %d batches in %.1fs, at most %d running at once", len(batches), timings["level0"], overlap)

        t = time.time()
        log.info("level1+2: fitting on out-of-sample Level-0 predictions")
        prior = summary["positive_rate_by_segment"]["l0_train"]
        # The Arrow tables stay in Ray's object store; the host resolves the refs itself.
        meta_result = runtime.get(
            runtime.call(_host_meta, run_key, cfg, str(run.work), prior, *table_refs, name="level1-level2")
        )
        timings["level1_level2"] = time.time() - t
        timings.update({f"level1_level2.{k}": v for k, v in meta_result["timings"].items()})
        ray.get(runtime.call(_host_release, run_key, name="release"))

        t = time.time()
        manifest = _manifest(run, cfg, dataset, summary, batches, metas, meta_result, runtime, overlap)
        manifest["checksums"] = model_checksums(run.work, Bundle._model_dirs(manifest))
        manifest["timings"] = {**timings, "save": 0.0, "total": time.time() - t_start}
        run.write_manifest(manifest)
        final = run.commit()
        committed = True
        manifest["timings"]["save"] = time.time() - t
        manifest["timings"]["total"] = time.time() - t_start
        # Rewritten after the rename so the recorded save time includes it; the file is complete
        # both times, and "latest" already names this run.
        write_manifest(final, manifest)
        log.info("run %s saved to %s in %.1fs total", run.run_id, final, manifest["timings"]["total"])
        return TrainResult(final, manifest)
    except BaseException as exc:
        if committed:
            raise
        failed = run.fail()
        log.error("run %s failed (%s); logs kept in %s", run.run_id, exc, failed)
        if runtime.host is not None:
            try:
                import ray

                ray.get(runtime.call(_host_release, run_key, name="release"), timeout=60)
            except Exception:  # noqa: BLE001 - best effort while already failing
                pass
        if isinstance(exc, RstackError) or not isinstance(exc, Exception):
            raise
        raise TrainingError(f"training failed: {type(exc).__name__}: {exc}; see {failed}/logs") from exc
    finally:
        log.removeHandler(handler)
        handler.close()


def _java_version() -> str | None:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        return out.stderr.splitlines()[0] if out.stderr else None
    except (OSError, subprocess.SubprocessError):
        return None


def _manifest(
    run: RunDir,
    cfg: Config,
    dataset: Dataset,
    summary: dict[str, Any],
    batches: list[BatchSpec],
    metas: list[dict[str, Any]],
    meta_result: dict[str, Any],
    runtime: Runtime,
    overlap: int,
) -> dict[str, Any]:
    t0 = min(m["started"] for m in metas)
    return {
        "format_version": FORMAT_VERSION,
        "run_id": run.run_id,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": cfg.to_dict(),
        "data": dataset.fingerprint(),
        "versions": _versions(runtime.info.get("java_version") or _java_version()),
        "runtime": {
            k: runtime.info.get(k)
            for k in ("spark_version", "spark_conf", "app_id", "ui_url", "dashboard_url", "ray_session_dir")
        },
        "logs": {"rstack": "logs/rstack.log", "ray_session_dir": runtime.info.get("ray_session_dir")},
        "features": summary["feature_columns"],
        "symbols": summary["symbols"],
        "excluded_symbols": summary["excluded_symbols"],
        "batches": {b.name: list(b.symbols) for b in batches},
        "cutoffs": summary["cutoffs"],
        "purged_rows": summary["purged_rows"],
        "rows_by_segment": summary["rows_by_segment"],
        "positive_rate_by_segment": summary["positive_rate_by_segment"],
        "label_thresholds": summary["label_thresholds"],
        "baseline_medians": summary["baseline_medians"],
        "input_rows": summary["totals"],
        "per_symbol": summary["per_symbol"],
        "level0": [
            {
                **{k: v for k, v in m.items() if k not in ("started", "ended")},
                "train_rows": sum(summary["per_symbol"][s]["segments"]["l0_train"] for s in m["symbols"]),
                "start_offset": m["started"] - t0,
                "end_offset": m["ended"] - t0,
            }
            for m in metas
        ],
        "level0_max_concurrent": overlap,
        "models": {"level0": {b.name: f"level0/{b.name}" for b in batches}, "level1": "level1", "level2": "level2"},
        "predictions": "predictions/test.parquet",
        "metrics": meta_result["metrics"],
    }

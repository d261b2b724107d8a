"""``rstack train``: the driver that fans Level-0 batches out as Ray tasks and stacks the results.

The ``_host_*`` functions run inside the Spark host actor (see ``runtime.py``); everything else runs
in the Ray driver, which only moves object references and small metadata.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

import rstack
from rstack._io import utc_text, write_manifest
from rstack.config import Config, Level0Config, result_config
from rstack.data.discover import Dataset, discover, make_batches
from rstack.errors import ConfigError, InputError, RstackError, TrainingError
from rstack.faults import crash_point
from rstack.features.table import build_training_table
from rstack.features.vol import har_columns
from rstack.models.bundle import FORMAT_VERSION, Bundle, model_checksums
from rstack.models.estimators import gradient_boosted, har_logit, random_forest
from rstack.models.level0 import BatchSpec, fit_level0_batch, probability_of_one
from rstack.models.meta import base_rows, fit_levels_1_2
from rstack.training.checkpoint import load_batch, save_batch
from rstack.training.runs import RUN_RECORD, RunDir, writing_into

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from rstack.cluster.runtime import Runtime

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
    run_work: str,
) -> tuple[dict[str, Any], pa.Table]:
    model_rel = f"level0/{batch.name}"
    with writing_into(Path(run_work)):
        meta, table = fit_level0_batch(state[run_key], batch, feature_cols, cfg, f"{run_work}/{model_rel}")
        meta["checkpoint_seconds"] = save_batch(Path(run_work), batch.name, model_rel, meta, table)
    return meta, table


def _host_baseline(
    spark: SparkSession, state: dict[str, Any], run_key: str, kind: str, feature_cols: list[str], cfg: Config
) -> pa.Table:
    """A single model of all symbols, as the stack's honest competitor; scores test rows only."""
    from pyspark.sql import functions as F

    table = state[run_key]
    if kind == "single_rf":
        model = random_forest(feature_cols, cfg.level0).fit(table.where(F.col("segment") == 0))
    elif kind == "har_logit":
        # The domain's standard: HAR's three log realized volatilities, all history before test.
        model = har_logit(har_columns(cfg.features)).fit(table.where(F.col("segment") <= 2))
    else:
        # Everything before test: as much history as the whole stack sees across its three levels.
        model = gradient_boosted(feature_cols, cfg.level0.seed).fit(table.where(F.col("segment") <= 2))
    scored = probability_of_one(model, table.where(F.col("segment") == 3), f"baseline_{kind}").toPandas()
    return pa.Table.from_pandas(scored, preserve_index=False)


def _host_meta(
    spark: SparkSession,
    state: dict[str, Any],
    run_key: str,
    cfg: Config,
    run_path: str,
    prior: float,
    n_l0: int,
    *tables: pa.Table,
) -> dict[str, Any]:
    crash_point("meta.start")
    base = base_rows(state[run_key], cfg.level1.context)
    l0_tables, baseline_tables = list(tables[:n_l0]), list(tables[n_l0:])
    result, test = fit_levels_1_2(
        spark, base, l0_tables, cfg, f"{run_path}/level1", f"{run_path}/level2", prior, baseline_tables
    )
    Path(run_path, "predictions").mkdir(exist_ok=True)
    test.to_parquet(Path(run_path, "predictions", "test.parquet"), index=False)
    result.pop("l2_fit_predictions").to_parquet(Path(run_path, "predictions", "l2_fit.parquet"), index=False)
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


def _cause(exc: BaseException) -> str:
    """One line naming what went wrong, for "retry i of n after <cause>"."""
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(exc, RayActorError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"the Spark host was lost ({type(exc).__name__}: {first[:200]})"
    inner = getattr(exc, "cause", None) if isinstance(exc, RayTaskError) else exc
    inner = inner or exc
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip() and not ln.startswith("Traceback")]
    # Py4J puts the JVM's exception on the second line ("An error occurred while calling o1.fit. / : org...").
    text = " ".join(lines[:2]) if lines else ""
    return f"{type(inner).__name__}: {text[:300]}"


def host_lost(exc: BaseException) -> bool:
    from ray.exceptions import RayActorError

    return isinstance(exc, RayActorError)


def refs_lost(exc: BaseException) -> bool:
    """True when an object (a Level-0 result) was lost with the node that held it."""
    from ray.exceptions import ObjectLostError, OwnerDiedError

    # A task whose argument was lost may report it as its own failure's cause.
    return any(isinstance(e, ObjectLostError | OwnerDiedError) for e in (exc, getattr(exc, "cause", None)))


def _checkpointed(run: RunDir, batch: BatchSpec) -> pa.Table:
    found = load_batch(run.work, batch.name)
    if found is None:
        raise TrainingError(
            f"level0 {batch.name}'s predictions were lost with a node and it has no checkpoint in {run.work}; "
            "resume the run (`--resume`) to refit it"
        )
    return found[1]


def run_batches(
    batches: list[BatchSpec],
    submit: Callable[[BatchSpec], tuple[Any, Any]],
    concurrency: int,
    max_retries: int,
    recover: Callable[[BaseException], None] | None = None,
    cancel: Callable[[], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[int, dict[str, Any]], dict[int, Any]]:
    """Run every batch through ``submit`` (returns the refs of its metadata and its predictions),
    at most ``concurrency`` at once, each retried up to ``max_retries`` times.

    rstack's own errors (bad input, one-class labels) are not retried: they would fail again. A lost
    Spark host fails every batch in flight; ``recover`` then brings up a new one before they are
    resubmitted. On any exit by exception ``cancel`` stops the Spark jobs still running and the
    tasks in flight are waited out, so none writes into a run that is being closed.
    """
    import ray

    queue = sorted(batches, key=lambda b: b.batch_id)
    pending: dict[Any, tuple[BatchSpec, Any]] = {}
    attempts = {b.batch_id: 0 for b in batches}
    metas: dict[int, dict[str, Any]] = {}
    tables: dict[int, Any] = {}
    n = len(batches)
    try:
        while queue or pending:
            while queue and len(pending) < concurrency:
                batch = queue.pop(0)
                meta_ref, table_ref = submit(batch)
                pending[meta_ref] = (batch, table_ref)
                log.info(
                    "level0: %s (%d of %d) started%s: %s",
                    batch.name,
                    batch.batch_id + 1,
                    n,
                    f", attempt {attempts[batch.batch_id] + 1}" if attempts[batch.batch_id] else "",
                    ", ".join(batch.symbols),
                )
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                if ref not in pending:  # already failed over with a lost host
                    continue
                batch, table_ref = pending.pop(ref)
                try:
                    meta = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - sorted into retryable or not just below
                    failed = [batch]
                    cause_exc: BaseException = getattr(exc, "cause", None) or exc
                    if isinstance(cause_exc, RstackError):
                        raise cause_exc from exc
                    lost = host_lost(exc)
                    if lost:
                        failed += [b for b, _ in pending.values()]
                        pending.clear()
                    cause = _cause(exc)
                    for b in failed:
                        attempts[b.batch_id] += 1
                        if attempts[b.batch_id] > max_retries:
                            raise TrainingError(
                                f"level0 {b.name} ({', '.join(b.symbols)}) failed {attempts[b.batch_id]} times "
                                f"(level0.max_retries = {max_retries}); last cause: {cause}"
                            ) from exc
                        log.warning(
                            "batch %d: retry %d of %d after %s", b.batch_id, attempts[b.batch_id], max_retries, cause
                        )
                    if lost and recover is not None:
                        recover(exc)
                    queue = sorted(queue + failed, key=lambda b: b.batch_id)
                    continue
                meta["attempts"] = attempts[batch.batch_id] + 1
                metas[batch.batch_id] = meta
                tables[batch.batch_id] = table_ref
                if progress is not None:
                    progress(len(metas))
                log.info(
                    "level0: %s done in %.1fs (fit %.1fs, checkpoint %.2fs), %d of %d finished",
                    batch.name,
                    meta["seconds"],
                    meta["fit_seconds"],
                    meta.get("checkpoint_seconds", 0.0),
                    len(metas),
                    n,
                )
    except BaseException:
        if pending:
            if cancel is not None:
                cancel()
            _drain(list(pending))
        raise
    return metas, tables


def _drain(refs: list[Any]) -> None:
    """Wait for Level-0 tasks still in flight (their Spark jobs were cancelled), so none writes on."""
    import ray

    for ref in refs:
        try:
            ray.cancel(ref)
        except Exception as exc:  # noqa: BLE001 - a running task may not be cancellable; we wait below
            log.debug("could not cancel a Level-0 task: %s", exc)
    ray.wait(refs, num_returns=len(refs), timeout=120)


def _progress_gauge(run_id: str, total: int, restored: int) -> Callable[[int], None]:
    """Level-0 batches done / total as Ray metrics, for the dashboard's Metrics view and Prometheus."""
    from ray.util.metrics import Gauge

    done_gauge = Gauge("rstack_level0_batches_done", "Level-0 batches finished", tag_keys=("run",))
    total_gauge = Gauge("rstack_level0_batches_total", "Level-0 batches in the run", tag_keys=("run",))
    tags = {"run": run_id}
    total_gauge.set(total, tags=tags)
    done_gauge.set(restored, tags=tags)

    def update(done: int) -> None:
        done_gauge.set(done, tags=tags)

    return update


def _open_run(models_dir: Path, cfg: Config, dataset: Dataset, resume: str | None, run_id: str | None = None) -> RunDir:
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


def _restore(run: RunDir, batches: list[BatchSpec]) -> dict[int, tuple[dict[str, Any], pa.Table]]:
    out = {}
    for batch in batches:
        found = load_batch(run.work, batch.name)
        if found is not None and found[0]["symbols"] == list(batch.symbols):
            out[batch.batch_id] = found
            log.info("level0: %s restored from its checkpoint, not refitted", batch.name)
    return out


def train(
    data_dir: Path,
    models_dir: Path,
    cfg: Config,
    runtime: Runtime,
    resume: str | None = None,
    run_id: str | None = None,
) -> TrainResult:
    """Train, evaluate and save a 3-level stack; the run appears in ``models_dir`` only when complete.

    ``resume`` names an unfinished run (``_tmp-<id>`` or ``_failed-<id>``) of the same config and
    data: its checkpointed Level-0 batches are reused, the rest is computed as in a fresh run.
    """
    t_start = time.time()
    dataset = discover(Path(data_dir))
    run = _open_run(models_dir, cfg, dataset, resume, run_id)
    handler = logging.FileHandler(run.path("logs", "rstack.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        # The run's own log must hold the progress lines even when the caller configured no logging.
        log.setLevel(logging.INFO)
    run_key = run.run_id
    timings: dict[str, float] = {}
    committed = False
    try:
        log.info(
            "run %s%s: %d files, %d rows from %s",
            run.run_id,
            " (resumed)" if resume else "",
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

        def prepare() -> dict[str, Any]:
            return runtime.get(
                runtime.call(_host_prepare, run_key, dataset, cfg, name="prepare-features", group=run_key)
            )

        t = time.time()
        log.info("features: computing and persisting the training table")
        summary = prepare()
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
        restored = _restore(run, batches)
        feature_cols = summary["feature_columns"]

        def submit(batch: BatchSpec) -> tuple[Any, Any]:
            return runtime.call(
                _host_level0,
                run_key,
                batch,
                feature_cols,
                cfg.level0,
                str(run.work),
                name=f"level0-{batch.name}",
                num_returns=2,
                pool=batch.name,
                group=run_key,
            )

        def recover(exc: BaseException) -> None:
            log.warning("runtime: the Spark host was lost; starting a new one and recomputing the features")
            runtime.restart_host()
            again = prepare()
            # The baselines' jobs died with the old host: start them again on the new one.
            baseline_refs[:] = [submit_baseline(kind) for kind in cfg.eval.baselines]
            if again["cutoffs"] != summary["cutoffs"] or again["symbols"] != summary["symbols"]:
                raise TrainingError("the recomputed training table differs from the first one; train anew")

        # The baselines' Spark jobs run beside Level 0's, in their own FAIR pool.
        def submit_baseline(kind: str) -> Any:
            return runtime.call(
                _host_baseline,
                run_key,
                kind,
                feature_cols,
                cfg,
                name=f"baseline-{kind}",
                pool="baselines",
                group=run_key,
            )

        baseline_refs = [submit_baseline(kind) for kind in cfg.eval.baselines]
        gauge = _progress_gauge(run.run_id, len(batches), len(restored))
        t = time.time()
        metas, table_refs = run_batches(
            [b for b in batches if b.batch_id not in restored],
            submit,
            cfg.level0.concurrency,
            cfg.level0.max_retries,
            recover=recover,
            cancel=lambda: runtime.cancel(run_key),
            progress=lambda done: gauge(done + len(restored)),
        )
        for batch_id, (meta, table) in restored.items():
            metas[batch_id] = {**meta, "restored": True}
            table_refs[batch_id] = ray.put(table)
        timings["level0"] = time.time() - t
        fitted = [m for m in metas.values() if not m.get("restored")]
        overlap = max_overlap([(m["started"], m["ended"]) for m in fitted]) if fitted else 0
        log.info(
            "level0: %d batches in %.1fs (%d fitted, %d restored), at most %d running at once",
            len(batches),
            timings["level0"],
            len(fitted),
            len(restored),
            overlap,
        )
        ordered = sorted(metas)
        metas_list = [{"restored": False, **metas[i]} for i in ordered]
        tables_list = [table_refs[i] for i in ordered]

        t = time.time()
        log.info("level1+2: fitting on out-of-sample Level-0 predictions")
        prior = summary["positive_rate_by_segment"]["l0_train"]
        attempt = 0
        while True:
            try:
                executors = runtime.executors()
                # The Arrow tables stay in Ray's object store; the host resolves the refs itself.
                meta_result = runtime.get(
                    runtime.call(
                        _host_meta,
                        run_key,
                        cfg,
                        str(run.work),
                        prior,
                        len(tables_list),
                        *tables_list,
                        *baseline_refs,
                        name="level1-level2",
                        group=run_key,
                    )
                )
                break
            except Exception as exc:
                lost_refs = refs_lost(exc)
                if not (host_lost(exc) or lost_refs) or attempt >= cfg.level0.max_retries:
                    raise
                attempt += 1
                log.warning("level1+2: retry %d of %d after %s", attempt, cfg.level0.max_retries, _cause(exc))
                if host_lost(exc):
                    # The cached training table died with the host: a new host, the table rebuilt,
                    # the baselines started again; Level 0 is not refitted.
                    recover(exc)
                else:
                    # Lost with a node: the Level-0 predictions are read back from their checkpoints,
                    # the baselines (whose results may have been there too) computed again.
                    tables_list = [ray.put(_checkpointed(run, batches[i])) for i in ordered]
                    baseline_refs[:] = [submit_baseline(kind) for kind in cfg.eval.baselines]
        timings["level1_level2"] = time.time() - t
        timings.update({f"level1_level2.{k}": v for k, v in meta_result["timings"].items()})
        ray.get(runtime.call(_host_release, run_key, name="release"))

        t = time.time()
        manifest = _manifest(run, cfg, dataset, summary, batches, metas_list, meta_result, runtime, overlap)
        manifest["resumed"] = resume is not None
        manifest["runtime"]["executors"] = executors
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
        if runtime.host is not None:
            runtime.cancel(run_key)
        failed = run.fail()
        how = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed ({exc})"
        log.error(
            "run %s %s; logs and finished Level-0 batches kept in %s; continue it with "
            "`rstack train %s --models %s --resume %s`",
            run.run_id,
            how,
            failed,
            dataset.root,
            run.models_dir,
            run.run_id,
        )
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
        "created_utc": utc_text(),
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
        # Set for walk-forward folds: no candle at or after this instant was read.
        "until_ms": summary.get("until_ms"),
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
                # With level0.refit the saved (serving) model was fitted on L0-train..L2-fit.
                "train_rows": sum(
                    summary["per_symbol"][s]["segments"][seg]
                    for s in m["symbols"]
                    for seg in (("l0_train", "l1_fit", "l2_fit") if cfg.level0.refit else ("l0_train",))
                ),
                "refit": cfg.level0.refit,
                "start_offset": m["started"] - t0,
                "end_offset": m["ended"] - t0,
            }
            for m in metas
        ],
        "level0_max_concurrent": overlap,
        "models": {"level0": {b.name: f"level0/{b.name}" for b in batches}, "level1": "level1", "level2": "level2"},
        "predictions": "predictions/test.parquet",
        "predictions_l2_fit": "predictions/l2_fit.parquet",
        "level1": meta_result["level1"],
        "level2": meta_result["level2"],
        "metrics": meta_result["metrics"],
        "metrics_l2_fit": meta_result["metrics_l2_fit"],
    }

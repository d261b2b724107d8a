"""``rstack train``: the driver that fans Level-0 batches out as Ray tasks and stacks the results.

The Spark work runs inside the Spark host actor (``training/host.py``); the driver only moves
object references and small metadata, schedules Level 0 (``training/scheduler.py``) and writes the
run folder, which appears under its final name only when complete.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack._io import write_manifest
from rstack.config import Config
from rstack.data.discover import Dataset, discover, make_batches
from rstack.errors import RstackError, TrainingError
from rstack.features.windows import check_context
from rstack.models.bundle import Bundle, model_checksums
from rstack.models.level0 import BatchSpec
from rstack.training.host import host_baseline, host_level0, host_meta, host_prepare, host_release
from rstack.training.manifest import build_manifest
from rstack.training.resume import open_run, restored_batches
from rstack.training.runs import RunDir
from rstack.training.scheduler import cause_of, host_lost, max_overlap, progress_gauge, refs_lost, run_batches

if TYPE_CHECKING:
    from rstack.cluster.runtime import Runtime

log = logging.getLogger("rstack")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    manifest: dict[str, Any]


@contextlib.contextmanager
def _run_log(run: RunDir) -> Iterator[None]:
    """The run's own ``logs/rstack.log``, holding the progress lines even when the caller configured no logging."""
    handler = logging.FileHandler(run.path("logs", "rstack.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


class _Job:
    """One training run's calls into the Spark host, and what it must redo when the host is lost."""

    def __init__(self, runtime: Runtime, run: RunDir, cfg: Config, dataset: Dataset) -> None:
        self.runtime, self.run, self.cfg, self.dataset = runtime, run, cfg, dataset
        self.key = run.run_id
        self.summary: dict[str, Any] = {}
        self.baseline_refs: list[Any] = []
        self.executors: list[dict[str, Any]] = []
        self.committed = False  # once the run folder has its final name, a later error must not fail it

    def _call(self, fn: Any, *args: Any, name: str, pool: str, num_returns: int = 1) -> Any:
        """``fn(spark, state, run key, *args)`` on the host, in the FAIR pool ``<run key>/<pool>``: every
        pool is named after the run, so two runs on one host (``rstack tune``'s trials) never share one."""
        pool = f"{self.key}/{pool}"
        return self.runtime.call(fn, self.key, *args, name=name, num_returns=num_returns, pool=pool, group=self.key)

    def prepare(self) -> dict[str, Any]:
        return self.runtime.get(
            self._call(host_prepare, self.dataset, self.cfg, name="prepare-features", pool="prepare")
        )

    def submit(self, batch: BatchSpec) -> tuple[Any, Any]:
        columns, work = self.summary["feature_columns"], str(self.run.work)
        return self._call(
            host_level0,
            batch,
            columns,
            self.cfg.level0,
            work,
            name=f"level0-{batch.name}",
            pool=batch.name,
            num_returns=2,
        )

    def start_baselines(self) -> None:
        """The baselines' Spark jobs run beside Level 0's, in their own FAIR pool."""
        self.baseline_refs = [
            self._call(
                host_baseline,
                kind,
                self.summary["feature_columns"],
                self.cfg,
                str(self.run.work),
                name=f"baseline-{kind}",
                pool="baselines",
            )
            for kind in self.cfg.eval.baselines
        ]

    def recover(self, exc: BaseException) -> None:
        log.warning("runtime: the Spark host was lost; starting a new one and recomputing the features")
        self.runtime.restart_host()
        again = self.prepare()
        # The baselines' jobs died with the old host: start them again on the new one.
        self.start_baselines()
        if again["cutoffs"] != self.summary["cutoffs"] or again["symbols"] != self.summary["symbols"]:
            raise TrainingError("the recomputed training table differs from the first one; train anew")

    def fit_meta(self, l0: list[str]) -> dict[str, Any]:
        """Levels 1 and 2 on the host, retried when the host or a node holding task results is lost.

        ``l0`` names each batch's predictions: its checkpoint's folder of Parquet parts, which the
        executors wrote and Spark reads where it joins them; no process gathers the rows, and a lost
        node loses none of them (they are files in the run's folder, not objects in a node's store)."""
        prior = self.summary["positive_rate_by_segment"]["l0_train"]
        retries = self.cfg.level0.max_retries
        attempt = 0
        while True:
            try:
                # Which executors ran Level 0's tasks: read before Levels 1-2 add theirs.
                self.executors = self.runtime.executors()
                baselines = self.runtime.get(self.baseline_refs)  # their Parquet folders' paths
                work = str(self.run.work)
                ref = self._call(host_meta, self.cfg, work, prior, l0, baselines, name="level1-level2", pool="meta")
                return self.runtime.get(ref)
            except Exception as exc:
                if not (host_lost(exc) or refs_lost(exc)) or attempt >= retries:
                    raise
                attempt += 1
                log.warning("level1+2: retry %d of %d after %s", attempt, retries, cause_of(exc))
                if host_lost(exc):
                    # The cached training table died with the host: a new host, the table rebuilt,
                    # the baselines started again; Level 0 is not refitted.
                    self.recover(exc)
                else:
                    # Lost with a node: the baselines' task results (their paths) may have been there.
                    self.start_baselines()

    def release(self, timeout: float | None = None) -> None:
        import ray

        ray.get(self.runtime.call(host_release, self.key, name="release"), timeout=timeout)


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
    check_context(cfg)
    dataset = discover(Path(data_dir))
    run = open_run(models_dir, cfg, dataset, resume, run_id)
    with _run_log(run):
        job = _Job(runtime, run, cfg, dataset)
        try:
            log.info(
                "run %s%s: %d files, %d rows from %s",
                run.run_id,
                " (resumed)" if resume else "",
                len(dataset.files),
                sum(f.rows for f in dataset.files),
                dataset.root,
            )
            return _train(job, t_start, resume is not None)
        except BaseException as exc:
            if job.committed:
                raise
            wrapped = _failed(job, exc)
            if wrapped is exc:
                raise
            raise wrapped from exc


def _train(job: _Job, t_start: float, resumed: bool) -> TrainResult:
    import ray

    runtime, run, cfg = job.runtime, job.run, job.cfg
    timings: dict[str, float] = {}
    t = time.time()
    runtime.start()
    timings["startup"] = time.time() - t
    log.info(
        "runtime: Ray + Spark on Ray ready in %.1fs; Spark UI %s; Ray dashboard %s",
        timings["startup"],
        runtime.info.get("ui_url"),
        runtime.info.get("dashboard_url"),
    )

    t = time.time()
    log.info("features: computing and persisting the training table")
    summary = job.summary = job.prepare()
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

    batches = [BatchSpec(i, tuple(s)) for i, s in enumerate(make_batches(summary["symbols"], cfg.level0.batch_size))]
    restored = restored_batches(run, batches)
    job.start_baselines()
    gauge = progress_gauge(run.run_id, len(batches), len(restored))
    t = time.time()
    metas, path_refs = run_batches(
        [b for b in batches if b.batch_id not in restored],
        job.submit,
        cfg.level0.concurrency,
        cfg.level0.max_retries,
        recover=job.recover,
        cancel=lambda: runtime.cancel(job.key),
        progress=lambda done: gauge(done + len(restored)),
    )
    paths = {batch_id: ray.get(ref) for batch_id, ref in path_refs.items()}
    for batch_id, (meta, path) in restored.items():
        metas[batch_id] = {**meta, "restored": True}
        paths[batch_id] = path
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

    t = time.time()
    log.info("level1+2: fitting on out-of-sample Level-0 predictions")
    meta_result = job.fit_meta([paths[i] for i in ordered])
    timings["level1_level2"] = time.time() - t
    timings.update({f"level1_level2.{k}": v for k, v in meta_result["timings"].items()})
    job.release()

    t = time.time()
    manifest = build_manifest(run, cfg, job.dataset, summary, batches, metas_list, meta_result, runtime, overlap)
    manifest["resumed"] = resumed
    manifest["runtime"]["executors"] = job.executors
    manifest["checksums"] = model_checksums(run.work, Bundle.model_dirs(manifest))
    manifest["timings"] = {**timings, "save": 0.0, "total": time.time() - t_start}
    run.write_manifest(manifest)
    final = run.commit()
    job.committed = True
    manifest["timings"]["save"] = time.time() - t
    manifest["timings"]["total"] = time.time() - t_start
    # Rewritten after the rename so the recorded save time includes it; the file is complete
    # both times, and "latest" already names this run.
    write_manifest(final, manifest)
    log.info("run %s saved to %s in %.1fs total", run.run_id, final, manifest["timings"]["total"])
    return TrainResult(final, manifest)


def _failed(job: _Job, exc: BaseException) -> BaseException:
    """Close a run that did not finish: its Spark jobs cancelled, its folder kept as ``_failed-<id>``.

    Returns the exception to raise: rstack's own and interrupts as they are, anything else wrapped
    in a TrainingError that says where the logs are.
    """
    runtime, run = job.runtime, job.run
    if runtime.host is not None:
        runtime.cancel(job.key)
    failed = run.fail()
    how = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed ({exc})"
    log.error(
        "run %s %s; logs and finished Level-0 batches kept in %s; continue it with "
        "`rstack train %s --models %s --resume %s`",
        run.run_id,
        how,
        failed,
        job.dataset.root,
        run.models_dir,
        run.run_id,
    )
    if runtime.host is not None:
        try:
            job.release(timeout=60)
        except Exception:  # noqa: BLE001 - best effort while already failing
            pass
    if isinstance(exc, RstackError) or not isinstance(exc, Exception):
        return exc
    return TrainingError(f"training failed: {type(exc).__name__}: {exc}; see {failed}/logs")
